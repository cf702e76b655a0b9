"""Read and validate campaign files; make prompt ids and partition keys.

INTERFACE STUB: owned by the campaigns work; signatures are the contract other modules use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_PROMPT_CHARS = 32_000  # GPT Image's prompt limit


class CampaignError(ValueError):
    """A bad campaign file. ``str()`` names the file, the row (1-based, as a spreadsheet shows
    it, header = row 1 for CSV; line number for JSONL; record number for Parquet), the column
    when known, what is wrong and the fix."""

    def __init__(
        self,
        file: Path,
        problem: str,
        fix: str,
        *,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.file, self.problem, self.fix, self.row, self.column = file, problem, fix, row, column
        where = str(file) + (f", row {row}" if row is not None else "")
        where += f", column '{column}'" if column else ""
        super().__init__(f"{where}: {problem}. Fix: {fix}")


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


def campaign_name(path: Path) -> str:
    """The campaign name for a file, or CampaignError if its stem cannot become one."""
    raise NotImplementedError


def partition_key(campaign: str, prompt_id: str) -> str:
    """``<campaign>-<prompt_id>``; campaign names hold no '-', so the first '-' splits it."""
    return f"{campaign}-{prompt_id}"


def split_partition_key(key: str) -> tuple[str, str]:
    campaign, _, prompt_id = key.partition("-")
    return campaign, prompt_id


def load_campaign(path: Path) -> Campaign:
    """Read and validate a CSV, JSONL or Parquet campaign; raise CampaignError on bad input."""
    raise NotImplementedError


def render_input(row: PromptRow, quality: str) -> dict[str, Any]:
    """The exact fal input for one prompt at one quality (what lineage records as ``input``)."""
    raise NotImplementedError


def write_table(campaign: Campaign, directory: Path) -> Path:
    """Write the normalised campaign table as Parquet (atomically); return its path."""
    raise NotImplementedError


def read_table(campaign: str, directory: Path) -> Campaign:
    """Read back a table written by ``write_table``."""
    raise NotImplementedError
