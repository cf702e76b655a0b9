"""Neutralise spreadsheet formula injection in every CSV falassets writes.

Prompts, tags and error messages come from users and from fal; a cell such as
``=HYPERLINK("http://evil", "click")`` in an export becomes a live formula when someone opens
the file in Excel, LibreOffice or Google Sheets. OWASP's remedy: prefix any cell that starts
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return with an apostrophe, which every
spreadsheet treats as "this is text" and hides. Campaign *input* is not touched: a prompt that
starts with ``=`` is legitimate text for the model. Use these helpers only when writing CSV.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any

#: First characters that make a spreadsheet evaluate a cell (OWASP "CSV injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """``value`` as a CSV cell no spreadsheet will evaluate.

    Numbers and booleans pass through unchanged (a negative number is data, not a formula and
    must stay numeric); ``None`` becomes an empty cell; everything else is text and gets a
    leading apostrophe when it starts with a formula trigger.
    """
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


def safe_row(values: Iterable[Any]) -> list[Any]:
    """Every cell of one row through :func:`safe_cell`."""
    return [safe_cell(value) for value in values]


class SafeCsvWriter:
    """A ``csv.writer`` whose every cell goes through :func:`safe_cell` (header included)."""

    def __init__(self, handle: Any, **fmtparams: Any) -> None:
        self._writer = csv.writer(handle, **fmtparams)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow(safe_row(row))

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


class SafeDictWriter:
    """``csv.DictWriter``'s interface with every value and header name through :func:`safe_cell`.

    Unknown keys in a row raise ``ValueError`` (as ``DictWriter`` does by default) rather than
    being dropped silently; missing keys become ``restval``.
    """

    def __init__(
        self, handle: Any, fieldnames: Iterable[str], restval: Any = "", **fmtparams: Any
    ) -> None:
        self.fieldnames = list(fieldnames)
        self.restval = restval
        self._writer = csv.writer(handle, **fmtparams)

    def writeheader(self) -> Any:
        return self._writer.writerow(safe_row(self.fieldnames))

    def writerow(self, rowdict: dict[str, Any]) -> Any:
        unknown = rowdict.keys() - set(self.fieldnames)
        if unknown:
            raise ValueError(f"row has fields not in fieldnames: {sorted(unknown)!r}")
        return self._writer.writerow(
            safe_row(rowdict.get(name, self.restval) for name in self.fieldnames)
        )

    def writerows(self, rowdicts: Iterable[dict[str, Any]]) -> None:
        for rowdict in rowdicts:
            self.writerow(rowdict)
