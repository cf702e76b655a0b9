"""Orphans (issue 6): requests fal accepted that no run recorded are found in fal's request
history, recorded in lineage (error_type 'orphan'), reused when they completed, followed when
they are still running, and reported with what they cost.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from falassets import settings
from falassets.engine.intents import IntentLog
from falassets.engine.jobs import RenderJob
from falassets.pipeline.resources import FalRenderer
from falassets_tests.cli.test_cli_support import run_cli
from falassets_tests.engine.engine_support import (
    lineage_rows,
    make_jobs,
    post_to_emulator,
    render_all,
    wait_for,
)
from falassets_tests.engine.fault_support import figures, record

pytestmark = pytest.mark.faults


def _with_word(job: RenderJob, word: str) -> RenderJob:
    return RenderJob(
        **{**job.__dict__, "input": {**job.input, "prompt": f"{job.input['prompt']} {word}"}}
    )


async def _catch_up_history_once_looked_up(sim, lost: int) -> None:
    """fal's history catching up only after each of the ``lost`` submits was looked up in it
    (and missed) at least once: the engine must have waited, not resubmitted."""

    def looked_up() -> bool:
        ledger = sim.ledger()
        sent = sum(1 for r in ledger["requests"] if r.get("submit_lost"))
        return sent >= lost and ledger["http"]["history"] >= lost

    await asyncio.to_thread(wait_for, looked_up, timeout=60, what="look-ups of the lost submits")
    await asyncio.to_thread(sim.configure, history_paused=False)


@pytest.mark.parametrize("mode", ["queue", "reject"])
async def test_lost_submits_wait_for_a_lagging_history_instead_of_paying_twice(
    mode: str, sim, data_dir: Path
) -> None:
    # Renders of ~1 s (session time scale 0.01); fal's history lags behind the submits.
    sim.configure(mode=mode, concurrency=10 if mode == "queue" else 3, latency_low=150.0)
    jobs = make_jobs(10, tag="lag")
    jobs[:3] = [_with_word(j, "SIM_LOSE_SUBMIT_ONCE") for j in jobs[:3]]
    sim.configure(history_paused=True)
    # The engine's look-ups after each lost submit find nothing yet: the job waits (it cannot
    # prove fal never got it) and adopts the request once the history catches up.
    outcomes, _ = await asyncio.gather(
        render_all(jobs, FalRenderer(concurrency=4)),
        _catch_up_history_once_looked_up(sim, lost=3),
    )
    assert all(o.ok for o in outcomes)

    ledger = sim.ledger()
    fig = record(
        figures(
            "lost_submit_history_lag", mode, ledger, {o.job.prompt_id: o.status for o in outcomes}
        )
    )
    assert fig.accepted == 10 and fig.lost_ids == 0 and fig.double_billed == 0
    lost = {r["request_id"] for r in ledger["requests"] if r.get("submit_lost")}
    assert len(lost) == 3 and lost <= set(lineage_rows())  # adopted, recorded, not resent

    again = await render_all(jobs, FalRenderer(concurrency=4))
    assert all(o.reused for o in again)
    assert sim.ledger()["totals"]["accepted"] == 10  # nothing submitted again


async def test_history_lagging_past_the_wait_leaves_unconfirmed_submits_for_reconcile(
    sim, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = make_jobs(6, tag="late")
    jobs[:2] = [_with_word(j, "SIM_LOSE_SUBMIT_ONCE") for j in jobs[:2]]
    sim.configure(history_paused=True)  # still behind when the lost submits stop waiting

    outcomes = await render_all(jobs, FalRenderer(concurrency=4), history_wait_s=0.5)

    by_status = {o.job.prompt_id: (o.status, o.error_type) for o in outcomes}
    assert (
        sorted(v for v in by_status.values() if v[0] != "completed")
        == [("failed", "submit_unconfirmed")] * 2
    )
    lost = {r["request_id"] for r in sim.ledger()["requests"] if r.get("submit_lost")}
    assert len(lost) == 2 and not lost & set(lineage_rows())  # fal has them, we do not yet
    assert sim.ledger()["totals"]["accepted"] == 6  # never sent twice
    sim.configure(history_paused=False)  # fal's history catches up

    code, out, err = await asyncio.to_thread(run_cli, capsys, "reconcile")

    assert code == 0, err
    assert "2 orphan request(s)" in out
    fig = record(
        figures(
            "lost_submit_history_lag_past_wait",
            "queue",
            sim.ledger(),
            {o.job.prompt_id: o.status for o in outcomes},
        )
    )
    assert fig.accepted == 6 and fig.lost_ids == 0 and fig.double_billed == 0
    assert {r["request_id"] for r in lineage_rows().values() if r["error_type"] == "orphan"} == lost
    again = await render_all(jobs, FalRenderer(concurrency=4))
    assert all(o.reused for o in again)
    assert sim.ledger()["totals"]["accepted"] == 6  # nothing submitted again


async def test_reconcile_command_records_reuses_and_follows_orphans(
    sim, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done, running = make_jobs(2, tag="crash")
    intents = IntentLog(settings.state_dir() / "intents")
    for job in (done, running):
        intents.sent(job.key)  # what a process killed mid-submit leaves behind
    intents.close()
    done_id = post_to_emulator(sim, done.input)
    wait_for(
        lambda: all(r["status"] == "COMPLETED" for r in sim.ledger()["requests"]),
        timeout=30,
        what="the first orphan to finish",
    )
    sim.configure(latency_low=100.0)  # ~1 s at the session's time scale: still running
    running_id = post_to_emulator(sim, running.input)
    foreign = post_to_emulator(sim, {**done.input, "prompt": "someone else's render"})

    code, out, err = await asyncio.to_thread(run_cli, capsys, "reconcile")

    assert code == 0, err
    assert "2 orphan request(s)" in out and done_id in out and running_id in out
    rows = lineage_rows()
    assert foreign not in rows  # not one of our jobs: left alone
    assert rows[done_id]["error_type"] == "orphan" and rows[done_id]["status"] == "completed"
    assert Path(rows[done_id]["image_path"]).is_file()
    assert rows[running_id]["status"] == "pending" and rows[running_id]["error_type"] == "orphan"
    assert IntentLog(settings.state_dir() / "intents").open_intents() == {}

    outcomes = {o.job.prompt_id: o for o in await render_all([done, running])}
    assert outcomes[done.prompt_id].reused  # answered from the orphan's record, not billed
    assert outcomes[running.prompt_id].request_id == running_id  # followed, not resubmitted
    assert sim.ledger()["totals"]["accepted"] == 3

    code, out, _ = await asyncio.to_thread(run_cli, capsys, "reconcile")
    assert code == 0 and out.startswith("no orphans")  # idempotent
