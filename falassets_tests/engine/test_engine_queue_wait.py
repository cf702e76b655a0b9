"""On a queueing fal (the default: above the account's limit requests wait IN_QUEUE, never
429), waiting in line is not the model hanging (issue 11): ``render_timeout_s`` counts from
IN_PROGRESS, and rows and progress show how long ours waited and how many fal runs at once."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from falassets.cli.progress import PassWatcher
from falassets.engine.progress import format_progress
from falassets.engine.render_engine import Progress
from falassets.pipeline.resources import FalRenderer
from falassets_tests.engine.engine_support import FAST, lineage_rows, make_jobs, wait_for
from falassets_tests.engine.fault_support import spawn_batch


async def test_queue_wait_does_not_count_against_the_render_timeout(sim, data_dir: Path) -> None:
    # One running at a time, ~0.3 s each (at most 0.45 s): the fourth waits ~1 s in line,
    # longer than the 0.8 s timeout, though no render comes near it.
    sim.configure(concurrency=1, latency_low=30.0)
    jobs = make_jobs(4, tag="line")
    seen: list[Progress] = []
    renderer = FalRenderer(concurrency=4, render_timeout_s=0.8)
    async with renderer.engine(run_id="test-run", **FAST) as engine:
        outcomes = []
        async for outcome in engine.render(jobs):
            seen.append(engine.progress())
            outcomes.append(outcome)

    assert [(o.status, o.error_type) for o in outcomes] == [("completed", None)] * 4
    rows = sorted(lineage_rows().values(), key=lambda r: r["started_at"])
    queued = [r["queued_s"] for r in rows]
    assert queued[-1] > 0.8 and queued == sorted(queued)  # each waited behind the previous
    for row in rows:
        started = datetime.fromisoformat(row["started_at"])
        assert datetime.fromisoformat(row["submitted_at"]) <= started
        assert started <= datetime.fromisoformat(row["completed_at"])
    # progress told ours waiting at fal from the one fal runs
    assert any(p.waiting_at_fal >= 1 and p.running_at_fal == 1 for p in seen), seen
    assert any(
        "1 running" in format_progress(p) and "in fal's queue" in format_progress(p) for p in seen
    )


def test_the_cli_progress_tells_running_from_waiting_at_fal(sim, data_dir: Path) -> None:
    """`falassets run` follows a run from another process through the journals: they carry
    what fal last said of each pending request, so its bar shows the level fal grants."""
    # At the suite's time scale (0.01) one runs for 40+ s and two wait behind it
    sim.configure(concurrency=1, latency_low=6000.0)
    jobs = make_jobs(3, tag="split")
    watcher = PassWatcher("draft_renders", len(jobs))
    watcher.add_run("split-run", [job.partition_key for job in jobs])
    child = spawn_batch(jobs, run_id="split-run", concurrency=3, render_timeout_s=600, **FAST)
    try:
        progress = wait_for(
            lambda: (p := watcher.poll()).running_at_fal == 1 and p.waiting_at_fal == 2 and p,
            timeout=60,
            what="one request running at fal and two in its queue, in the CLI's progress",
        )
    finally:
        child.kill()
        child.communicate()
    assert progress.in_flight == 3
    assert "(1 running, 2 in fal's queue)" in format_progress(progress)
