"""``python -m falassets.review``: the same as ``falassets review``."""

import sys

from falassets.review.app import main

raise SystemExit(main(sys.argv[1:]))
