"""Renders in object storage, in one process: fsspec's ``memory://`` stands in for ``s3://``.

A team points ``FALASSETS_RENDERS_URI`` at a bucket and relies on every part of falassets
using it: the engine writes each render there (nothing under the data directory), lineage
records where (``image_uri``), the recorded sha256 is the stored bytes', a re-run reuses
what the bucket holds, and the review page, its contact sheet, Dagster's thumbnails and
report sheet, the finals' sha256 check and the refine pass all read from the bucket.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from fsspec.core import url_to_fs

from falassets import campaigns, settings
from falassets.pipeline.assets.checks import mismatches
from falassets.pipeline.assets.images import inline_thumbnail
from falassets.pipeline.assets.reports import campaign_figures, write_contact_sheets
from falassets.review.exports import CELL
from falassets_tests.review.test_review_support import ReviewServer
from falassets_tests.storage.storage_support import (
    PROMPTS,
    draft_rows,
    pixels_of,
    render_drafts,
    sha256,
    stored_bytes,
)

REVIEW_MISSING_TILE = (48, 48, 52)  # review/exports.py: a tile with no picture
REPORT_MISSING_TILE = (221, 221, 221)  # pipeline/assets/images.py: "#dddddd"


@pytest.fixture
def bucket(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    uri = f"memory://falassets-tests/{uuid.uuid4().hex}/renders"
    monkeypatch.setenv("FALASSETS_RENDERS_URI", uri)
    yield uri
    fs, path = url_to_fs(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


async def test_drafts_land_in_the_store_with_their_uri_and_sha256(sim, data_dir, bucket) -> None:
    outcomes = await render_drafts(data_dir)

    assert [o.status for o in outcomes] == ["completed"] * len(PROMPTS)
    rows = draft_rows()
    assert set(rows) == set(PROMPTS)
    for prompt_id, row in rows.items():
        uri = row["image_uri"]
        assert uri.startswith(f"{bucket}/spring/draft/{prompt_id}-"), uri
        assert uri.endswith(".png")
        assert row["image_path"] == uri  # no local path: image_path says the URI
        assert sha256(stored_bytes(uri)) == row["sha256"]
        assert row["thumbnail_path"].startswith(f"{bucket}/spring/draft/thumbs/")
        assert stored_bytes(row["thumbnail_path"])[:2] == b"\xff\xd8"  # a JPEG
    by_id = {o.job.prompt_id: o for o in outcomes}
    assert {o.image_uri for o in by_id.values()} == {r["image_uri"] for r in rows.values()}
    assert all(o.image_path is None and o.image_location == o.image_uri for o in outcomes)
    assert not settings.renders_dir().exists()  # nothing was written to the data directory

    # Run again: every render is answered from what the bucket holds, nothing is sent.
    again = await render_drafts(data_dir)
    assert all(o.reused for o in again)
    assert sim.ledger()["totals"]["accepted"] == len(PROMPTS)

    # A render gone from the bucket is rendered again; the others are still reused.
    fs, path = url_to_fs(rows["p2"]["image_uri"])
    fs.rm(path)
    third = {o.job.prompt_id: o for o in await render_drafts(data_dir)}
    assert not third["p2"].reused and third["p2"].ok
    assert third["p1"].reused and third["p3"].reused
    assert sim.ledger()["totals"]["accepted"] == len(PROMPTS) + 1
    assert sha256(stored_bytes(third["p2"].image_uri)) == third["p2"].sha256


async def test_the_review_page_and_contact_sheets_read_the_store(sim, data_dir, bucket) -> None:
    await render_drafts(data_dir)
    rows = draft_rows()

    with ReviewServer(budget_usd=None) as server:
        board = server.request("GET", "/api/campaigns/spring").json()
        assert {item["id"] for item in board["items"]} == set(PROMPTS)
        for item in board["items"]:
            row = rows[item["id"]]
            for url, location, kind in (
                (item["draft"]["image"], row["image_uri"], "image/png"),
                (item["draft"]["thumb"], row["thumbnail_path"], "image/jpeg"),
            ):
                assert url and url.startswith("/files/renders/spring/draft/"), url
                reply = server.request("GET", url)
                assert reply.status == 200, (url, reply.body[:200])
                assert reply.headers["content-type"] == kind
                assert reply.body == stored_bytes(location)
        assert server.request("GET", "/files/renders/spring/draft/missing.png").status == 404
        sheet = server.request("GET", "/api/campaigns/spring/contact-sheet.png")
        assert sheet.status == 200
        assert pixels_of(sheet.body, REVIEW_MISSING_TILE) == 0  # every tile has its picture

    # Dagster's inline thumbnail and the report's contact sheet read the same store.
    assert inline_thumbnail(rows["p1"]["thumbnail_path"], alt="p1").startswith("![p1](data:")
    figures = campaign_figures(campaigns.read_table("spring", settings.tables_dir()))
    assert [location for _, location in figures.tiles] == [
        rows[p]["thumbnail_path"] for p in PROMPTS
    ]
    [page] = write_contact_sheets(figures)
    assert pixels_of(page.read_bytes(), REPORT_MISSING_TILE) < CELL * CELL // 4


async def test_the_sha256_check_and_the_refine_pass_read_the_store(sim, data_dir, bucket) -> None:
    from falassets.pipeline.assets.finals import _changed_drafts

    await render_drafts(data_dir)
    rows = draft_rows()
    recorded = {f"spring-{p}": (row["image_uri"], row["sha256"]) for p, row in rows.items()}
    drafts = {f"spring-{p}": row for p, row in rows.items()}

    assert mismatches(recorded) == {}
    assert _changed_drafts(drafts) == {}

    # Someone replaces one object in the bucket: both notice, naming it.
    fs = fsspec.filesystem("memory")
    _, path = url_to_fs(rows["p3"]["image_uri"])
    fs.pipe_file(path, stored_bytes(rows["p3"]["image_uri"]) + b"tampered")
    wrong = mismatches(recorded)
    assert list(wrong) == ["spring-p3"]
    assert "differs from the recorded" in wrong["spring-p3"]
    changed = _changed_drafts(drafts)
    assert list(changed) == ["spring-p3"] and changed["spring-p3"].error_type == "draft_changed"


async def test_show_checks_a_render_in_the_store(sim, data_dir, bucket, capsys) -> None:
    from falassets_tests.cli.test_cli_support import run_cli

    await render_drafts(data_dir, prompts={"p1": PROMPTS["p1"]})
    row = draft_rows()["p1"]

    code, out, err = run_cli(capsys, "show", row["request_id"], "--no-fal")

    assert code == 0, err
    assert f"{row['image_uri']}  (present, sha256 matches)" in out
    fs, path = url_to_fs(row["image_uri"])
    fs.rm(path)
    code, out, _ = run_cli(capsys, "show", row["request_id"], "--no-fal")
    assert code == 0 and "(missing from the render store)" in out


def test_replay_says_where_the_store_put_its_render(sim, data_dir, bucket, capsys) -> None:
    from falassets_tests.cli.test_cli_support import run_cli

    asyncio.run(render_drafts(data_dir, prompts={"p1": PROMPTS["p1"]}))  # replay runs its own loop
    original = draft_rows()["p1"]

    code, out, err = run_cli(capsys, "replay", original["request_id"])

    assert code == 0, (out, err)
    assert f"image verified at {bucket}/spring/draft/p1-" in out
