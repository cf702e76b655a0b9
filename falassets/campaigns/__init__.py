"""Read and validate campaign files; make prompt ids and partition keys.

A campaign file (CSV, JSONL or Parquet) becomes a :class:`Campaign`: a name from the file stem
and one :class:`PromptRow` per prompt, each already checked against GPT Image 2's limits
(``fal/model.py``), so nothing that fal would refuse is ever submitted or billed. Bad input is
reported as one :class:`CampaignError` listing every problem found (file, row, column, fix), so
a user repairs a file in one pass. Loading only reads: it never writes, renames or deletes.

Ids are validated, never rewritten: silently slugging ``a b`` to ``a_b`` could merge two prompts
into one partition. Keys are ``<campaign>-<prompt_id>``, made of ``[a-z0-9_-]`` and at most 255
characters, because Dagster does not validate dynamic partition keys and commas, spaces, ``/``
and very long keys break its UI, backfills and file paths.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import math
import os
import re
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from falassets import settings
from falassets.engine import model
from falassets.engine.model import canonical_json

MAX_PROMPT_CHARS = model.MAX_PROMPT_CHARS  # GPT Image's prompt limit
MAX_ID_CHARS = 64
MAX_KEY_CHARS = 255  # longer keys break Dagster's file paths
MAX_NAME_CHARS = MAX_KEY_CHARS - 1 - MAX_ID_CHARS  # so every key of a valid campaign fits
MAX_ROWS = 100_000  # Dagster's documented practical ceiling of partitions per asset
MAX_LINE_BYTES = 4 * 1024 * 1024  # far above any valid row; stops a runaway line early
MAX_LISTED_PROBLEMS = 20
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}  # by lowercased suffix
CAMPAIGN_SUFFIXES = tuple(FORMATS)
TABLE_VERSION = "1"

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_]*")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
KEY_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_SIZE_RE = re.compile(r"([0-9]{1,6}) *[x×] *([0-9]{1,6})")
_BOM = b"\xef\xbb\xbf"
_KNOWN = ("id", "prompt", "image_size", "output_format")
_REQUIRED = ("id", "prompt")
_ALIASES = {  # common names people give the required columns, for the "rename it" fix
    "id": ("prompt_id", "key", "name", "slug", "ids", "identifier"),
    "prompt": ("prompts", "text", "description", "caption", "prompt_text"),
}
_SIZE_CHOICES = ", ".join(["auto", *model.PRESET_SIZES, "WIDTHxHEIGHT (e.g. 1536x1024)"])
_ID_RULE = (
    f"use only letters, digits, '_' and '-', start with a letter or digit, "
    f"at most {MAX_ID_CHARS} characters"
)


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


# --------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class PromptRow:
    prompt_id: (
        str  # lowercase, [a-z0-9][a-z0-9_-]*, as the user wrote it (validated, not rewritten)
    )
    prompt: str
    image_size: str | dict[str, int]  # a fal preset name, or {"width": W, "height": H}
    output_format: str  # png | jpeg | webp
    tags: dict[str, str] = field(default_factory=dict)
    row_number: int = 0


@dataclass(frozen=True)
class Campaign:
    name: str  # from the file stem: [a-z0-9][a-z0-9_]*, no '-', so keys split unambiguously
    source: Path
    rows: tuple[PromptRow, ...]

    def partition_keys(self) -> list[str]:
        return [partition_key(self.name, row.prompt_id) for row in self.rows]

    def row(self, prompt_id: str) -> PromptRow:
        """The row with ``prompt_id`` (KeyError when the campaign has none)."""
        for row in self.rows:
            if row.prompt_id == prompt_id:
                return row
        raise KeyError(f"campaign {self.name!r} has no prompt {prompt_id!r}")


# --------------------------------------------------------------------------------------------
# Names and keys


def suggest_name(text: str, max_chars: int, *, allow_dash: bool = False) -> str:
    """The nearest string to ``text`` made of ``[a-z0-9_]`` (and '-'), starting alphanumeric.

    Accents are folded (``café`` → ``cafe``), other runs of forbidden characters become one
    ``_``. Empty when nothing usable is left.
    """
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    allowed = "a-z0-9_-" if allow_dash else "a-z0-9_"
    slug = re.sub(f"[^{allowed}]+", "_", folded.lower())
    slug = re.sub(r"^[_-]+", "", slug)[:max_chars]
    return slug.rstrip("_-")


def campaign_name(path: Path) -> str:
    """The campaign name for a file, or CampaignError if its stem cannot become one."""
    path = Path(path)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    name = stem.lower()
    if NAME_RE.fullmatch(name) and len(name) <= MAX_NAME_CHARS:
        return name
    raise CampaignError(path, *_name_problem(path, stem))


def _name_problem(path: Path, stem: str) -> tuple[str, str]:
    name = stem.lower()
    if len(name) > MAX_NAME_CHARS:
        problem = (
            f"the file name {_show(stem)} is {len(name)} characters long; a campaign name "
            f"(the file name without extension) may have at most {MAX_NAME_CHARS}"
        )
    else:
        problem = (
            f"the file name {_show(stem)} cannot be a campaign name: campaign names use only "
            "a-z, 0-9 and '_' and start with a letter or digit ('-' is reserved to separate "
            "campaign and prompt id in partition keys)"
        )
    suggestion = suggest_name(stem, MAX_NAME_CHARS) or "campaign_1"
    return problem, f"rename it {suggestion}{path.suffix.lower()}"


def _check_key_parts(campaign: str, prompt_id: str) -> None:
    if not (NAME_RE.fullmatch(campaign) and len(campaign) <= MAX_NAME_CHARS):
        raise ValueError(f"not a campaign name: {campaign!r}")
    if not KEY_ID_RE.fullmatch(prompt_id):
        raise ValueError(f"not a normalised prompt id: {prompt_id!r}")


def partition_key(campaign: str, prompt_id: str) -> str:
    """``<campaign>-<prompt_id>``; campaign names hold no '-', so the first '-' splits it.

    Both parts must already be valid (a campaign name and a lowercased prompt id): a
    ValueError here is a bug in the caller, never something to paper over with a slug.
    """
    _check_key_parts(campaign, prompt_id)
    return f"{campaign}-{prompt_id}"


def split_partition_key(key: str) -> tuple[str, str]:
    """``(campaign, prompt_id)`` of a key made by :func:`partition_key`; ValueError otherwise."""
    campaign, dash, prompt_id = key.partition("-")
    if not dash:
        raise ValueError(f"not a partition key (no '-'): {key!r}")
    _check_key_parts(campaign, prompt_id)
    return campaign, prompt_id


def is_partition_key(key: str) -> bool:
    try:
        split_partition_key(key)
    except ValueError:
        return False
    return True


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


# --------------------------------------------------------------------------------------------
# Field validation


def _id_problem(raw: str) -> str:
    """Why a non-empty, trimmed id does not match ``ID_RE``."""
    if len(raw) > MAX_ID_CHARS:
        return f"the id {_show(raw)} is {len(raw)} characters long; ids may have at most 64"
    if raw[0] in "_-":
        return f"the id {_show(raw)} starts with {raw[0]!r}; ids start with a letter or digit"
    if not _QUOTING.get():
        return "the id contains characters other than letters, digits, '_' and '-'"
    bad = []
    for char in raw:
        if not (char.isascii() and (char.isalnum() or char in "_-")) and char not in bad:
            bad.append(char)
    shown = ", ".join(_show(c) for c in bad[:5]) + (" and others" if len(bad) > 5 else "")
    path_like = "/" in raw or "\\" in raw or ".." in raw
    note = " (ids become file paths, so '/' and '..' are never allowed)" if path_like else ""
    return f"the id {_show(raw)} contains {shown}{note}"


def _parse_id(value: Any) -> str:
    """The lowercased id, or _Bad. Ids are validated, never rewritten."""
    if value is None:
        raise _Bad("the id is empty", "give every row a unique id such as 'hero_1'")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _Bad(
            f"the id {_show(value)} is a {type(value).__name__}, not text",
            'write the id as a string such as "hero_1"',
        )
    raw = value.strip()
    if not raw:
        raise _Bad("the id is empty", "give every row a unique id such as 'hero_1'")
    if not ID_RE.fullmatch(raw):
        raise _Bad(_id_problem(raw), _ID_RULE)  # the fix gets a suggestion once all ids are known
    return raw.lower()


def _parse_prompt(value: Any) -> str:
    if value is None:
        raise _Bad("the prompt is empty", "write the text to render in this row's prompt")
    if not isinstance(value, str):
        raise _Bad(
            f"the prompt {_show(value)} is a {type(value).__name__}, not text",
            "write the prompt as a string",
        )
    prompt = value.strip()
    if not prompt:
        raise _Bad("the prompt is empty", "write the text to render in this row's prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise _Bad(
            f"the prompt is {len(prompt):,} characters long; GPT Image 2 accepts at most "
            f"{MAX_PROMPT_CHARS:,}",
            f"shorten it by at least {len(prompt) - MAX_PROMPT_CHARS:,} characters",
        )
    _check_text(prompt, lambda: "the prompt")
    return prompt


def _nearest_valid_size(width: int, height: int) -> tuple[int, int] | None:
    """A size fal accepts close to ``width`` x ``height`` (aspect and area clamped to fal's
    limits, edges rounded to its multiple), for the fix of a refused custom size."""
    if width <= 0 or height <= 0:
        return None
    step = model.SIZE_MULTIPLE
    ratio = max(1 / model.MAX_ASPECT, min(model.MAX_ASPECT, width / height))
    area = min(max(width * height, model.MIN_PIXELS), model.MAX_PIXELS)
    base = int(math.sqrt(area * ratio) / step + 0.5) * step
    for k in sorted(range(-64, 65), key=abs):
        w = base + k * step
        if w <= 0:
            continue
        exact = w / ratio
        for h in sorted(
            {int(exact // step) * step, int(-(-exact // step)) * step}, key=lambda h: abs(h - exact)
        ):
            if h > 0 and model.custom_size_problem(w, h) is None:
                return w, h
    return None


def _custom_size(width: Any, height: Any, shown: str) -> dict[str, int]:
    problem = model.custom_size_problem(width, height)
    if problem is None:
        return {"width": width, "height": height}
    fix = f"use a preset ({', '.join(['auto', *model.PRESET_SIZES])}) or a size fal accepts"
    if isinstance(width, int) and isinstance(height, int):
        nearest = _nearest_valid_size(width, height)
        if nearest:
            fix += f", e.g. {nearest[0]}x{nearest[1]}"
    raise _Bad(f"fal refuses the image size {shown}: {problem}", fix)


def _parse_size(value: Any) -> str | dict[str, int]:
    """A preset name, ``auto`` or ``{"width", "height"}``; the default when empty."""
    if value is None:
        return model.DEFAULT_SIZE
    if isinstance(value, dict):
        keys = set(value)
        if keys != {"width", "height"}:
            raise _Bad(
                f"the image size {_show(value, 60)} must have exactly the keys width and height",
                'write it as {"width": 1536, "height": 1024} or as "1536x1024"',
            )
        width, height = value["width"], value["height"]
        return _custom_size(width, height, f"{width}x{height}")
    if not isinstance(value, str):
        raise _Bad(
            f"the image size {_show(value)} is a {type(value).__name__}",
            f"use one of: {_SIZE_CHOICES}",
        )
    text = value.strip().lower()
    if not text:
        return model.DEFAULT_SIZE
    if text == "auto" or text in model.PRESET_SIZES:
        return text
    match = _SIZE_RE.fullmatch(text)
    if match:
        width, height = int(match[1]), int(match[2])
        return _custom_size(width, height, f"{width}x{height}")
    close = difflib.get_close_matches(text, ["auto", *model.PRESET_SIZES], n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise _Bad(f"unknown image size {_show(value)}", f"{hint}use one of: {_SIZE_CHOICES}")


def _parse_format(value: Any) -> str:
    if value is None:
        return "png"
    if not isinstance(value, str):
        raise _Bad(
            f"the output format {_show(value)} is not text",
            f"use one of: {', '.join(model.OUTPUT_FORMATS)}",
        )
    text = value.strip().lower()
    if not text:
        return "png"
    if text in model.OUTPUT_FORMATS:
        return text
    hint = "write jpeg (fal's name for it); " if text in ("jpg", ".jpg", ".jpeg") else ""
    raise _Bad(
        f"unknown output format {_show(value)}",
        f"{hint}use one of: {', '.join(model.OUTPUT_FORMATS)}",
    )


def _parse_tag(value: Any) -> str | None:
    """A tag cell as text, or _Bad; None for empty cells, so CSV, JSONL and Parquet agree.

    A float NaN is empty: it is how dataframes (and so their Parquet files) mark a missing
    number. Infinity is refused rather than stored as the text "inf".
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, bytes):
        raise _Bad(
            "the value is binary data that is not UTF-8 text",
            "store this column as text (a string column) in the Parquet file",
        )
    elif isinstance(value, float) and math.isinf(value):
        raise _Bad(
            f"the value {value} is not a finite number (JSON numbers beyond about 1e308 "
            "overflow to infinity)",
            "write a finite number, or the value as a quoted string",
        )
    elif isinstance(value, dict | list | tuple):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    else:
        text = str(value).strip()
    _check_text(text, lambda: f"the value {_show(text)}")
    return text or None


def _is_empty(value: Any) -> bool:
    """True for a cell a user would call empty (None, blank text, NaN)."""
    try:
        return _parse_tag(value) is None
    except _Bad:
        return False


# --------------------------------------------------------------------------------------------
# Columns


@dataclass(frozen=True)
class _Columns:
    """How each position of a header maps to a known field or a tag."""

    fields: tuple[tuple[str, str] | None, ...]  # (kind, name) per position; None = unnamed

    @property
    def names(self) -> list[str]:
        return [f[1] for f in self.fields if f]


def _match_columns(names: list[Any]) -> tuple[_Columns, list[Problem], list[Problem]]:
    """Map header names (trimmed; known ones case-insensitively) to fields.

    Returns the mapping, problems with the names (duplicates, characters no name may hold)
    and missing-required-column problems.
    """
    problems: list[Problem] = []
    fields: list[tuple[str, str] | None] = []
    seen: dict[str, int] = {}
    for position, raw in enumerate(names, start=1):
        name = "" if raw is None else str(raw).strip()
        if not name:
            fields.append(None)
            continue
        bad_name = _name_text_problem(name, "column")
        if bad_name:
            problems.append(bad_name)
        kind = name.lower() if name.lower() in _KNOWN else "tag"
        canonical = kind if kind != "tag" else name
        if canonical in seen:
            problems.append(
                Problem(
                    f"the column {_show(name)} appears twice (columns {seen[canonical]} and "
                    f"{position})",
                    "delete or rename one of them",
                    column=name,
                )
            )
        seen.setdefault(canonical, position)
        fields.append((kind, canonical))
    columns = _Columns(tuple(fields))
    return columns, problems, _missing_columns(columns.names, set(seen), "the header has")


def _missing_columns(
    present_names: list[str], present: set[str], has: str, noun: str = "column"
) -> list[Problem]:
    """One problem naming every required column that is absent, with a rename when a column
    looks like the intended one (``text`` for ``prompt``)."""
    missing = [name for name in _REQUIRED if name not in present]
    if not missing:
        return []
    quoting = _QUOTING.get()
    lowered = {
        n.strip().lower(): n for n in present_names if quoting and n.strip().lower() not in _KNOWN
    }
    fixes = []
    for required in missing:
        close = [lowered[n] for n in _ALIASES[required] if n in lowered]
        close = close or [lowered[n] for n in difflib.get_close_matches(required, lowered, n=1)]
        if close:
            fixes.append(f"rename {_show(close[0])} to '{required}'")
            lowered = {k: v for k, v in lowered.items() if v != close[0]}
        else:
            fixes.append(f"add a {noun} '{required}'")
    existing = _listed_names(present_names, noun)
    plural = "s" if len(missing) > 1 else ""
    names = " and ".join(f"'{name}'" for name in missing)
    return [
        Problem(
            f"the required {noun}{plural} {names} {'are' if plural else 'is'} missing; "
            f"{has}: {existing}",
            "; ".join(fixes),
        )
    ]


def _listed_names(names: list[str], noun: str, most: int = 8) -> str:
    """Names for "the header has: ...": the first ``most``, or only how many there are while
    the file's content must not be quoted."""
    if not names:
        return "nothing"
    if not _QUOTING.get():
        return f"{len(names)} {noun}{'s' * (len(names) != 1)}"
    shown = ", ".join(_show(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


# --------------------------------------------------------------------------------------------
# Readers: each yields (row number, {field: value}, tags); fatal problems raise _Stop.

_Record = tuple[int, dict[str, Any], dict[str, Any]]


def _utf8_lines(handle: Any, position: list[int]) -> Iterator[str]:
    """Decoded lines of a binary file; ``position[0]`` is the current 1-based line number.

    Lines are decoded one at a time so a bad byte is reported with its line and byte offset,
    and each line is read with a cap so a runaway file cannot exhaust memory.
    """
    offset = 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        position[0] += 1
        line_no = position[0]
        if len(raw) > MAX_LINE_BYTES:
            raise _Stop(
                f"line {line_no} is longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB",
                f"prompts may have at most {MAX_PROMPT_CHARS:,} characters; check that this "
                "is a campaign file with one row per line",
            )
        if line_no == 1:
            if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                raise _Stop(
                    "the file is UTF-16, not UTF-8",
                    "save it as UTF-8 (in Excel: Save As > CSV UTF-8)",
                )
            while raw.startswith(_BOM):  # a file converted twice has two
                raw, offset = raw[len(_BOM) :], offset + len(_BOM)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Stop(
                f"the file is not valid UTF-8: line {line_no}, byte offset "
                f"{offset + exc.start} (byte 0x{raw[exc.start]:02x})",
                "save the file as UTF-8 (in Excel: Save As > CSV UTF-8; most editors have an "
                "encoding choice when saving)",
            ) from None
        if "\x00" in text:
            raise _Stop(
                f"line {line_no} contains NUL bytes (at byte offset {offset + raw.index(0)})",
                "save the file as UTF-8 text; NUL bytes mean it is UTF-16 or not a text file",
            )
        offset += len(raw)
        yield text


def _csv_error(exc: csv.Error) -> _Stop:
    message = str(exc)
    if "field larger than field limit" in message:
        return _Stop(
            f"a cell is longer than {csv.field_size_limit():,} characters",
            f'prompts may have at most {MAX_PROMPT_CHARS:,} characters; if a quote (") opens a '
            "cell and is never closed, the rest of the file becomes one cell: close it, and "
            'double quotes inside a quoted cell ("")',
        )
    if "unexpected end of data" in message:
        return _Stop(
            'the file ends inside a quoted cell: a quote (") opens a cell on this row and is '
            "never closed",
            'close the quote, and double quotes inside a quoted cell ("")',
        )
    if "expected after" in message:
        return _Stop(
            "a quoted cell is followed by more text before the next comma",
            'quote the whole cell and double the quotes inside it: "A ""vintage"" bicycle"',
        )
    if "new-line character" in message:
        return _Stop(
            "a line ends with a bare carriage return (old Mac line endings)",
            "save the file with Windows (CRLF) or Unix (LF) line endings",
        )
    return _Stop(f"the CSV cannot be parsed{_detail(exc)}", "save the file as comma-separated CSV")


def _read_csv(path: Path, problems: list[Problem]) -> Iterator[_Record]:
    line = [0]
    row = 0  # as a spreadsheet numbers rows: one per record, blank ones included
    columns: _Columns | None = None
    stopped = False
    with path.open("rb") as handle:
        reader = csv.reader(_utf8_lines(handle, line), strict=True)
        try:
            for cells in reader:
                row += 1
                if not any(cell.strip() for cell in cells):
                    continue
                if columns is None:
                    columns, duplicates, missing = _match_columns(cells)
                    problems.extend(Problem(p.problem, p.fix, row=row) for p in duplicates)
                    for p in missing:
                        problems.append(Problem(p.problem, _csv_header_fix(cells, p), row=row))
                    if missing:
                        return
                    continue
                yield _csv_record(row, cells, columns)
        except csv.Error as exc:
            stop, stopped = _csv_error(exc), True
            problems.append(Problem(stop.problem, stop.fix, row=row + 1))
        except _Stop as stop:
            stopped = True
            problems.append(Problem(stop.problem, stop.fix, row=row + 1))
    if line[0] == 0:
        problems.append(
            Problem("the file is empty", "add a header row 'id,prompt' and one row per prompt")
        )
    elif columns is None and not stopped:
        problems.append(
            Problem(
                "the file has no header row (it is blank)",
                "add a header row 'id,prompt' and one row per prompt",
            )
        )


def _csv_header_fix(cells: list[str], problem: Problem) -> str:
    """Point at the usual cause when a single column holds the whole header."""
    if len(cells) == 1:
        for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "'|'")):
            if sep in cells[0]:
                return f"the header uses {name} between columns: save the file comma-separated"
    return problem.fix


def _csv_record(row: int, cells: list[str], columns: _Columns) -> _Record:
    values: dict[str, Any] = {spec[0]: None for spec in columns.fields if spec and spec[0] != "tag"}
    tags: dict[str, Any] = {}
    extra = cells[len(columns.fields) :]
    if any(cell.strip() for cell in extra):
        values["__problems__"] = [
            Problem(
                f"the row has {len(cells)} cells but the header has {len(columns.fields)}",
                'put quotes around cells that contain commas: "red, blue"',
                row=row,
            )
        ]
    for position, (spec, cell) in enumerate(zip(columns.fields, cells, strict=False), start=1):
        if spec is None:
            if cell.strip():
                values.setdefault("__problems__", []).append(
                    Problem(
                        f"column {position} has a value but no name in the header",
                        f"give column {position} a name in row 1, or delete the value",
                        row=row,
                    )
                )
            continue
        kind, name = spec
        if kind == "tag":
            tags[name] = cell
        else:
            values[kind] = cell if cell.strip() else None
    return row, values, tags


class _JsonProblem(ValueError):
    """Valid to Python's json module, but not a campaign row: raised by the parse hooks."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem, self.fix = problem, fix


def _json_object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object, refusing a key written twice (JSON readers disagree on which one wins)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _JsonProblem(
                f"the key {_show(key)} appears twice in one object",
                "keep one of them (JSON readers disagree on which one wins)",
            )
        result[key] = value
    return result


def _json_constant(name: str) -> Any:
    """Python's json reads NaN and Infinity; JSON has neither, and other tools refuse them."""
    raise _JsonProblem(
        f"{name} is not a JSON value",
        f'write null for an empty value, or a quoted string such as "{name}"',
    )


#: One decoder for every line (``json.loads`` with hooks builds a new one per call).
_JSON = json.JSONDecoder(object_pairs_hook=_json_object_pairs, parse_constant=_json_constant)


def _json_line_problem(line: int, text: str, exc: ValueError | RecursionError) -> Problem:
    """Why one JSONL line is not a campaign row, with the fix for that cause."""
    fix = 'write one JSON object per line: {"id": "hero_1", "prompt": "..."}'
    if isinstance(exc, _JsonProblem):
        return Problem(f"line {line}: {exc.problem}", exc.fix, row=line)
    if text.lstrip().startswith("\ufeff"):
        return Problem(
            f"line {line} starts with a byte order mark (U+FEFF)",
            "remove it; it is left over where files saved with a BOM were joined",
            row=line,
        )
    if isinstance(exc, json.JSONDecodeError):
        return Problem(
            f"line {line} is not valid JSON: {exc.msg} at column {exc.colno}", fix, row=line
        )
    return Problem(f"line {line} cannot be read as JSON{_detail(exc, 80)}", fix, row=line)


def _split_fields(obj: dict[str, Any], row: int) -> _Record:
    """Known fields (case-insensitive keys) and tags of one JSON object or Parquet record."""
    values: dict[str, Any] = {}
    tags: dict[str, Any] = {}
    problems: list[Problem] = []
    for raw_key, value in obj.items():
        key = raw_key.strip()
        kind = key.lower()
        bad_name = _name_text_problem(key, "field", row)
        if bad_name:
            problems.append(bad_name)
        if key in tags:
            problems.append(
                Problem(
                    f"the field {_show(key)} appears twice (once with spaces around the name)",
                    "keep one of them",
                    row=row,
                )
            )
        if kind in _KNOWN:
            if kind in values:
                problems.append(
                    Problem(
                        f"the field '{kind}' appears twice (with different capitalisation)",
                        "keep one of them",
                        row=row,
                        column=kind,
                    )
                )
            values[kind] = value
        elif key:
            tags[key] = value
        elif not _is_empty(value):
            problems.append(Problem("a field has an empty name", "name it or remove it", row=row))
    for problem in _missing_columns(list(obj), set(values), "this row has", "field"):
        problems.append(Problem(problem.problem, problem.fix, row=row))
    if problems:
        values["__problems__"] = problems
    return row, values, tags


def _read_jsonl(path: Path, problems: list[Problem]) -> Iterator[_Record]:
    line = [0]
    with path.open("rb") as handle:
        try:
            for text in _utf8_lines(handle, line):
                if not text.strip():
                    continue
                try:
                    obj = _JSON.decode(text)
                except (ValueError, RecursionError) as exc:
                    problems.append(_json_line_problem(line[0], text, exc))
                    continue
                if not isinstance(obj, dict):
                    problems.append(
                        Problem(
                            f"line {line[0]} is a JSON {type(obj).__name__}, not an object",
                            'write one JSON object per line: {"id": "hero_1", "prompt": "..."}',
                            row=line[0],
                        )
                    )
                    continue
                yield _split_fields(obj, line[0])
        except _Stop as stop:
            problems.append(Problem(stop.problem, stop.fix, row=line[0] or None))
    if line[0] == 0:
        problems.append(
            Problem(
                "the file is empty",
                'write one JSON object per line: {"id": "hero_1", "prompt": "..."}',
            )
        )


def _read_parquet(path: Path, problems: list[Problem]) -> Iterator[_Record]:
    not_parquet = Problem(
        "the file is not a readable Parquet file",
        "write it again with a Parquet writer (pyarrow, pandas, DuckDB), or give a CSV or "
        "JSONL file the matching extension",
    )
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        problems.append(Problem(f"{not_parquet.problem}{_detail(exc)}", not_parquet.fix))
        return
    with parquet:
        names = parquet.schema_arrow.names
        _, name_problems, missing = _match_columns(names)
        if name_problems or missing:
            problems.extend(name_problems + missing)
            return
        record = 0
        try:
            for batch in parquet.iter_batches(batch_size=1024):
                for obj in batch.to_pylist():
                    record += 1
                    yield _split_fields({k: _from_binary(v) for k, v in obj.items()}, record)
        except (pa.ArrowException, OSError, ValueError) as exc:
            problems.append(
                Problem(
                    f"{not_parquet.problem}: record {record + 1} is damaged{_detail(exc)}",
                    not_parquet.fix,
                    row=record + 1,
                )
            )


def _from_binary(value: Any) -> Any:
    """A Parquet binary cell as text when it is UTF-8 (some writers, e.g. Spark, store text
    that way); other bytes stay bytes and are refused by the field's parser."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


_READERS: dict[str, Callable[[Path, list[Problem]], Iterator[_Record]]] = {
    "csv": _read_csv,
    "jsonl": _read_jsonl,
    "parquet": _read_parquet,
}


# --------------------------------------------------------------------------------------------
# Loading


def _open_problem(path: Path) -> Problem | None:
    """Why ``path`` cannot be read at all, or None."""
    if path.suffix.lower() not in FORMATS:
        hint = {
            ".xlsx": "export it from Excel as 'CSV UTF-8'; ",
            ".xls": "export it from Excel as 'CSV UTF-8'; ",
            ".json": "write one object per line and name it .jsonl; ",
            ".tsv": "save it comma-separated as .csv; ",
            ".ndjson": "rename it .jsonl; ",
        }.get(path.suffix.lower(), "")
        return Problem(
            f"unsupported file type {_show(path.suffix or '(none)')}",
            f"{hint}campaigns are .csv, .jsonl or .parquet files".strip(),
        )
    if not path.exists():
        siblings = [p.name for p in path.parent.glob("*")] if path.parent.is_dir() else []
        close = difflib.get_close_matches(path.name, siblings, n=1)
        fix = f"did you mean {path.parent / close[0]}?" if close else "check the path"
        return Problem("the file does not exist", fix)
    if not path.is_file():
        return Problem("this is not a regular file", "give the path of a campaign file")
    if not os.access(path, os.R_OK):
        return Problem("the file is not readable (permission denied)", "make it readable")
    return None


def _link_outside_data(path: Path) -> Path | None:
    """The target of ``path`` when it is a link to a file outside the data directory."""
    if not path.is_symlink():
        return None
    target = Path(os.path.realpath(path))
    inside = Path(os.path.realpath(settings.data_dir()))
    return None if target.is_relative_to(inside) else target


def load_campaign(path: Path) -> Campaign:
    """Read and validate a CSV, JSONL or Parquet campaign; raise CampaignError on bad input.

    Every problem in the file is collected and reported in one error; nothing is written. The
    campaign is named after ``path`` as given, a link's own name when it is one. A link to a
    file outside the data directory may point anywhere (``passwd.csv`` -> ``/etc/passwd``) and
    its errors can end up in the Dagster UI, so they then locate problems (row, column) but
    never quote the file's content.
    """
    path = Path(path)
    opened = _open_problem(path)
    if opened:
        raise CampaignError.from_problems(path, [opened])
    problems: list[Problem] = []
    try:
        name = campaign_name(path)
    except CampaignError as exc:
        name = ""
        problems.append(Problem(exc.problem, exc.fix))
    target = _link_outside_data(path)
    note = (
        f"values not quoted: this is a link to {_printable(str(target))}, outside the data "
        "directory"
        if target
        else ""
    )
    quoting = _QUOTING.set(target is None)
    try:
        rows = _read_rows(path, problems)
    finally:
        _QUOTING.reset(quoting)
    if problems:
        raise CampaignError.from_problems(path, _ordered(problems), note)
    return Campaign(name=name, source=path, rows=rows)


def _read_rows(path: Path, problems: list[Problem]) -> tuple[PromptRow, ...]:
    """The file's valid rows; every problem found is added to ``problems``."""
    validator = _RowValidator()
    reader = _READERS[FORMATS[path.suffix.lower()]]
    try:
        for record in reader(path, problems):
            if validator.count >= MAX_ROWS:
                problems.append(
                    Problem(
                        f"the campaign has more than {MAX_ROWS:,} prompts (Dagster's practical "
                        "limit of partitions per asset)",
                        "split it into several campaign files",
                        row=record[0],
                    )
                )
                break
            validator.add(*record)
    except OSError as exc:  # vanished or unreadable mid-way
        problems.append(Problem(f"the file could not be read ({exc.strerror})", "check the file"))
    problems += validator.finish()
    if not problems and not validator.rows:
        problems.append(Problem("the file has no prompts", "add one row per prompt"))
    return tuple(validator.rows)


def _ordered(problems: list[Problem]) -> list[Problem]:
    """File-level problems first, then by row: the row's own, its known fields, its tags."""
    order = {name: i for i, name in enumerate(_KNOWN)}
    return sorted(
        problems,
        key=lambda p: (
            -1 if p.row is None else p.row,
            order.get(p.column, len(_KNOWN)) if p.column else -1,
        ),
    )


class _RowValidator:
    """Checks records one by one, remembering ids to catch duplicates across the file."""

    def __init__(self) -> None:
        self.rows: list[PromptRow] = []
        self.count = 0
        self.problems: list[Problem] = []
        self._seen: dict[str, tuple[int, str]] = {}  # lowercased id -> (row, as written)
        self._bad_ids: list[tuple[int, str, str]] = []  # (row, raw id, problem)

    def add(self, row: int, values: dict[str, Any], tags: dict[str, Any]) -> None:
        self.count += 1
        found = list(values.pop("__problems__", []))
        fields: dict[str, Any] = {}
        for column, parse in (
            ("id", _parse_id),
            ("prompt", _parse_prompt),
            ("image_size", _parse_size),
            ("output_format", _parse_format),
        ):
            if column in _REQUIRED and column not in values:
                continue  # already reported as a missing field
            try:
                fields[column] = parse(values.get(column))
            except _Bad as bad:
                raw = values.get(column)
                if column == "id" and isinstance(raw, str) and bad.fix == _ID_RULE:
                    self._bad_ids.append((row, raw.strip(), bad.problem))  # fix made in finish
                found.append(Problem(bad.problem, bad.fix, row=row, column=column))
        prompt_id = fields.get("id")
        if prompt_id is not None:
            as_written = str(values["id"]).strip()
            if prompt_id in self._seen:
                first_row, first_raw = self._seen[prompt_id]
                found.append(
                    Problem(
                        f"the id {_show(as_written)} is already used on row {first_row} "
                        f"({_show(first_raw)}); ids are compared in lowercase",
                        f"give row {row} or row {first_row} a different id",
                        row=row,
                        column="id",
                    )
                )
            else:
                self._seen[prompt_id] = (row, as_written)
        clean_tags: dict[str, str] = {}
        for name, value in tags.items():
            try:
                text = _parse_tag(value)
            except _Bad as bad:
                found.append(Problem(bad.problem, bad.fix, row=row, column=name))
                continue
            if text:
                clean_tags[name] = text
        self.problems += [p for p in found if p.fix != _ID_RULE]
        if found or len(fields) < len(_KNOWN):
            return
        self.rows.append(
            PromptRow(
                prompt_id=prompt_id,
                prompt=fields["prompt"],
                image_size=fields["image_size"],
                output_format=fields["output_format"],
                tags=clean_tags,
                row_number=row,
            )
        )

    def finish(self) -> list[Problem]:
        """All problems, with a collision-free suggestion for each id that was rejected."""
        taken = set(self._seen)
        for row, raw, problem in self._bad_ids:
            # A suggestion is made of the id, so it quotes the file: none when that is not allowed.
            suggestion = suggest_name(raw, MAX_ID_CHARS, allow_dash=True) if _QUOTING.get() else ""
            base, n = suggestion, 2
            while suggestion and suggestion in taken:
                suffix = f"_{n}"
                suggestion, n = base[: MAX_ID_CHARS - len(suffix)] + suffix, n + 1
            fix = _ID_RULE + (f", e.g. '{suggestion}'" if suggestion else "")
            if suggestion and suggestion != base:
                fix += f" ('{base}' is already taken)"
            if suggestion:
                taken.add(suggestion)
            self.problems.append(Problem(problem, fix, row=row, column="id"))
        return self.problems


# --------------------------------------------------------------------------------------------
# Render inputs and fingerprints


def render_input(row: PromptRow, quality: str) -> dict[str, Any]:
    """The exact fal input for one prompt at one quality (what lineage records as ``input``)."""
    if quality not in model.QUALITIES:
        raise ValueError(f"quality must be one of {model.QUALITIES}, not {quality!r}")
    size = dict(row.image_size) if isinstance(row.image_size, dict) else row.image_size
    return {
        "prompt": row.prompt,
        "image_size": size,
        "quality": quality,
        "num_images": 1,
        "output_format": row.output_format,
    }


def input_fingerprint(row: PromptRow) -> str:
    """sha256 of what decides the image (prompt, size, format), independent of quality and tags.

    Two loads of a prompt with the same fingerprint render the same images, so a sensor can
    tell edited prompts from untouched ones.
    """
    relevant = {"prompt": row.prompt, "image_size": row.image_size, "format": row.output_format}
    return hashlib.sha256(canonical_json(relevant).encode("utf-8")).hexdigest()


def changed_prompts(old: Campaign | None, new: Campaign) -> list[str]:
    """Ids in ``new`` (in its order) that are new or whose render-relevant fields changed."""
    before = {row.prompt_id: input_fingerprint(row) for row in old.rows} if old else {}
    return [
        row.prompt_id for row in new.rows if before.get(row.prompt_id) != input_fingerprint(row)
    ]


def removed_prompts(old: Campaign | None, new: Campaign) -> list[str]:
    """Ids in ``old`` that ``new`` no longer has (their partitions stay, their renders too)."""
    if old is None:
        return []
    kept = {row.prompt_id for row in new.rows}
    return [row.prompt_id for row in old.rows if row.prompt_id not in kept]


# --------------------------------------------------------------------------------------------
# Normalised table

TABLE_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("partition_key", pa.string()),
        ("prompt", pa.string()),
        ("image_size", pa.string()),  # a preset name, auto, or WIDTHxHEIGHT
        ("output_format", pa.string()),
        ("tags", pa.string()),  # canonical JSON object of strings
        ("row_number", pa.int64()),
        ("input_fingerprint", pa.string()),
    ]
)


def size_text(image_size: str | dict[str, int]) -> str:
    """``image_size`` as one string: a preset name, ``auto`` or ``WIDTHxHEIGHT``."""
    if isinstance(image_size, dict):
        return f"{image_size['width']}x{image_size['height']}"
    return image_size


def table_path(campaign: str, directory: Path) -> Path:
    if not (NAME_RE.fullmatch(campaign) and len(campaign) <= MAX_NAME_CHARS):
        raise ValueError(f"not a campaign name: {campaign!r}")
    return Path(directory) / f"{campaign}.parquet"


def write_table(campaign: Campaign, directory: Path) -> Path:
    """Write the normalised campaign table as Parquet (atomically); return its path.

    Written to a temporary file in the same directory, fsynced, then renamed over the old
    table, so a reader sees the old table or the new one, never half of one.
    """
    target = table_path(campaign.name, directory)
    columns: dict[str, list[Any]] = {name: [] for name in TABLE_SCHEMA.names}
    for row in campaign.rows:
        columns["prompt_id"].append(row.prompt_id)
        columns["partition_key"].append(partition_key(campaign.name, row.prompt_id))
        columns["prompt"].append(row.prompt)
        columns["image_size"].append(size_text(row.image_size))
        columns["output_format"].append(row.output_format)
        columns["tags"].append(canonical_json(row.tags))
        columns["row_number"].append(row.row_number)
        columns["input_fingerprint"].append(input_fingerprint(row))
    metadata = {
        "falassets.campaign": campaign.name,
        "falassets.source": str(campaign.source),
        "falassets.table_version": TABLE_VERSION,
    }
    table = pa.table(columns, schema=TABLE_SCHEMA.with_metadata(metadata))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{campaign.name}.", suffix=".parquet.tmp", dir=target.parent
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)
    return target


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _size_from_text(text: str) -> str | dict[str, int]:
    match = _SIZE_RE.fullmatch(text)
    return {"width": int(match[1]), "height": int(match[2])} if match else text


def read_table(campaign: str, directory: Path) -> Campaign:
    """Read back a table written by ``write_table``.

    A missing table, or one whose rows do not match their stored fingerprints (edited by hand,
    or damaged), is a CampaignError: re-load the campaign file to rebuild it.
    """
    path = table_path(campaign, directory)
    rebuild = "load the campaign file again (falassets run, or the prompts asset) to rebuild it"
    if not path.is_file():
        raise CampaignError(path, f"there is no table for the campaign '{campaign}'", rebuild)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise CampaignError(path, f"the table cannot be read ({str(exc)[:100]})", rebuild) from exc
    missing = [name for name in TABLE_SCHEMA.names if name not in table.column_names]
    if missing:
        raise CampaignError(path, f"the table lacks the columns {', '.join(missing)}", rebuild)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    rows = []
    for record in table.select(TABLE_SCHEMA.names).to_pylist():
        row = PromptRow(
            prompt_id=record["prompt_id"],
            prompt=record["prompt"],
            image_size=_size_from_text(record["image_size"]),
            output_format=record["output_format"],
            tags=json.loads(record["tags"]),
            row_number=record["row_number"],
        )
        if input_fingerprint(row) != record["input_fingerprint"] or record[
            "partition_key"
        ] != partition_key(campaign, row.prompt_id):
            raise CampaignError(
                path,
                f"the row for '{row.prompt_id}' does not match its stored fingerprint",
                rebuild,
                row=row.row_number,
            )
        rows.append(row)
    source = Path(meta.get("falassets.source", str(path)))
    return Campaign(name=campaign, source=source, rows=tuple(rows))
