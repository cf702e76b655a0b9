"""The `falassets` command: one module per subcommand; ``dispatch`` parses and routes.

The console script ``falassets = falassets.cli:main`` and ``python -m falassets.cli`` both
land on :func:`falassets.cli.dispatch.main`.
"""

from falassets.cli.dispatch import main

__all__ = ["main"]
