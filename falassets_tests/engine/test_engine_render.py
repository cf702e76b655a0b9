"""The render engine against the emulator: faults, refusals, reuse, budget, caps, lineage.

Every test compares what the engine recorded with what the emulator's ledger says happened,
so "every request id recorded" and "no job billed twice" are checked against ground truth.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from falassets.engine.downloads import file_sha256
from falassets.engine.jobs import RenderJob
from falassets.engine.render_engine import FalAuthError
from falassets.lineage.schema import REQUEST_COLUMNS
from falassets.pipeline.resources import FalRenderer
from falassets_tests.engine.engine_support import (
    FAST,
    all_journal_lines,
    billed_inputs,
    files_exist,
    lineage_rows,
    make_jobs,
    render_all,
    request_http_total,
)


def _with_prompt_word(job: RenderJob, word: str) -> RenderJob:
    return RenderJob(
        partition_key=job.partition_key,
        campaign=job.campaign,
        prompt_id=job.prompt_id,
        pass_name=job.pass_name,
        input={**job.input, "prompt": f"{job.input['prompt']} {word}"},
    )


async def test_faults_are_survived_and_every_request_is_in_lineage(sim, data_dir: Path) -> None:
    jobs = make_jobs(12)
    jobs[1] = _with_prompt_word(jobs[1], "SIM_5XX_ONCE")
    jobs[2] = _with_prompt_word(jobs[2], "SIM_503")
    jobs[3] = _with_prompt_word(jobs[3], "SIM_LOSE_SUBMIT_ONCE")
    outcomes = {o.job.prompt_id: o for o in await render_all(jobs)}

    assert {o.status for o in outcomes.values()} == {"completed"}
    assert files_exist(list(outcomes.values()))
    for outcome in outcomes.values():
        assert file_sha256(outcome.image_path) == outcome.sha256
        assert outcome.thumbnail_path is not None and outcome.thumbnail_path.is_file()
        assert (outcome.width, outcome.height) == (1024, 768)

    ledger = sim.ledger()
    rows = lineage_rows()
    # Every request the emulator accepted is in lineage, and lineage invents none.
    accepted = {r["request_id"] for r in ledger["requests"]}
    assert accepted == {rid for rid in rows if not rid.startswith(("lost-", "rejected-"))}
    assert max(billed_inputs(ledger).values()) == 1  # no input billed twice

    retried = outcomes[jobs[1].prompt_id]
    assert len(retried.request_ids) == 2
    first = rows[retried.request_ids[0]]
    assert (first["status"], first["error_type"], first["http_status"]) == (
        "failed",
        "runner_server_error",
        500,
    )
    assert first["cost_usd"] == 0.0  # 5xx is not billed
    # The lost submit was adopted from fal's history, not sent again.
    lost = outcomes[jobs[3].prompt_id]
    assert len(lost.request_ids) == 1
    assert [r["submit_lost"] for r in ledger["requests"] if r["request_id"] == lost.request_id] == [
        True
    ]
    # Full snapshots with every column, pending before completed.
    lines = all_journal_lines()
    assert all(set(REQUEST_COLUMNS) <= set(line) for line in lines)
    statuses = [line["status"] for line in lines if line["request_id"] == lost.request_id]
    assert statuses == ["pending", "completed"]
    assert all(line["simulated"] is True and line["run_id"] == "test-run" for line in lines)
    # Efficient waiting: far fewer HTTP requests than polling would need.
    assert request_http_total(ledger) / len(jobs) <= 8


async def test_refusals_are_recorded_and_never_retried(sim, data_dir: Path) -> None:
    jobs = make_jobs(3)
    jobs[0] = _with_prompt_word(jobs[0], "something forbidden")
    jobs[1] = RenderJob(
        partition_key=jobs[1].partition_key,
        campaign=jobs[1].campaign,
        prompt_id=jobs[1].prompt_id,
        pass_name="draft",
        input={**jobs[1].input, "quality": "ultra"},
    )
    outcomes = {o.job.prompt_id: o for o in await render_all(jobs)}

    policy = outcomes[jobs[0].prompt_id]
    assert (policy.status, policy.error_type, policy.http_status) == (
        "failed",
        "content_policy_violation",
        422,
    )
    assert len(policy.request_ids) == 1
    invalid = outcomes[jobs[1].prompt_id]
    assert (invalid.status, invalid.error_type, invalid.http_status) == ("failed", "enum", 422)
    assert outcomes[jobs[2].prompt_id].ok

    ledger = sim.ledger()
    assert ledger["http"]["submit"] == 3  # one submit each: nothing was retried
    rows = lineage_rows()
    assert rows[policy.request_id]["error_type"] == "content_policy_violation"
    assert rows[policy.request_id]["cost_usd"] == 0.0
    assert rows[invalid.request_id]["status"] == "failed"  # refused at the door, still recorded


async def test_wrong_key_stops_the_batch_and_never_shows_the_key(
    sim, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "wrong-secret-key-5f2b7c"
    sim.configure(valid_key="the-right-key")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(FalAuthError) as caught:
        await render_all(make_jobs(40), FalRenderer(fal_key=secret, concurrency=4))
    assert "FAL_KEY" in str(caught.value)
    assert secret not in str(caught.value)
    assert secret not in caplog.text
    ledger = sim.ledger()
    assert ledger["totals"]["accepted"] == 0
    assert ledger["http"]["submit"] <= 4  # stopped at once, not after 40 tries
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


async def test_an_untrusted_host_certificate_stops_the_batch_with_the_fix(
    sim, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import certifi

    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())  # a bundle without the emulator's CA
    with pytest.raises(FalAuthError) as caught:
        await render_all(make_jobs(40), FalRenderer(concurrency=4))
    assert caught.value.untrusted_host
    assert "SSL_CERT_FILE" in str(caught.value)  # the fix, not 40 failed renders
    assert sim.ledger()["totals"]["accepted"] == 0
    assert lineage_rows() == {}


async def test_concurrency_cap_is_held_at_the_server(sim, data_dir: Path) -> None:
    sim.configure(time_scale=0.1)  # 150 ms renders: long enough that requests overlap
    outcomes = await render_all(make_jobs(24), FalRenderer(concurrency=3))
    assert all(o.ok for o in outcomes)
    assert sim.ledger()["peak_running"] == 3


async def test_reject_mode_adapts_without_a_429_storm(sim, data_dir: Path) -> None:
    sim.configure(mode="reject", concurrency=2)
    outcomes = await render_all(make_jobs(30), FalRenderer(concurrency=6))
    assert all(o.ok for o in outcomes)
    ledger = sim.ledger()
    assert ledger["totals"]["accepted"] == 30
    assert max(billed_inputs(ledger).values()) == 1
    # After the first halvings the target settles at or below the account's limit.
    assert ledger["rejected_429"] <= 10


async def test_hung_request_is_cancelled_and_recorded(sim, data_dir: Path) -> None:
    jobs = [_with_prompt_word(make_jobs(1)[0], "SIM_HANG")]
    (outcome,) = await render_all(jobs, FalRenderer(concurrency=2, render_timeout_s=0.5))
    assert (outcome.status, outcome.error_type) == ("cancelled", "timeout")
    ledger = sim.ledger()
    assert [r["cancel_requested"] for r in ledger["requests"]] == [True]
    assert lineage_rows()[outcome.request_id]["status"] == "cancelled"


async def test_expired_result_is_resubmitted_once(sim, data_dir: Path) -> None:
    once, always = make_jobs(2)
    once = _with_prompt_word(once, "SIM_EXPIRE_ONCE")
    always = _with_prompt_word(always, "SIM_EXPIRE")
    outcomes = {o.job.prompt_id: o for o in await render_all([once, always])}
    recovered, lost = outcomes[once.prompt_id], outcomes[always.prompt_id]
    assert recovered.ok and len(recovered.request_ids) == 2
    assert (lost.status, lost.error_type) == ("failed", "result_expired")
    assert len(lost.request_ids) == 2  # resubmitted once, not forever
    rows = lineage_rows()
    assert rows[recovered.request_ids[0]]["error_type"] == "result_expired"


async def test_identical_job_is_answered_from_the_record(sim, data_dir: Path) -> None:
    jobs = make_jobs(3)
    first = {o.job.prompt_id: o for o in await render_all(jobs)}
    again = await render_all(jobs)
    assert all(o.reused and o.ok and o.cost_usd == 0 for o in again)
    assert {o.job.prompt_id: o.sha256 for o in again} == {k: o.sha256 for k, o in first.items()}
    assert sim.ledger()["totals"]["accepted"] == 3  # no new request, no new bill

    forced = RenderJob(**{**jobs[0].__dict__, "force": True})
    first[jobs[1].prompt_id].image_path.unlink()  # a render whose file is gone is rendered again
    redo = {o.job.prompt_id: o for o in await render_all([forced, jobs[1], jobs[2]])}
    assert not redo[jobs[0].prompt_id].reused
    assert not redo[jobs[1].prompt_id].reused
    assert redo[jobs[2].prompt_id].reused
    assert sim.ledger()["totals"]["accepted"] == 5


async def test_duplicate_jobs_in_one_batch_are_rendered_once(sim, data_dir: Path) -> None:
    job = make_jobs(1)[0]
    outcomes = await render_all([job, job, job])
    assert all(o.ok for o in outcomes)
    assert sum(o.reused for o in outcomes) == 2
    assert sim.ledger()["totals"]["accepted"] == 1


async def test_budget_cap_stops_submitting_and_says_so(
    sim, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # low quality at 1024x768 costs $0.01 a render: $0.035 pays for three.
    outcomes = await render_all(make_jobs(6), FalRenderer(concurrency=1, budget_usd=0.035))
    statuses = sorted(o.status for o in outcomes)
    assert statuses == ["completed"] * 3 + ["skipped"] * 3
    assert {o.error_type for o in outcomes if o.status == "skipped"} == {"budget_exceeded"}
    assert sim.ledger()["totals"]["billed_usd"] <= 0.035
    assert "Budget cap" in caplog.text and "skipped" in caplog.text


async def test_jobs_are_pulled_lazily_with_bounded_memory(sim, data_dir: Path) -> None:
    pulled = 0

    def feed():
        nonlocal pulled
        for job in make_jobs(10_000, tag="lazy"):
            pulled += 1
            yield job

    renderer = FalRenderer(concurrency=2)
    async with renderer.engine(run_id="lazy", **FAST) as engine:
        results = engine.render(feed())
        firsts = []
        async for outcome in results:
            firsts.append(outcome)
            if len(firsts) == 3:
                break
        await results.aclose()
        progress = engine.progress()
    assert len(firsts) == 3 and all(o.ok for o in firsts)
    workers = 4 * 2 + 4  # the default worker count for concurrency 2
    assert pulled <= 3 + 2 * workers  # a handful beyond what finished, never 10,000
    assert progress.done >= 3
