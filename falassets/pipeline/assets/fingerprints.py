"""What counts as "already rendered for this input".

Lineage records the exact input each request sent, so "already attempted for this input" is
read from there, which stays correct after a crash, a manual materialization or a sensor
restart. Editing tag columns changes no input; editing a prompt, its size or its format
changes that prompt's input alone, so only that prompt renders again.
"""

from __future__ import annotations

import json
from typing import Any

from falassets.engine.jobs import canonical_json

DRAFT_QUALITY = "low"
FINAL_QUALITY = "high"


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
