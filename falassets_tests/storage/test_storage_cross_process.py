"""A whole draft pass, run by `falassets run` in another process, against object storage.

``simplecache::file:///...`` is an fsspec filesystem that is not a local folder to falassets
(no rename, no path: whole-file puts and reads through fsspec, as with s3://), yet its bytes
cross processes: what the pass's process writes, this one reads. A user relies on the pass
putting every render in the bucket and recording it by URI, on Dagster's metadata naming it,
on the review page in another process serving it, and on the next `falassets run` finding
it there (nothing sent again).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from falassets import settings
from falassets_tests.cli.test_cli_support import use_dagster_home, write_csv
from falassets_tests.review.test_review_support import ReviewServer
from falassets_tests.storage.storage_support import PROMPTS, draft_rows, sha256, stored_bytes

#: Wall-clock budget for one `falassets run` of three prompts on a loaded 2-core machine
#: (start-up, Dagster's runs, the renders at time scale 0.01).
RUN_BUDGET_S = 240


def falassets(*argv: str) -> subprocess.CompletedProcess[str]:
    """`falassets ARGV` in a new Python process, with this test's environment."""
    return subprocess.run(
        [sys.executable, "-m", "falassets.cli", *argv],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=RUN_BUDGET_S,
    )


def test_a_draft_pass_in_another_process_uses_object_storage(
    sim, data_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch
) -> None:
    use_dagster_home(data_dir, monkeypatch)
    bucket = tmp_path_factory.mktemp("bucket")
    uri = f"simplecache::{bucket.as_uri()}/renders"
    monkeypatch.setenv("FALASSETS_RENDERS_URI", uri)
    source = write_csv(data_dir / "incoming" / "spring.csv", PROMPTS)

    done = falassets("run", str(source), "--plain")

    assert done.returncode == 0, (done.stdout, done.stderr)
    assert f"{len(PROMPTS)} succeeded, 0 failed" in done.stdout
    rows = draft_rows()
    assert set(rows) == set(PROMPTS)
    for prompt_id, row in rows.items():
        assert row["image_uri"].startswith(f"{uri}/spring/draft/{prompt_id}-"), row["image_uri"]
        assert row["image_path"] == row["image_uri"]
        key = row["image_uri"][len(uri) + 1 :]
        assert (bucket / "renders" / key).read_bytes() == stored_bytes(row["image_uri"])
        assert sha256(stored_bytes(row["image_uri"])) == row["sha256"]
    assert not settings.renders_dir().exists()

    # Dagster's materializations name the URI and carry a thumbnail read from the bucket.
    instance = dg.DagsterInstance.get()
    for prompt_id, row in rows.items():
        record = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("draft_renders"), asset_partitions=[f"spring-{prompt_id}"]
            ),
            limit=1,
        ).records[0]
        metadata = record.asset_materialization.metadata
        assert metadata["image_path"].value == row["image_uri"]
        assert metadata["image_uri"].value == row["image_uri"]
        assert metadata["thumbnail"].value.startswith(f"![{prompt_id}](data:image/webp")

    # The review page, in this process, serves what the pass's process stored.
    with ReviewServer(budget_usd=None) as server:
        items = server.request("GET", "/api/campaigns/spring").json()["items"]
        for item in items:
            reply = server.request("GET", item["draft"]["image"])
            assert reply.status == 200
            assert reply.body == stored_bytes(rows[item["id"]]["image_uri"])

    # The next pass finds every render in the bucket: nothing to render, nothing sent.
    again = falassets("run", str(source), "--plain")
    assert again.returncode == 0, (again.stdout, again.stderr)
    assert "Nothing to render" in again.stdout
    assert sim.ledger()["totals"]["accepted"] == len(PROMPTS)
