"""Crashes (issue 6): the render process SIGKILLed at seeded random points and run again, and the
emulator itself killed and restarted mid-batch. Every prompt ends rendered exactly once and
billed once, and lineage holds every request id the emulator accepted.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from falassets.engine.jobs import RenderJob, canonical_json
from falassets.sim.control import SimProcess
from falassets_tests.engine.engine_support import billed_inputs, lineage_rows, make_jobs, wait_for
from falassets_tests.engine.fault_support import (
    assert_promises,
    figures,
    journal_line_count,
    outcomes_of,
    record,
    spawn_batch,
)

pytestmark = pytest.mark.faults

KILLS_PER_SEED = 2
#: (seed, emulator mode): 5 seeds x 2 kills = 10 kill points per run of the suite.
CRASH_RUNS = [(1, "queue"), (2, "queue"), (3, "queue"), (4, "reject"), (5, "reject")]
SIM_KNOBS = {
    "queue": {"mode": "queue", "concurrency": 10},
    "reject": {"mode": "reject", "concurrency": 3},
}
ENGINE = {"concurrency": 4, "backoff_base_s": 0.02, "backoff_cap_s": 0.2}


def _jobs(tag: str) -> list[RenderJob]:
    """12 prompts, two of whose submit answers are always lost (adopted from fal's history)."""
    jobs = make_jobs(12, tag=tag)
    for i in (3, 8):
        jobs[i] = RenderJob(
            **{
                **jobs[i].__dict__,
                "input": {**jobs[i].input, "prompt": jobs[i].input["prompt"] + " SIM_LOSE_SUBMIT"},
            }
        )
    return jobs


def _finish(child: subprocess.Popen[str], timeout: float = 120) -> dict:
    out, err = child.communicate(timeout=timeout)
    assert child.returncode == 0, err[-3000:]
    return outcomes_of(out)


def _kill_after_lines(child: subprocess.Popen[str], lines: int) -> bool:
    """SIGKILL once the journals hold ``lines`` lines; False when the child ended first."""
    try:
        wait_for(
            lambda: child.poll() is not None or journal_line_count() >= lines,
            timeout=60,
            what=f"{lines} journal lines",
        )
        if child.poll() is not None:
            return False
        child.send_signal(signal.SIGKILL)
    finally:
        child.communicate(timeout=30)
    return child.returncode == -signal.SIGKILL


@pytest.mark.parametrize(("seed", "mode"), CRASH_RUNS)
def test_sigkill_at_random_points_then_rerun(seed: int, mode: str, sim, data_dir: Path) -> None:
    sim.configure(**SIM_KNOBS[mode], time_scale=0.1)  # ~0.15 s renders: a batch spans ~1 s
    rng = random.Random(seed)
    jobs = _jobs(f"s{seed}")
    kill_points = []
    killed = []
    for kill in range(KILLS_PER_SEED):
        before = journal_line_count()
        # each unfinished prompt writes at least one more line (its completion)
        unfinished = len(jobs) - sum(r["status"] == "completed" for r in lineage_rows().values())
        point = before + rng.randint(1, max(1, unfinished if kill else 2 * unfinished - 2))
        kill_points.append(point)
        child = spawn_batch(jobs, run_id=f"doomed-{seed}-{kill}", **ENGINE)
        killed.append(_kill_after_lines(child, point))
    assert all(killed), f"a batch finished before its kill point: {kill_points}"

    # A kill between the submit note and the POST leaves an input fal may or may not have;
    # fal's history cannot prove a short batch's absence, so the rerun waits, then records it
    # submit_unconfirmed and does not send it (README: run again with --force).
    final = _finish(spawn_batch(jobs, run_id=f"rerun-{seed}", history_wait_s=1.0, **ENGINE))
    unconfirmed = [p for p, o in final.items() if o["error_type"] == "submit_unconfirmed"]
    accepted_inputs = [canonical_json(r["input"]) for r in sim.ledger()["requests"]]
    for job in jobs:
        if job.prompt_id in unconfirmed:  # only ever an input fal really never got
            assert canonical_json(job.input) not in accepted_inputs, (job.prompt_id, kill_points)
    if unconfirmed:
        forced = [replace(j, force=True) for j in jobs if j.prompt_id in unconfirmed]
        final.update(_finish(spawn_batch(forced, run_id=f"forced-{seed}", **ENGINE)))

    assert {pid: o["status"] for pid, o in final.items()} == {
        j.prompt_id: "completed" for j in jobs
    }, kill_points
    ledger = sim.ledger()
    fig = record(
        figures(f"sigkill_seed_{seed}", mode, ledger, {p: o["status"] for p, o in final.items()})
    )
    assert_promises(fig)
    # rendered exactly once: every input billed once, and its one render is what lineage holds
    assert fig.billed == len(jobs), (kill_points, fig)
    completed = [r for r in lineage_rows().values() if r["status"] == "completed"]
    assert sorted(r["prompt_id"] for r in completed) == sorted(j.prompt_id for j in jobs)
    assert all(Path(r["image_path"]).is_file() for r in completed)


@pytest.mark.parametrize("mode", ["queue", "reject"])
def test_emulator_killed_and_restarted_mid_batch(mode: str, data_dir: Path) -> None:
    knobs = SIM_KNOBS[mode]
    state = Path(tempfile.mkdtemp(prefix="falassets-sim-state-")) / "state.jsonl"
    with SimProcess.start(
        "--time-scale",
        "0.3",
        "--mode",
        mode,
        "--concurrency",
        str(knobs["concurrency"]),
        "--state-file",
        str(state),
    ) as own_sim:
        jobs = make_jobs(12, tag=f"restart{mode}")
        # retries spread over ~3 s so a submit during the outage waits for the restart
        child = spawn_batch(
            jobs,
            run_id="through-restart",
            env=own_sim.env(),
            concurrency=4,
            backoff_base_s=0.4,
            backoff_cap_s=2.0,
            retry_budget=5,
        )
        try:
            wait_for(
                lambda: sum(r["status"] == "completed" for r in lineage_rows().values()) >= 3,
                timeout=60,
                what="three completed renders before the emulator dies",
            )
            own_sim.kill()
            own_sim.restart()
            first = _finish(child)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
        failed = [j for j in jobs if first.get(j.prompt_id, {}).get("status") != "completed"]
        final = dict(first)
        if failed:  # what the outage outlasted the retry budget for: the next run renders it
            final.update(
                _finish(
                    spawn_batch(failed, run_id="after-restart", env=own_sim.env(), concurrency=4)
                )
            )
        statuses = {pid: o["status"] for pid, o in final.items()}
        assert statuses == {j.prompt_id: "completed" for j in jobs}
        fig = record(figures("emulator_restart", mode, own_sim.ledger(), statuses))
    assert_promises(fig)
    assert fig.billed == len(jobs) and fig.wasted_usd == 0


def test_request_finished_while_emulator_down_is_collected_not_resubmitted(data_dir: Path) -> None:
    """fal finished (and billed) a request; the way to its result and output is gone for longer
    than the batch retries. The next run collects that request: it never submits the input
    again (the double bill behind the flaky restart test of issue 10)."""
    state = Path(tempfile.mkdtemp(prefix="falassets-sim-state-")) / "state.jsonl"
    with SimProcess.start("--latency-low", "3.0", "--state-file", str(state)) as own_sim:
        jobs = make_jobs(1, tag="uncollected")
        fast = {"concurrency": 1, "backoff_base_s": 0.05, "backoff_cap_s": 0.2, "retry_budget": 2}
        child = spawn_batch(jobs, run_id="collect-1", env=own_sim.env(), **fast)
        try:
            wait_for(
                lambda: (
                    own_sim.ledger()["http"]["stream"] >= 1
                    and [r["status"] for r in lineage_rows().values()] == ["pending"]
                ),
                timeout=60,
                what="the request recorded pending and its status stream open",
            )
            # Freeze the engine while fal completes the request: the COMPLETED event waits in
            # the engine's socket; the emulator then dies before the engine reads it.
            os.kill(child.pid, signal.SIGSTOP)
            wait_for(
                lambda: own_sim.ledger()["requests"][0]["status"] == "COMPLETED",
                timeout=60,
                what="the request completed at the emulator",
            )
            own_sim.ledger()  # served after the stream task ran: the event is in the socket
            own_sim.kill()
            os.kill(child.pid, signal.SIGCONT)
            first = _finish(child)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
        assert first[jobs[0].prompt_id]["status"] == "failed"
        (request_id,) = lineage_rows()
        assert lineage_rows()[request_id]["status"] == "pending"  # left to collect, unbilled

        own_sim.restart()
        second = _finish(spawn_batch(jobs, run_id="collect-2", env=own_sim.env(), **fast))
        ledger = own_sim.ledger()
    assert second[jobs[0].prompt_id]["status"] == "completed"
    assert [r["request_id"] for r in ledger["requests"]] == [request_id]
    assert max(billed_inputs(ledger).values()) == 1
    row = lineage_rows()[request_id]
    assert row["status"] == "completed" and Path(row["image_path"]).is_file()
