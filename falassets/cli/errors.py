"""The one error type the `falassets` command turns into a one-line message and exit 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or configuration: printed as one line (no traceback), exit status 2,
    and raised before anything was rendered or changed on disk."""

    exit_code = 2
