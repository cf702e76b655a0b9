"""A run killed while it adopts a dead run's submit from fal's history (the double bill behind
the flaky ``test_sigkill_at_random_points_then_rerun[2-queue]``, ``double_billed=2``).

A submit whose process died between the POST and its row leaves an open intent; the next run
finds the request in fal's history and follows it. Until that request's row is on disk, the
open intent is the only thing that says the input is at fal: closing it first and being
killed before the row lands let the run after submit the input again, billed twice.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from falassets import settings
from falassets.engine.intents import IntentLog
from falassets_tests.engine.engine_support import lineage_rows, make_jobs, post_to_emulator
from falassets_tests.engine.fault_support import outcomes_of, spawn_batch, wait_stopped

pytestmark = pytest.mark.faults

ENGINE = {"concurrency": 2, "backoff_base_s": 0.02, "backoff_cap_s": 0.2}


def _finish(child: subprocess.Popen[str], timeout: float = 120) -> dict:
    out, err = child.communicate(timeout=timeout)
    assert child.returncode == 0, err[-3000:]
    return outcomes_of(out)


@pytest.mark.parametrize("stop_before", ["pending", "completed"])
def test_run_killed_while_adopting_a_submit_never_bills_it_twice(
    stop_before: str, sim, data_dir: Path
) -> None:
    """Killed just before the adopted request's pending row (or, once it is on disk, just
    before its completion): the next run follows that one request; fal bills the input once."""
    sim.configure(time_scale=0.1)
    jobs = make_jobs(1, tag=f"adopt-{stop_before}")
    intents = IntentLog(settings.state_dir() / "intents")
    intents.sent(jobs[0].key, "crashed")  # what a run SIGKILLed mid-submit leaves behind
    intents.close()
    request_id = post_to_emulator(sim, jobs[0].input)  # ...and the request fal accepted

    adopter = spawn_batch(
        jobs,
        run_id="adopter",
        stop_before_row={"request_id": request_id, "status": stop_before},
        **ENGINE,
    )
    try:
        wait_stopped(adopter)  # adopted from history; its row `stop_before` not journalled
    finally:
        adopter.kill()
        adopter.communicate(timeout=30)
    statuses = {rid: row["status"] for rid, row in lineage_rows().items()}
    assert statuses == ({} if stop_before == "pending" else {request_id: "pending"})

    final = _finish(spawn_batch(jobs, run_id="rerun", **ENGINE))

    assert final[jobs[0].prompt_id]["status"] == "completed"
    assert [r["request_id"] for r in sim.ledger()["requests"]] == [request_id]
    row = lineage_rows()[request_id]
    assert row["status"] == "completed" and Path(row["image_path"]).is_file()
