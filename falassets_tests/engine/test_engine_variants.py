"""Variants: one request with fal's num_images N is one job, N verified images, N x the price."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from falassets.engine.pricing import price_usd
from falassets.lineage import catalog
from falassets_tests.engine.engine_support import lineage_rows, make_jobs, render_all


def _three_variants(n: int = 2):
    jobs = make_jobs(n, tag="v")
    return [
        job.__class__(**{**job.__dict__, "input": {**job.input, "num_images": 3}}) for job in jobs
    ]


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_each_variant_is_downloaded_verified_and_recorded_with_its_own_sha256(
    sim, data_dir
) -> None:
    jobs = _three_variants()

    outcomes = asyncio.run(render_all(jobs))

    assert [o.status for o in outcomes] == ["completed", "completed"]
    ledger = sim.ledger()
    assert ledger["totals"]["accepted"] == 2  # one request per prompt, not one per variant
    assert ledger["totals"]["images_billed"] == 6
    draft_price = price_usd({**jobs[0].input, "num_images": 1})
    for outcome in outcomes:
        assert [image["variant"] for image in outcome.images] == [1, 2, 3]
        shas = [image["sha256"] for image in outcome.images]
        assert len(set(shas)) == 3  # three different pictures
        for image in outcome.images:
            assert _sha(image["image_path"]) == image["sha256"]
            assert Path(image["thumbnail_path"]).is_file()
            assert image["output_url"]
        assert (
            outcome.sha256 == shas[0] and outcome.image_location == outcome.images[0]["image_path"]
        )
        assert outcome.cost_usd == round(3 * draft_price, 6)
    rows = lineage_rows()
    for outcome in outcomes:
        row = rows[outcome.request_id]
        assert [image["sha256"] for image in row["images"]] == [i["sha256"] for i in outcome.images]
        assert row["cost_usd"] == round(3 * draft_price, 6)
    _, found = catalog.query(
        "SELECT request_id, variant, sha256 FROM request_images ORDER BY request_id, variant"
    )
    assert sorted(found) == sorted(
        (o.request_id, i["variant"], i["sha256"]) for o in outcomes for i in o.images
    )


def test_a_finished_draft_is_reused_only_while_every_variant_is_intact(sim, data_dir) -> None:
    jobs = _three_variants(1)
    [first] = asyncio.run(render_all(jobs))

    [again] = asyncio.run(render_all(jobs))

    assert again.reused and again.request_id == first.request_id
    assert [i["sha256"] for i in again.images] == [i["sha256"] for i in first.images]
    assert sim.ledger()["totals"]["accepted"] == 1

    Path(first.images[2]["image_path"]).unlink()  # the third variant is gone
    [redone] = asyncio.run(render_all(jobs))

    assert not redone.reused and redone.request_id != first.request_id
    assert sim.ledger()["totals"]["accepted"] == 2
    assert all(Path(i["image_path"]).is_file() for i in redone.images)
