"""Draft pass through Dagster on the emulator: wall time against the ideal, Dagster's
per-partition overhead, and peak memory of a 10,000-prompt campaign.

    .venv/bin/python bench/bench_pipeline.py                      # both parts
    .venv/bin/python bench/bench_pipeline.py --skip-big           # 1,000 prompts only
    .venv/bin/python bench/bench_pipeline.py --prompts 200        # a quick look

Part 1: N prompts (default 1,000), one single-run draft pass (``dg.materialize`` over the
whole range, the same run a backfill or ``falassets run`` launches), emulator at time scale 1
(mean low-quality latency ~1.5 s), engine and emulator concurrency 10. Ideal wall time is
N x the emulator's mean render time / 10 (from its ledger, started -> completed); target
<= 1.10 x ideal. Reported: the render step (STEP_START to its end in the event log) and the
whole run (run creation to end, including Dagster's start-up).
Dagster's per-partition overhead is the time the asset spends handing each materialization to
Dagster (stored in the event log before the generator resumes), as the run log reports it.

Part 2: 10,000 prompts, emulator time scale 0.02 (mean latency 0.03 s), reporting wall time
and peak RSS of the run process (each part runs in its own child process; the emulator is a
separate process and not counted). Target: peak RSS < 1 GB.

Part 1 runs twice, side by side against the same emulator: on the DAGSTER_HOME falassets
prepares (its batched SQLite event log, falassets/pipeline/event_log.py) and on Dagster's default
SQLite storage (the baseline; ``--no-baseline`` skips it). The difference is the start-up:
Dagster stores one "materialization planned" event per partition before the step starts.

Measured figures and the conditions they were taken in: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ideal_wall_s(result: dict, concurrency: int) -> float:
    """Prompts x the mean render latency the emulator really drew (from lineage) / concurrency."""
    return result["prompts"] * result["mean_latency_s"] / concurrency


def child(prompts: int, time_scale: float, concurrency: int, storage: str) -> dict:
    """Runs in a fresh process: emulator, data dir, DAGSTER_HOME of its own.

    ``storage`` "falassets": the home falassets prepares (batched SQLite event log);
    "dagster": Dagster's default SQLite storage, the baseline."""
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    os.environ["FALASSETS_DATA_DIR"] = str(work / "data")
    os.environ["DAGSTER_HOME"] = str(work / "dagster_home")
    os.environ.pop("FAL_KEY", None)
    os.environ.pop("DAGSTER_EVENT_BATCH_SIZE", None)
    if storage == "falassets":
        from falassets.pipeline.launch import prepare_dagster_home

        prepare_dagster_home()
    else:
        (work / "dagster_home").mkdir(parents=True)
        (work / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    from falassets.sim.control import SimProcess

    sim = SimProcess.start(
        "--time-scale", str(time_scale), "--concurrency", str(concurrency), "--mode", "queue"
    )
    os.environ.update(sim.env())
    try:
        return _run(work, prompts, concurrency, sim)
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)


def _run(work: Path, prompts: int, concurrency: int, sim) -> dict:
    import csv

    import dagster as dg

    from falassets.pipeline.assets.drafts import draft_renders
    from falassets.pipeline.assets.partitions import RANGE_END_TAG, RANGE_START_TAG
    from falassets.pipeline.assets.prompts import prompts as prompts_asset
    from falassets.pipeline.assets.rendering import EVENT_OVERHEAD_PREFIX
    from falassets.pipeline.resources import FalRenderer

    campaigns = work / "data" / "campaigns"
    campaigns.mkdir(parents=True)
    with (campaigns / "bench.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "prompt", "image_size", "output_format"])
        for i in range(prompts):
            writer.writerow([f"p{i:05d}", f"benchmark prompt {i}: a lighthouse", "square", "jpeg"])
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("campaign", ["bench"])
        dg.materialize([prompts_asset], instance=instance, partition_key="bench")
        keys = instance.get_dynamic_partitions("prompt")
        started_wall = time.time()
        started = time.perf_counter()
        result = dg.materialize(
            [draft_renders],
            instance=instance,
            resources={"fal": FalRenderer(concurrency=concurrency)},
            tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]},
            raise_on_error=False,
        )
        run_s = time.perf_counter() - started
        logs = instance.all_logs(result.run_id)
        events = {
            entry.dagster_event.event_type_value: entry.timestamp
            for entry in logs
            if entry.dagster_event is not None and entry.dagster_event.is_step_event
        }
        step_end = events.get("STEP_SUCCESS") or events.get("STEP_FAILURE")
        step_s = step_end - events["STEP_START"]
        # Run creation (planned events) and the run's start-up, before the first render.
        startup_s = events["STEP_START"] - started_wall
        overhead = next(
            (
                entry.user_message
                for entry in logs
                if (entry.user_message or "").startswith(EVENT_OVERHEAD_PREFIX)
            ),
            "",
        )
        materialized = len(instance.get_materialized_partitions(draft_renders.key))
    # The emulator's own render times (started -> completed), as bench_engine.py uses: what
    # an ideal client with no overhead at all would wait for.
    latencies = [
        datetime.fromisoformat(r["completed_at"]).timestamp()
        - datetime.fromisoformat(r["started_at"]).timestamp()
        for r in sim.ledger()["requests"]
        if r["outcome"] == "ok" and r.get("started_at") and r.get("completed_at")
    ]
    event_s = float(overhead.split()[3].rstrip("s")) if overhead else float("nan")
    return {
        "prompts": prompts,
        "materialized": materialized,
        "run_s": run_s,
        "step_s": step_s,
        "startup_s": startup_s,
        "event_s": event_s,
        "mean_latency_s": sum(latencies) / len(latencies) if latencies else float("nan"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ledger_peak_running": sim.ledger().get("peak_running"),
    }


def spawn(prompts: int, time_scale: float, concurrency: int, storage: str) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(prompts),
            str(time_scale),
            str(concurrency),
            storage,
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--big-prompts", type=int, default=10_000)
    parser.add_argument("--big-time-scale", type=float, default=0.02)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--no-baseline", action="store_true", help="skip Dagster's default storage")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        n, scale, conc, storage = args.child
        print(json.dumps(child(int(n), float(scale), int(conc), storage)))
        return 0

    rows = []
    storages = ["falassets"] if args.no_baseline else ["falassets", "dagster"]
    for storage in storages:
        run = spawn(args.prompts, 1.0, args.concurrency, storage)
        rows.append((f"time scale 1, {storage} storage", run))
    if not args.skip_big:
        big = spawn(args.big_prompts, args.big_time_scale, args.concurrency, "falassets")
        rows.append((f"time scale {args.big_time_scale}, falassets storage", big))

    print(
        "| run | prompts | materialized | ideal s | start-up s | step s | step / ideal "
        "| whole run s | run / ideal | Dagster event s | ms / partition | mean latency s "
        "| peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        ideal_s = ideal_wall_s(r, args.concurrency)
        per = 1000 * r["event_s"] / max(r["materialized"], 1)
        print(
            f"| {name} | {r['prompts']} | {r['materialized']} | {ideal_s:.1f} | "
            f"{r['startup_s']:.1f} | {r['step_s']:.1f} | {r['step_s'] / ideal_s:.3f} | "
            f"{r['run_s']:.1f} | {r['run_s'] / ideal_s:.3f} | "
            f"{r['event_s']:.1f} | {per:.1f} | {r['mean_latency_s']:.3f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    main_run = rows[0][1]
    ok = main_run["run_s"] <= 1.10 * ideal_wall_s(main_run, args.concurrency) and all(
        r["peak_rss_mb"] < 1024 for _, r in rows
    )
    print(f"\ntargets (whole run <= 1.10 x ideal, peak RSS < 1 GB): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
