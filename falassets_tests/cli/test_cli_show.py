"""`falassets show REQUEST_ID`: what lineage knows about one request and what the emulator
(fal's stand-in) still has for it; an unknown id is exit 2 with the way to list ids."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest

from falassets.engine.jobs import RenderOutcome
from falassets.lineage.decisions import record_decisions
from falassets.lineage.variants import request_images
from falassets.sim.control import SimProcess
from falassets_tests.cli.test_cli_support import run_cli
from falassets_tests.engine.engine_support import lineage_rows, make_jobs, render_all


def render_one(words: str = "", **overrides) -> RenderOutcome:
    (outcome,) = asyncio.run(render_all(make_jobs(1, words=words), **overrides))
    return outcome


def test_an_unknown_id_exits_2_naming_it_and_how_to_list_ids(
    sim: SimProcess, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = render_one()

    code, out, err = run_cli(capsys, "show", "no-such-request")

    assert code == 2
    assert out == ""
    assert err.count("\n") == 1, err  # one line, no traceback
    assert "no request 'no-such-request' in lineage" in err
    assert 'falassets lineage "select request_id' in err
    assert "from requests" in err

    # A partial id is not a match, but it is offered.
    partial = outcome.request_id[:8]
    code, _, err = run_cli(capsys, "show", partial)
    assert code == 2
    assert f"no request '{partial}'" in err
    assert f"did you mean {outcome.request_id}" in err


def test_a_completed_request_shows_its_input_cost_files_run_decision_and_fals_answer(
    sim: SimProcess, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = render_one()
    assert outcome.ok
    record_decisions("spring", ["p000"], "pick", source="cli")

    code, out, err = run_cli(capsys, "show", outcome.request_id)

    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"request         {outcome.request_id} (simulated")
    assert "campaign spring · prompt p000 · pass draft · partition spring-p000" in out
    assert json.dumps(outcome.job.input["prompt"]) in out  # the input as sent
    assert "status          completed · HTTP 200 · attempt 1" in out
    assert f"{outcome.image_path}  (present, sha256 matches)" in out
    assert f"sha256 {outcome.sha256}" in out
    assert "cost            $0.0100 · from fal's billable units (1)" in out
    assert "run             test-run (falassets' own id, outside Dagster)" in out
    assert "decision        pick (the reviewer's latest on spring/p000)" in out
    # fal's side, from the emulator: status with logs, then the result it still holds.
    assert "emulator status COMPLETED" in out
    assert "INFO Finished: ok" in out  # the emulator's log lines
    assert "emulator result 1 image(s)" in out
    assert "1024x768" in out

    # A changed file is called out; --no-fal asks nothing of the emulator.
    Path(outcome.image_path).write_bytes(b"tampered")
    http_before = sim.ledger()["http"]
    code, out, _ = run_cli(capsys, "show", outcome.request_id, "--no-fal")
    assert code == 0
    assert "(CHANGED since it was recorded)" in out
    assert "emulator status" not in out
    http_after = sim.ledger()["http"]
    assert {k: v for k, v in http_after.items() if k != "admin"} == {
        k: v for k, v in http_before.items() if k != "admin"
    }


def test_a_failed_request_shows_its_error_and_the_other_attempts_of_its_job(
    sim: SimProcess, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = render_one("SIM_5XX_ONCE")  # fails once at fal, the retry completes
    assert outcome.ok and len(outcome.request_ids) == 2
    failed_id, completed_id = outcome.request_ids

    code, out, err = run_cli(capsys, "show", failed_id, "--no-fal")

    assert code == 0, err
    assert "status          failed · error_type runner_server_error" in out
    assert "attempts        2 requests of this job" in out
    attempt_lines = [line for line in out.splitlines() if completed_id in line]
    assert attempt_lines and "completed" in attempt_lines[0]
    assert "files           none (no output was downloaded)" in out


def test_every_variant_of_a_request_is_listed_and_checked(
    sim: SimProcess, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (job,) = make_jobs(1, tag="trio")
    job = replace(job, input={**job.input, "num_images": 3})
    (outcome,) = asyncio.run(render_all([job]))
    assert outcome.ok
    (row,) = (r for r in lineage_rows().values() if r["request_id"] == outcome.request_id)
    images = request_images(row)
    assert [image["variant"] for image in images] == [1, 2, 3]
    Path(images[1]["image_path"]).write_bytes(b"tampered")  # variant 2 only

    code, out, err = run_cli(capsys, "show", outcome.request_id, "--no-fal")

    assert code == 0, err
    for image in images:
        state = (
            "CHANGED since it was recorded" if image["variant"] == 2 else "present, sha256 matches"
        )
        assert f"variant {image['variant']}       {image['image_path']}  ({state})" in out
        assert f"sha256 {image['sha256']}" in out
        assert f"thumbnail       {image['thumbnail_path']}" in out
