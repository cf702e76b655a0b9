"""A campaign as loaded: its name and one checked PromptRow per prompt."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from falassets.campaigns.keys import partition_key

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
    variants: int = 1  # drafts per prompt (fal's num_images in the draft pass), 1-4


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
