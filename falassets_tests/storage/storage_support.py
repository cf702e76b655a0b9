"""Helpers for the render store tests (no tests here): a campaign's drafts rendered through
the engine, the bytes a store holds, and what a contact sheet shows."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from fsspec.core import url_to_fs
from PIL import Image

from falassets import campaigns, settings
from falassets.engine.jobs import RenderOutcome
from falassets.lineage import queries
from falassets.pipeline.assets.drafts import draft_job
from falassets.pipeline.resources import FalRenderer
from falassets_tests.engine.engine_support import render_all
from falassets_tests.pipeline.test_pipeline_support import write_campaign

PROMPTS = {
    "p1": "a red bicycle against a brick wall",
    "p2": "a blue mug on an oak desk",
    "p3": "a green forest trail in fog",
}


async def render_drafts(
    data_dir: Path, campaign: str = "spring", prompts: dict[str, str] = PROMPTS
) -> list[RenderOutcome]:
    """The campaign's table on disk and its drafts rendered by the engine, as the draft pass
    makes them (same jobs), in this process."""
    table = campaigns.load_campaign(write_campaign(data_dir, campaign, prompts))
    campaigns.write_table(table, settings.tables_dir())
    renderer = FalRenderer(concurrency=4)
    jobs = [
        draft_job(campaigns.partition_key(campaign, row.prompt_id), row, endpoint=renderer.endpoint)
        for row in table.rows
    ]
    return await render_all(jobs, renderer)


def draft_rows(campaign: str = "spring") -> dict[str, dict[str, Any]]:
    """The latest draft row per prompt id."""
    return {row["prompt_id"]: row for row in queries.latest_requests(campaign, "draft").values()}


def stored_bytes(uri: str) -> bytes:
    """What the store holds at ``uri``, read with fsspec alone (not through falassets)."""
    fs, path = url_to_fs(uri)
    return fs.cat_file(path)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pixels_of(png: bytes, colour: tuple[int, int, int]) -> int:
    """How many pixels of a sheet have exactly ``colour`` (a missing tile's fill)."""
    with Image.open(io.BytesIO(png)) as sheet:
        counts = sheet.convert("RGB").getcolors(1 << 24) or []
    return sum(count for count, found in counts if found == colour)
