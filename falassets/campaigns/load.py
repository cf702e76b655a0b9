"""Loading a campaign file: open, read, validate every row, report every problem at once."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from falassets import settings
from falassets.campaigns.errors import _QUOTING, CampaignError, Problem, _Bad, _printable, _show
from falassets.campaigns.keys import campaign_name, suggest_name
from falassets.campaigns.limits import _ID_RULE, _KNOWN, _REQUIRED, FORMATS, MAX_ID_CHARS, MAX_ROWS
from falassets.campaigns.model import Campaign, PromptRow
from falassets.campaigns.readers import _READERS
from falassets.campaigns.validation import (
    _parse_format,
    _parse_id,
    _parse_prompt,
    _parse_size,
    _parse_tag,
    _parse_variants,
)
from falassets.campaigns.variants import default_variants

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


def load_campaign(path: Path, *, variants: int | None = None) -> Campaign:
    """Read and validate a CSV, JSONL or Parquet campaign; raise CampaignError on bad input.

    ``variants``: drafts per prompt for rows whose ``variants`` cell is empty; None means the
    campaign's recorded default (:mod:`falassets.campaigns.variants`), else 1.

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
    if variants is None:
        variants = default_variants(name) if name else 1
    try:
        rows = _read_rows(path, problems, variants)
    finally:
        _QUOTING.reset(quoting)
    if problems:
        raise CampaignError.from_problems(path, _ordered(problems), note)
    return Campaign(name=name, source=path, rows=rows)


def _read_rows(path: Path, problems: list[Problem], variants: int) -> tuple[PromptRow, ...]:
    """The file's valid rows; every problem found is added to ``problems``."""
    validator = _RowValidator(variants)
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

    def __init__(self, variants: int = 1) -> None:
        self.variants = variants  # for rows that leave the cell empty
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
            ("variants", _parse_variants),
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
                variants=fields["variants"] or self.variants,
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
