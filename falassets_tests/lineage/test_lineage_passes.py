"""The pass descriptions and the one freshness rule every caller uses (issue 12)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from falassets.engine import jobs
from falassets.lineage.passes import (
    DRAFT,
    EDIT,
    FINAL,
    TEXT_TO_IMAGE,
    Freshness,
    RequestRow,
    freshness,
    get_pass,
)

WANTED = {
    "prompt": "a red bicycle",
    "image_size": "square",
    "quality": "high",
    "num_images": 1,
    "output_format": "png",
}


def row(status: str, sent: Any = WANTED) -> RequestRow | None:
    return RequestRow.of(
        {"partition_key": "spring-p1", "pass": "final", "status": status, "input": sent}
    )


def test_passes_name_their_quality_asset_and_endpoints() -> None:
    assert (DRAFT.quality, DRAFT.asset, DRAFT.endpoint()) == ("low", "draft_renders", TEXT_TO_IMAGE)
    assert (FINAL.quality, FINAL.asset, FINAL.endpoint("refine")) == ("high", "final_renders", EDIT)
    assert (TEXT_TO_IMAGE, EDIT) == (jobs.TEXT_TO_IMAGE, jobs.EDIT)  # the engine's endpoints
    with pytest.raises(ValueError, match="modes"):
        DRAFT.endpoint("refine")
    with pytest.raises(ValueError, match="pass must be one of"):
        get_pass("review")


def test_each_latest_request_is_judged_against_the_wanted_input() -> None:
    assert freshness(WANTED, None) is Freshness.MISSING
    assert freshness(WANTED, row("completed")) is Freshness.CURRENT
    assert freshness(WANTED, row("pending")) is Freshness.IN_FLIGHT
    assert freshness(WANTED, row("failed")) is Freshness.FAILED
    assert freshness(WANTED, row("cancelled")) is Freshness.FAILED
    edited = {**WANTED, "prompt": "a blue bicycle"}
    assert freshness(WANTED, row("completed", edited)) is Freshness.STALE
    assert freshness(WANTED, row("completed", "not json")) is Freshness.STALE
    assert not Freshness.STALE.attempted and Freshness.FAILED.attempted


def test_a_refined_final_counts_for_the_input_it_refined_at() -> None:
    refined = {**WANTED, "image_urls": ["https://v3.fal.media/files/draft.png"]}
    assert freshness(WANTED, row("completed", refined)) is Freshness.CURRENT
    as_text = json.dumps(refined)  # the DuckDB view hands the input back as JSON text
    assert freshness(WANTED, row("completed", as_text)) is Freshness.CURRENT
