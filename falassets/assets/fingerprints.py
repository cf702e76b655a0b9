"""What counts as "the same prompt" and "already rendered for this input".

A prompt's fingerprint is the exact fal input it renders with, so editing tag columns changes
nothing while editing the prompt, its size or its format re-renders that prompt alone. Lineage
records the input it sent, so "already attempted for this input" is read from there, which stays
correct after a crash, a manual materialization or a restart of the sensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from falassets import campaigns
from falassets.campaigns import Campaign, PromptRow
from falassets.fal.jobs import canonical_json

DRAFT_QUALITY = "low"
FINAL_QUALITY = "high"


def fingerprint(row: PromptRow, quality: str = DRAFT_QUALITY) -> str:
    return canonical_json(campaigns.render_input(row, quality))


@dataclass(frozen=True)
class PromptDiff:
    new: list[str] = field(default_factory=list)  # prompt ids
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def diff_prompts(previous: Campaign | None, current: Campaign) -> PromptDiff:
    """New, changed (different render input), removed and unchanged prompt ids."""
    before = {row.prompt_id: fingerprint(row) for row in previous.rows} if previous else {}
    diff = PromptDiff()
    for row in current.rows:
        if row.prompt_id not in before:
            diff.new.append(row.prompt_id)
        elif before[row.prompt_id] != fingerprint(row):
            diff.changed.append(row.prompt_id)
        else:
            diff.unchanged.append(row.prompt_id)
    current_ids = {row.prompt_id for row in current.rows}
    diff.removed.extend(pid for pid in before if pid not in current_ids)
    return diff


def recorded_input(row: dict[str, Any]) -> dict[str, Any] | None:
    """The ``input`` column of a lineage row as a dict (views may hand it back as text)."""
    value = row.get("input")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def same_render_input(recorded: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    """Whether a recorded request rendered ``wanted`` (a refine's reference image aside)."""
    if recorded is None:
        return False
    recorded = {k: v for k, v in recorded.items() if k != "image_urls"}
    return canonical_json(recorded) == canonical_json(wanted)
