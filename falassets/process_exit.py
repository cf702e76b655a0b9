"""Ending a process without Python's teardown of every module it loaded.

Why: after a pass, a process that imported Dagster, SQLAlchemy, gRPC and DuckDB spends 0.7 s
(measured, `falassets run` after its summary line) to seconds on a loaded host (run processes)
tearing those modules down, and whoever waits for it waits that long. It is safe only where
everything the process made is already written before it ends: Dagster's storage, and the
journals, which are written and fsynced as they happen. So it is opt-in, per process.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
from collections.abc import Callable


def end_without_teardown(exit_code: Callable[[], int] = lambda: 0) -> None:
    """Once every ``atexit`` handler registered after this call has run (they run last in,
    first out), flush logging and the standard streams and end with ``exit_code()``. Call it
    early: handlers registered before it are skipped."""
    atexit.register(_end_now, exit_code)


def _end_now(exit_code: Callable[[], int]) -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or its reader went away
            stream.flush()
    os._exit(exit_code())
