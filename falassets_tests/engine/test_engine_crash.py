"""Crash safety and the machine-wide cap, with real processes.

A batch SIGKILLed while requests are in flight is resumed by the next run from its journal
(status, then result) without submitting those requests again; two processes rendering at
once share one cap.
"""

from __future__ import annotations

import signal
from pathlib import Path

from falassets.pipeline.resources import FalRenderer
from falassets_tests.engine.engine_support import (
    billed_inputs,
    files_exist,
    lineage_rows,
    make_jobs,
    render_all,
    spawn_engine,
    wait_for,
)


async def test_sigkilled_batch_is_resumed_without_resubmitting(sim, data_dir: Path) -> None:
    sim.configure(time_scale=1.0, latency_low=3.0)  # long enough to kill mid-flight
    jobs = make_jobs(8, tag="crash")
    child = spawn_engine(jobs, concurrency=4, run_id="doomed", env={})
    try:
        pending = wait_for(
            lambda: (
                [r for r in lineage_rows().values() if r["status"] == "pending"][:4]
                if len([r for r in lineage_rows().values() if r["status"] == "pending"]) >= 4
                else None
            ),
            timeout=30,
            what="four pending requests in the doomed run's journal",
        )
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    in_flight = {r["request_id"] for r in pending}
    assert {r["request_id"] for r in sim.ledger()["requests"]} == in_flight

    sim.configure(time_scale=0.01)  # the rest of the batch renders fast
    outcomes = await render_all(jobs, FalRenderer(concurrency=4))

    assert all(o.ok for o in outcomes) and files_exist(outcomes)
    ledger = sim.ledger()
    assert ledger["totals"]["accepted"] == 8  # 4 resumed + 4 new, nothing twice
    assert max(billed_inputs(ledger).values()) == 1
    resumed = {o.request_id for o in outcomes} & in_flight
    assert resumed == in_flight
    rows = lineage_rows()
    # collected by this run, billed to (and counted in the spend of) the run that submitted it
    assert all(
        rows[rid]["status"] == "completed" and rows[rid]["run_id"] == "doomed" for rid in in_flight
    )


async def test_two_processes_hold_one_machine_wide_cap(sim, data_dir: Path) -> None:
    sim.configure(time_scale=0.05)  # ~75 ms renders: long enough to overlap
    first = spawn_engine(make_jobs(15, tag="a"), concurrency=3, run_id="a", env={})
    second = spawn_engine(make_jobs(15, tag="b"), concurrency=3, run_id="b", env={})
    out_a, err_a = first.communicate(timeout=120)
    out_b, err_b = second.communicate(timeout=120)
    assert first.returncode == 0, err_a
    assert second.returncode == 0, err_b
    assert out_a.count('"completed"') == 15 and out_b.count('"completed"') == 15
    ledger = sim.ledger()
    assert ledger["totals"]["accepted"] == 30
    assert ledger["peak_running"] == 3  # not 6: the slots are shared through the kernel
