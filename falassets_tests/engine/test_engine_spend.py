"""A run's reported spend is what that run billed (issue 10): two passes over the same inputs at
once (two "render winners" clicks) are billed once per input, and each reports only its own
bills, so the two reported spends add up to the emulator's bill, in the engine's progress and
in the per-run journal figures the `falassets run` progress lines and launch logs print."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from falassets import settings
from falassets.cli.progress import PassWatcher
from falassets.engine.intents import IntentLog
from falassets_tests.engine.engine_support import (
    FAST,
    lineage_rows,
    make_jobs,
    post_to_emulator,
    render_all,
    wait_for,
)
from falassets_tests.engine.fault_support import outcomes_of, reported_spend, spawn_batch


def _stdout(child: subprocess.Popen[str]) -> str:
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err[-3000:]
    return out


def test_two_concurrent_passes_each_report_only_their_own_bills(sim, data_dir: Path) -> None:
    sim.configure(time_scale=1.0, latency_low=2.0)  # the first pass is still waiting on fal
    jobs = make_jobs(4, tag="winners")
    keys = [job.partition_key for job in jobs]
    watchers = {run: PassWatcher("draft_renders", len(jobs)) for run in ("pass-a", "pass-b")}
    for run, watcher in watchers.items():
        watcher.add_run(run, keys)
    first = spawn_batch(jobs, run_id="pass-a", concurrency=4, **FAST)
    second = None
    try:
        wait_for(
            lambda: [r["status"] for r in lineage_rows().values()] == ["pending"] * 4,
            timeout=60,
            what="the first pass's four requests pending at fal",
        )
        # The second pass joins the first one's requests instead of submitting its own.
        second = spawn_batch(jobs, run_id="pass-b", concurrency=4, **FAST)
        out = {"pass-a": _stdout(first), "pass-b": _stdout(second)}
    finally:
        for child in (first, second):
            if child is not None and child.poll() is None:
                child.kill()
                child.communicate()

    for run in out:
        assert {o["status"] for o in outcomes_of(out[run]).values()} == {"completed"}, run
    ledger = sim.ledger()
    assert ledger["totals"]["billed"] == len(jobs)  # once per input
    bill = ledger["totals"]["billed_usd"]
    engine_spend = {run: reported_spend(text) for run, text in out.items()}
    journal_spend = {run: watcher.poll().spend_usd for run, watcher in watchers.items()}
    assert engine_spend == journal_spend == {"pass-a": bill, "pass-b": 0.0}
    assert sum(journal_spend.values()) == pytest.approx(bill)


async def test_a_request_adopted_from_another_runs_submit_is_that_runs_spend(
    sim, data_dir: Path
) -> None:
    """Run B adopts (from fal's history) a request run A sent but had not journalled yet:
    the bill stays with run A; B reports nothing spent."""
    (job,) = make_jobs(1, tag="adopt")
    intents = IntentLog(settings.state_dir() / "intents")
    intents.sent(job.key, "pass-a")  # run A is mid-submit: sent, answer not journalled yet
    intents.close()
    request_id = post_to_emulator(sim, job.input)

    (outcome,) = await render_all([job])  # run "test-run" adopts it

    assert outcome.ok and outcome.request_id == request_id
    assert outcome.cost_usd == 0.0
    assert lineage_rows()[request_id]["run_id"] == "pass-a"
    assert sim.ledger()["totals"]["accepted"] == 1
