"""Readers: CSV, JSONL and Parquet, each yielding (row, fields, tags); columns matched by name."""

from __future__ import annotations

import csv
import difflib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from falassets.campaigns.errors import _QUOTING, Problem, _detail, _show, _Stop
from falassets.campaigns.limits import (
    _ALIASES,
    _BOM,
    _KNOWN,
    _REQUIRED,
    MAX_LINE_BYTES,
    MAX_PROMPT_CHARS,
)
from falassets.campaigns.text import _name_text_problem
from falassets.campaigns.validation import _is_empty

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
