"""``python -m falassets.cli``: the same as ``falassets`` (subprocesses start it this way)."""

import sys

from falassets.cli.dispatch import main

raise SystemExit(main(sys.argv[1:]))
