"""Render inputs and fingerprints: which prompts changed between two loads of a campaign."""

from __future__ import annotations

import hashlib
from typing import Any

from falassets.campaigns.model import Campaign, PromptRow
from falassets.engine import model
from falassets.engine.model import canonical_json

# --------------------------------------------------------------------------------------------
# Render inputs and fingerprints


def render_input(row: PromptRow, quality: str, *, images: int = 1) -> dict[str, Any]:
    """The exact fal input for one prompt at one quality (what lineage records as ``input``);
    ``images``: fal's ``num_images`` (the draft pass asks for the row's variants, see
    ``lineage.passes.Pass.render_input``)."""
    if quality not in model.QUALITIES:
        raise ValueError(f"quality must be one of {model.QUALITIES}, not {quality!r}")
    if isinstance(images, bool) or not isinstance(images, int):
        raise ValueError(f"images must be a whole number, not {images!r}")
    if not 1 <= images <= model.MAX_IMAGES:
        raise ValueError(f"images must be between 1 and {model.MAX_IMAGES}, not {images}")
    size = dict(row.image_size) if isinstance(row.image_size, dict) else row.image_size
    return {
        "prompt": row.prompt,
        "image_size": size,
        "quality": quality,
        "num_images": images,
        "output_format": row.output_format,
    }


def input_fingerprint(row: PromptRow) -> str:
    """sha256 of what decides the images (prompt, size, format, variants), independent of
    quality and tags.

    Two loads of a prompt with the same fingerprint render the same images, so a sensor can
    tell edited prompts from untouched ones. ``variants`` counts only above 1, so a
    one-variant prompt keeps the fingerprint it had before variants existed (tables written
    then still verify).
    """
    relevant: dict[str, Any] = {
        "prompt": row.prompt,
        "image_size": row.image_size,
        "format": row.output_format,
    }
    if row.variants != 1:
        relevant["variants"] = row.variants
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
