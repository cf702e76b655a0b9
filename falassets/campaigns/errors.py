"""Campaign errors: every problem names file, row, column and the fix."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from falassets.campaigns.limits import MAX_LISTED_PROBLEMS

# --------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a campaign file, where it is, and how to fix it."""

    problem: str
    fix: str
    row: int | None = None
    column: str | None = None

    def where(self) -> str:
        text = f"row {self.row}" if self.row is not None else ""
        if self.column:
            text += (", " if text else "") + f"column '{_printable(self.column)}'"
        return text

    def describe(self) -> str:
        where = self.where()
        return f"{where + ': ' if where else ''}{self.problem}. Fix: {self.fix}"


class CampaignError(ValueError):
    """A bad campaign file. ``str()`` names the file, the row (1-based, as a spreadsheet shows
    it, header = row 1 for CSV; line number for JSONL; record number for Parquet), the column
    when known, what is wrong and the fix.

    Its first line is the headline (the first problem); when the file has more problems they
    follow, one per line, up to :data:`MAX_LISTED_PROBLEMS`. ``problems`` holds all of them.
    """

    def __init__(
        self,
        file: Path,
        problem: str,
        fix: str,
        *,
        row: int | None = None,
        column: str | None = None,
        more: Iterable[Problem] = (),
        note: str = "",
    ) -> None:
        self.file, self.problem, self.fix, self.row, self.column = file, problem, fix, row, column
        first = Problem(problem, fix, row, column)
        self.problems: tuple[Problem, ...] = (first, *more)
        where = ", ".join(part for part in (_printable(str(file)), first.where()) if part)
        lines = [f"{where}: {problem}. Fix: {fix}" + (f" ({note})" if note else "")]
        others = self.problems[1:]
        if others:
            lines[0] += f" ({len(others)} more problem{'s' * (len(others) > 1)} below)"
            lines += [f"  {p.describe()}" for p in others[: MAX_LISTED_PROBLEMS - 1]]
            hidden = len(others) - (MAX_LISTED_PROBLEMS - 1)
            if hidden > 0:
                lines.append(f"  ... and {hidden} more; fix these and load the file again")
        super().__init__("\n".join(lines))

    @classmethod
    def from_problems(cls, file: Path, problems: list[Problem], note: str = "") -> CampaignError:
        first, *rest = problems
        return cls(
            file, first.problem, first.fix, row=first.row, column=first.column, more=rest, note=note
        )


class _Stop(Exception):
    """A problem after which the rest of the file cannot be read meaningfully."""

    def __init__(self, problem: str, fix: str, column: str | None = None) -> None:
        super().__init__(problem)
        self.problem, self.fix, self.column = problem, fix, column


class _Bad(Exception):
    """One field's problem; caught by the row validator and collected."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem, self.fix = problem, fix


#: Characters a message must never print raw: controls (JSON already escapes C0), lone
#: surrogates (not encodable, so printing them crashes), line separators, and the invisible or
#: direction-changing ones that would make a quoted value look like something else.
_UNPRINTABLE_RE = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]"
)
_HIDDEN = "(not shown)"
#: False while loading a file reached through a link to outside the data directory: its
#: content is then never quoted in a message (see :func:`_link_outside_data`).
_QUOTING: ContextVar[bool] = ContextVar("falassets_campaign_quoting", default=True)


def _printable(text: str) -> str:
    """``text`` with every character of :data:`_UNPRINTABLE_RE` written as ``\\uXXXX``."""
    return _UNPRINTABLE_RE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def _show(value: Any, limit: int = 40) -> str:
    """A user's value quoted for a one-line message: escaped, shortened, always encodable;
    ``(not shown)`` while the file's content must not be quoted."""
    if not _QUOTING.get():
        return _HIDDEN
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return _printable(json.dumps(text, ensure_ascii=False))


def _detail(exc: BaseException, limit: int = 100) -> str:
    """A parser's own message for ``" (...)"``; empty when content must not be quoted."""
    return f" ({_printable(str(exc)[:limit])})" if _QUOTING.get() else ""
