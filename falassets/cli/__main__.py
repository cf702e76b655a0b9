"""``python -m falassets.cli``: the same as ``falassets`` (subprocesses start it this way)."""

from falassets.cli.dispatch import console_main

console_main()
