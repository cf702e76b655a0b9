"""Issue 11: a SIGKILLed run's requests keep running at fal, so they keep their places under
the machine-wide cap until they finish: a run started at once never has more than the cap
in flight, whether it resumes those requests, renders something else, or starts beside
another run.

Real processes against the emulator: a child renders with concurrency 4 against slow renders
and is SIGKILLed with its whole cap in flight, every request recorded pending. The next
run(s), already started (engine open) and waiting on stdin, are released the moment it is
dead, so they start while all its requests still run (each test checks that it was so).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from falassets.engine.jobs import RenderJob
from falassets_tests.engine.engine_support import billed_inputs, lineage_rows, make_jobs, wait_for
from falassets_tests.engine.fault_support import job_spec

pytestmark = pytest.mark.faults

ENGINE = {"concurrency": 4, "backoff_base_s": 0.02, "backoff_cap_s": 0.2}
SLOW = {"time_scale": 1.0, "latency_low": 4.0}  # 2.8-6 s renders: the orphans outlive the kill
FAST = {"time_scale": 0.02}  # what the next run submits renders in well under a second

CHILD = """
import asyncio, json, sys, time
from falassets.engine.jobs import RenderJob
from falassets.engine.session import open_engine

spec = json.loads(sys.argv[1])
jobs = [RenderJob(**job) for job in spec["jobs"]]

async def main():
    async with open_engine(run_id=spec["run_id"], **spec["config"]) as engine:
        print(json.dumps({"ready": True, "cap": engine.limiter.capacity}), flush=True)
        if spec["wait"]:
            await asyncio.to_thread(sys.stdin.readline)
        print(json.dumps({"started": time.time()}), flush=True)
        async for outcome in engine.render(jobs):
            print(json.dumps({"prompt_id": outcome.job.prompt_id, "status": outcome.status,
                              "error_type": outcome.error_type}), flush=True)

asyncio.run(main())
"""


def _spawn(jobs: list[RenderJob], run_id: str, *, wait: bool) -> tuple[subprocess.Popen[str], int]:
    """A batch in a child process, and its machine-wide in-flight cap (its limiter's slots,
    which is what the engine promises to stay under). With ``wait`` it opens its engine,
    reports ready and starts rendering only when a line arrives on its stdin."""
    spec = {"run_id": run_id, "config": ENGINE, "wait": wait, "jobs": [job_spec(j) for j in jobs]}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()  # blocks until its engine is open
    assert "ready" in line, child.communicate(timeout=30)[1][-3000:]
    return child, json.loads(line)["cap"]


def _go(child: subprocess.Popen[str]) -> float:
    """Release a waiting child; returns the time it started rendering."""
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write("go\n")
    child.stdin.flush()
    return json.loads(child.stdout.readline())["started"]


def _finish(child: subprocess.Popen[str]) -> dict[str, dict[str, Any]]:
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err[-3000:]
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {line["prompt_id"]: line for line in lines if "prompt_id" in line}


def _kill_with_cap_in_flight(sim, jobs: list[RenderJob]) -> set[str]:
    """Render ``jobs`` in a child and SIGKILL it once it has its cap in flight, every one
    recorded pending (the state no slow render can change); their request ids."""
    doomed, cap = _spawn(jobs, "doomed", wait=False)
    try:
        pending = wait_for(
            lambda: (
                ids
                if len(ids := _pending_ids()) == cap and sim.ledger()["totals"]["accepted"] == cap
                else None
            ),
            timeout=60,
            what=f"{cap} pending requests in the doomed run's journal",
        )
        doomed.send_signal(signal.SIGKILL)
    finally:
        doomed.communicate(timeout=30)
    assert doomed.returncode == -signal.SIGKILL
    return pending


def _pending_ids() -> set[str]:
    return {r for r, row in lineage_rows().items() if row["status"] == "pending"}


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _assert_started_while_orphans_ran(ledger: dict[str, Any], orphans: set[str], at: float):
    """The precondition that makes the test mean something: every orphan was still running
    when the next run started (else there was nothing to hold)."""
    ends = [
        _ts(r["completed_at"]) if r["completed_at"] else float("inf")
        for r in ledger["requests"]
        if r["request_id"] in orphans
    ]
    assert len(ends) == len(orphans) and min(ends) > at, (ends, at)


def _configure(sim, mode: str, cap: int) -> None:
    """Slow renders; in reject mode fal takes exactly ``cap`` at once (one more is a 429), in
    queue mode far more, so ``peak_running`` counts all of ours."""
    sim.configure(mode=mode, concurrency=cap if mode == "reject" else 4 * cap, **SLOW)


def _assert_all_recorded_once(ledger: dict[str, Any]) -> None:
    """Every request fal accepted is in lineage, completed, and no input was billed twice."""
    assert max(billed_inputs(ledger).values()) == 1
    rows = lineage_rows()
    assert set(rows) == {r["request_id"] for r in ledger["requests"]}
    assert {row["status"] for row in rows.values()} == {"completed"}


@pytest.mark.parametrize("mode", ["queue", "reject"])
def test_rerun_of_a_killed_batch_stays_under_the_cap(mode: str, sim, data_dir: Path) -> None:
    """The same batch again, new prompts first, so its submits race the resumed requests."""
    jobs = make_jobs(12, tag="again")
    rerun, cap = _spawn(list(reversed(jobs)), "rerun", wait=True)
    _configure(sim, mode, cap)
    orphans = _kill_with_cap_in_flight(sim, jobs)
    sim.configure(**FAST)
    started = _go(rerun)
    outcomes = _finish(rerun)

    ledger = sim.ledger()
    _assert_started_while_orphans_ran(ledger, orphans, started)
    assert ledger["peak_running"] <= cap and ledger["rejected_429"] == 0, (
        ledger["peak_running"],
        ledger["rejected_429"],
    )
    assert {p: o["status"] for p, o in outcomes.items()} == {j.prompt_id: "completed" for j in jobs}
    assert ledger["totals"]["accepted"] == len(jobs)  # the orphans resumed, not resubmitted
    _assert_all_recorded_once(ledger)


def test_another_campaign_waits_for_the_orphans(sim, data_dir: Path) -> None:
    """A run of other prompts resumes nothing, yet the orphans keep their places; the killed
    campaign's next run then collects them without resubmitting."""
    doomed_jobs = make_jobs(12, tag="doomed", campaign="autumn")
    other_jobs = make_jobs(8, tag="other")
    other, cap = _spawn(other_jobs, "other", wait=True)
    _configure(sim, "reject", cap)
    orphans = _kill_with_cap_in_flight(sim, doomed_jobs)
    sim.configure(**FAST)
    started = _go(other)
    outcomes = _finish(other)

    ledger = sim.ledger()
    _assert_started_while_orphans_ran(ledger, orphans, started)
    assert ledger["peak_running"] <= cap and ledger["rejected_429"] == 0, (
        ledger["peak_running"],
        ledger["rejected_429"],
    )
    assert {p: o["status"] for p, o in outcomes.items()} == {
        j.prompt_id: "completed" for j in other_jobs
    }
    assert _pending_ids() == orphans  # still theirs to collect

    collected = _finish(_spawn(doomed_jobs, "collect", wait=False)[0])
    assert {p: o["status"] for p, o in collected.items()} == {
        j.prompt_id: "completed" for j in doomed_jobs
    }
    ledger = sim.ledger()
    assert ledger["totals"]["accepted"] == len(doomed_jobs) + len(other_jobs)
    assert ledger["rejected_429"] == 0
    _assert_all_recorded_once(ledger)


def test_two_runs_starting_at_once_count_each_orphan_once(sim, data_dir: Path) -> None:
    """Two new runs released at the same moment: each orphan is held by exactly one of them,
    never skipped by both (each thinking the other has it)."""
    doomed_jobs = make_jobs(12, tag="doomed", campaign="autumn")
    runs = [make_jobs(8, tag="one"), make_jobs(8, tag="two")]
    children = [_spawn(jobs, f"run-{i}", wait=True) for i, jobs in enumerate(runs)]
    cap = children[0][1]
    _configure(sim, "queue", cap)
    orphans = _kill_with_cap_in_flight(sim, doomed_jobs)
    sim.configure(**FAST)
    for child, _ in children:  # both released before either is read back
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    started = [json.loads(child.stdout.readline())["started"] for child, _ in children]  # type: ignore[union-attr]
    done = [_finish(child) for child, _ in children]

    ledger = sim.ledger()
    _assert_started_while_orphans_ran(ledger, orphans, max(started))
    assert ledger["peak_running"] <= cap, ledger["peak_running"]
    for jobs, outcomes in zip(runs, done, strict=True):
        assert {p: o["status"] for p, o in outcomes.items()} == {
            j.prompt_id: "completed" for j in jobs
        }
    assert ledger["totals"]["accepted"] == len(orphans) + sum(len(jobs) for jobs in runs)
