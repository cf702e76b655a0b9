"""What every string read from a campaign file may hold (no control or invisible characters)."""

from __future__ import annotations

import re
from collections.abc import Callable

from falassets.campaigns.errors import _UNPRINTABLE_RE, Problem, _Bad, _show

# --------------------------------------------------------------------------------------------
# Text: what every string read from a campaign file may hold

#: Refused in every value: lone surrogates (JSON can escape one, ``"\\ud800"``, but no UTF-8
#: file, Parquet table, lineage line or Dagster event can store it) and control characters
#: other than tab and line breaks (invisible; ESC rewrites a terminal; C1 ones are mojibake).
_BAD_VALUE_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
#: Refused in column and field names: what a message cannot print as is, i.e. on top of the
#: above tabs, line breaks and invisible characters (``\ufeffid`` looks like ``id``).
_BAD_NAME_RE = _UNPRINTABLE_RE
_CHAR_NAMES = {
    "\x00": "a NUL character",
    "\t": "a tab",
    "\n": "a line break",
    "\r": "a carriage return",
    "\x1b": "an escape character (ESC)",
    "\ufeff": "a byte order mark (U+FEFF)",
    "\u200b": "a zero-width space (U+200B)",
}


def _char_problem(char: str, *, name: bool) -> tuple[str, str]:
    """(what ``char`` is, how to get rid of it) for a character refused by the rules above."""
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        return (
            f"a lone surrogate \\u{code:04x} (half of a character such as an emoji, cut in two; "
            "UTF-8 cannot store it)",
            "remove it, or write the whole pair (\\ud83d\\ude00 is 😀); the tool that wrote "
            "the file cut a character in two",
        )
    what = _CHAR_NAMES.get(char) or f"the control character U+{code:04X}"
    if char == "\x00":
        return what, "remove it; NUL characters usually mean the file was UTF-16 or binary"
    if 0x80 <= code <= 0x9F:
        return (
            f"{what} (usually a Windows-1252 quote or dash read as Latin-1)",
            "re-export the file as UTF-8 from its original source",
        )
    if char == "\ufeff":
        return what, "remove it; it is left over where files saved with a BOM were joined"
    if name:
        return what, "remove it; names are one line of visible text"
    return what, "remove it; control characters are invisible and can rewrite a terminal"


def _check_text(text: str, subject: Callable[[], str], *, name: bool = False) -> None:
    """Raise _Bad when ``text`` holds a character :data:`_BAD_VALUE_RE` (or, for a ``name``,
    :data:`_BAD_NAME_RE`) refuses; ``subject()`` is what the message calls it (built only
    then: this runs on every cell of files with 100,000 rows)."""
    found = (_BAD_NAME_RE if name else _BAD_VALUE_RE).search(text)
    if found:
        what, fix = _char_problem(found[0], name=name)
        raise _Bad(f"{subject()} contains {what} at character {found.start() + 1}", fix)


def _name_text_problem(name: str, noun: str, row: int | None = None) -> Problem | None:
    """A problem when a column or field name holds a character names may not hold."""
    if not _BAD_NAME_RE.search(name):  # the common case, for every key of every JSONL row
        return None
    try:
        _check_text(name, lambda: f"the {noun} name {_show(name)}", name=True)
    except _Bad as bad:
        return Problem(bad.problem, bad.fix, row=row)
    return None
