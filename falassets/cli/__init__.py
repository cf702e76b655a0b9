"""The `falassets` command: one module per subcommand; ``dispatch`` parses and routes.

The console script ``falassets = falassets.cli:console_main`` and ``python -m falassets.cli``
both land on :func:`falassets.cli.dispatch.console_main`, which calls ``main`` and exits.
"""

from falassets.cli.dispatch import console_main, main

__all__ = ["console_main", "main"]
