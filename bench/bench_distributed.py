"""A draft pass on two worker hosts (issue 13): whole run against the ideal, and Dagster's
per-partition cost on Postgres beside SQLite's.

    .venv/bin/python bench/bench_distributed.py --limit 10 --partitions-per-run 50
    .venv/bin/python bench/bench_distributed.py --limit 40 --partitions-per-run 250
    .venv/bin/python bench/bench_distributed.py --prompts 100 --latency-low 0.3   # a quick look

Cases, run one after the other in one invocation against the same emulator (queue mode,
account limit ``--limit``, time scale 1, mean low-quality latency ``--latency-low``):

- ``postgres``: the deployment of ``falassets_tests/deploy/test_two_hosts.py``. A private
  PostgreSQL and Redis (``falassets_tests/services.py``), ``--hosts`` worker "hosts" (each
  ``falassets worker`` in a session of its own with its own DAGSTER_HOME, TMPDIR, HOME and
  working directory), and ``falassets run`` on a launching "host" of its own with
  FALASSETS_EXECUTOR=celery and FALASSETS_PARTITIONS_PER_RUN=K. The fal cap is the Postgres one.
- ``sqlite``: the embedded default on one host (no FALASSETS_* deployment variable: SQLite
  with falassets' batched event log, the in-process executor, one run, the flock cap), the
  same prompts.

Measured per case:

- whole run: wall time of the ``falassets run`` command (interpreter start, campaign check,
  the ``prompts`` run, every draft run, the summary), and the pass alone (first draft run
  created -> last draft run ended, from Dagster's run records).
- ideal: prompts x the mean render time the emulator really drew (its ledger, started ->
  completed, as bench_engine.py and bench_pipeline.py compute it) / limit.
- fal busy: the ledger's render seconds / (limit x first start -> last completion): how full
  the account was kept while the pass rendered. Run start-up: a draft run's creation -> its
  render step's STEP_START (on a worker host for celery), median and max.
- ms / materialization: the time the asset spends handing each materialization to Dagster
  (stored in the event log before the generator resumes), summed over the runs from the
  "Dagster event handling" line each run logs (pipeline/assets/rendering.py), the measure
  bench_pipeline.py reads. For celery that line reaches the Postgres event log from the
  worker host.
- peak running and HTTP requests per render from the emulator's ledger.
- CPU ms per render of each part: the launching command with its run processes (reaped
  children), the worker hosts' process trees, Postgres, Redis and the emulator (``/proc``).

``--json FILE`` also writes each case's timeline (runs, planned events, renders at fal).

Measured figures and the conditions they were taken in: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PY = sys.executable

from falassets_tests.deploy.worker_hosts import Host, wait_for_workers  # noqa: E402 (after sys.path)

WORKER_START_S = 300.0  # a worker imports Dagster and the definitions: slow on a loaded box
RUN_TIMEOUT_S = 3600.0


# -- the launching host's view of the runs (a child process with the case's environment) ------


def inspect_runs() -> dict[str, Any]:
    """Dagster's records of the draft runs in DAGSTER_HOME (run in a child process whose
    environment is the launching host's)."""
    import dagster as dg

    from falassets.pipeline.assets.rendering import EVENT_OVERHEAD_PREFIX

    runs = []
    with dg.DagsterInstance.get() as instance:
        for record in instance.get_run_records():
            run = record.dagster_run
            step_start = None
            event_s, handed = 0.0, 0
            first: list[tuple[str, float]] = []  # what happened up to the first render's event
            planned: tuple[float | None, float | None] = (None, None)  # first, last planned event
            for entry in instance.all_logs(run.run_id):
                event = entry.dagster_event
                kind = event.event_type_value if event else (entry.user_message or "")[:60]
                if kind == "ASSET_MATERIALIZATION_PLANNED":
                    planned = (planned[0] or entry.timestamp, entry.timestamp)
                    continue
                if not any(name == "ASSET_MATERIALIZATION" for name, _ in first):
                    first.append((kind, entry.timestamp))
                if kind == "STEP_START":
                    step_start = entry.timestamp
                message = entry.user_message or ""
                if message.startswith(EVENT_OVERHEAD_PREFIX):
                    # "Dagster event handling: 1.23s for 25 materializations (49.2 ms each)"
                    words = message[len(EVENT_OVERHEAD_PREFIX) :].split()
                    event_s += float(words[0].rstrip("s"))
                    handed += int(words[2])
            runs.append(
                {
                    "job": run.job_name,
                    "planned": planned,
                    "created": record.create_timestamp.timestamp(),
                    "started": record.start_time,
                    "ended": record.end_time,
                    "step_start": step_start,
                    "status": run.status.value,
                    "event_s": event_s,
                    "materializations": handed,
                    "first_events": first,
                }
            )
    return {"runs": runs}


# -- worker hosts (as falassets_tests/deploy/test_two_hosts.py starts them) --------------------


# -- CPU ------------------------------------------------------------------------------------


def tree_cpu_s(root: int) -> float:
    """CPU seconds of a process, its live descendants and the children they reaped."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:  # utime, stime, cutime, cstime
            total += sum(int(v) for v in stats[pid][11:15]) / tick
        todo += children.get(pid, [])
    return total


def cpu_now(sim: Any, services: dict[str, Any], hosts: list[Host]) -> dict[str, float]:
    """CPU seconds so far of each long-lived part (the launching command is measured apart)."""
    parts = {"emulator": tree_cpu_s(sim.pid)}
    parts |= {name: tree_cpu_s(server.process.pid) for name, server in services.items()}
    parts["workers"] = sum(tree_cpu_s(host.process.pid) for host in hosts if host.process)
    return parts


# -- one case ---------------------------------------------------------------------------------


def write_campaign(folder: Path, prompts: int) -> Path:
    path = folder / "bench.csv"
    rows = "".join(
        f"p{i:05d},benchmark prompt {i}: a lighthouse,square,jpeg\n" for i in range(prompts)
    )
    path.write_text("id,prompt,image_size,output_format\n" + rows)
    return path


def base_env(sim: Any, shared: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FALASSETS_", "DAGSTER_"))}
    env.pop("FAL_KEY", None)
    return {**env, **sim.env(), "FALASSETS_DATA_DIR": str(shared), "PYTHONPATH": str(REPO)}


def seconds(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def measure(
    case: str,
    args: argparse.Namespace,
    sim: Any,
    services: dict[str, Any],
    root: Path,
) -> dict[str, Any]:
    shared, launcher = root / case / "shared", root / case / "launcher"
    shared.mkdir(parents=True)
    launcher.mkdir(parents=True)
    env = base_env(sim, shared)
    hosts: list[Host] = []
    at_once = 1
    if case == "postgres":
        from falassets.pipeline.deployment import runs_at_once

        runs = math.ceil(args.prompts / args.partitions_per_run)
        at_once = runs_at_once(runs, args.limit, args.partitions_per_run)
        per_host = args.worker_concurrency or math.ceil(at_once / args.hosts)
        broker = services["redis"].url.rsplit("/", 1)[0] + f"/{args.limit % 16}"
        env |= {
            "FALASSETS_POSTGRES_URL": services["postgres"].new_database(f"bench_{args.limit}"),
            "FALASSETS_EXECUTOR": "celery",
            "FALASSETS_CELERY_BROKER": broker,
            "FALASSETS_PARTITIONS_PER_RUN": str(args.partitions_per_run),
        }
        hosts = [
            Host(f"host-{i}", root / case / f"host-{i}", env, per_host) for i in range(args.hosts)
        ]
        for host in hosts:
            host.start()
        wait_for_workers(hosts, broker, WORKER_START_S)
    env["DAGSTER_HOME"] = str(launcher / "dagster_home")
    campaign = write_campaign(launcher, args.prompts)
    try:
        sim.reset()
        load_before = os.getloadavg()
        cpu_before = cpu_now(sim, services, hosts)
        reaped_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.time()
        command = subprocess.Popen(
            [
                *(PY, "-m", "falassets.cli", "run", str(campaign), "--plain"),
                *("--concurrency", str(args.limit)),
            ],
            env=env,
            cwd=launcher,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert command.stdout is not None
        lines = [(time.time() - started, line) for line in command.stdout]  # when each came
        command.wait(RUN_TIMEOUT_S)
        wall_s = time.time() - started
        load_after = os.getloadavg()
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = {
            name: value - cpu_before[name]
            for name, value in cpu_now(sim, services, hosts).items()
            if name != "workers" or hosts
        }
        cpu["launcher"] = (reaped.ru_utime + reaped.ru_stime) - (
            reaped_before.ru_utime + reaped_before.ru_stime
        )
    finally:
        for host in hosts:
            host.stop()
    summary = f"{args.prompts} succeeded, 0 failed"
    output = "".join(line for _, line in lines)
    if command.returncode != 0 or summary not in output:
        raise SystemExit(f"{case}: falassets run failed ({command.returncode}):\n{output[-3000:]}")
    summary_s = next(t for t, line in lines if summary in line)
    inspected = subprocess.run(
        [PY, __file__, "--inspect"], env=env, capture_output=True, text=True, check=True
    )
    every_run = json.loads(inspected.stdout.strip().splitlines()[-1])["runs"]
    runs = [r for r in every_run if r["job"] == "draft_pass"]
    prep = sorted((r for r in every_run if r["job"] != "draft_pass"), key=lambda r: r["created"])
    ledger = sim.ledger()
    done = [r for r in ledger["requests"] if r["outcome"] == "ok"]
    starts = [seconds(r["started_at"]) for r in done]
    ends = [seconds(r["completed_at"]) for r in done]
    latencies = [e - s for s, e in zip(starts, ends, strict=True)]
    mean_latency = statistics.mean(latencies)
    ideal_s = args.prompts * mean_latency / args.limit
    render_span = max(ends) - min(starts)
    run_startups = [r["step_start"] - r["created"] for r in runs if r["step_start"]]
    event_s = sum(r["event_s"] for r in runs)
    handed = sum(r["materializations"] for r in runs)
    pass_s = max(r["ended"] for r in runs) - min(r["created"] for r in runs)
    return {
        "case": case,
        "hosts": len(hosts) or 1,
        "per_run": args.partitions_per_run if case == "postgres" else None,
        "runs": len(runs),
        "at_once": at_once,
        "worker_concurrency": hosts[0].concurrency if hosts else None,
        "prompts": args.prompts,
        "billed": ledger["totals"]["billed"],
        "wall_s": wall_s,
        "pass_s": pass_s,
        "ideal_s": ideal_s,
        "mean_latency_s": mean_latency,
        "first_render_s": min(starts) - started,  # command start -> first render at fal
        "tail_s": started + wall_s - max(ends),  # last render done -> command exit
        "summary_s": summary_s,  # command start -> its summary line
        # CPU ms per render of each part (launcher: the falassets run command and its run
        # processes; workers: the worker hosts' process trees)
        "cpu_ms_per_render": {name: round(1000 * s / args.prompts, 1) for name, s in cpu.items()},
        "fal_busy": sum(latencies) / (args.limit * render_span),
        "startup_median_s": statistics.median(run_startups) if run_startups else float("nan"),
        "startup_max_s": max(run_startups, default=float("nan")),
        "ms_per_materialization": 1000 * event_s / max(handed, 1),
        "peak_running": ledger["peak_running"],
        "http_per_render": sum(v for k, v in ledger["http"].items() if k != "admin") / args.prompts,
        "load": [round(x, 1) for x in (*load_before, *load_after)],
        # Seconds from the command's start, for a timeline (--json): each draft run's
        # creation, step start and end, and each render at fal.
        "timeline": {
            "runs": [
                [
                    round(r[k] - started, 3) if r[k] else None
                    for k in ("created", "step_start", "ended")
                ]
                for r in sorted(runs, key=lambda r: r["created"])
            ],
            "prep_runs": [
                [r["job"], *(round(r[k] - started, 3) for k in ("created", "ended"))] for r in prep
            ],
            "planned": [
                [round(t - started, 3) if t else None for t in r["planned"]]
                for r in sorted(runs, key=lambda r: r["created"])
            ],
            "first_events": [
                [(kind, round(t - started, 3)) for kind, t in r["first_events"]]
                for r in sorted(runs, key=lambda r: r["created"])
            ],
            "renders": sorted(
                [round(s - started, 3), round(e - started, 3)]
                for s, e in zip(starts, ends, strict=True)
            ),
        },
    }


def table(rows: list[dict[str, Any]], limit: int) -> str:
    lines = [
        "| case | hosts | K | runs (at once) | wall s | ideal s | wall / ideal | pass s "
        "| pass / ideal | fal busy | first render s | run start-up s (median, max) "
        "| ms / materialization | peak running | HTTP / render | load 1-min before, after |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} (limit {limit}) | {r['hosts']} | {r['per_run'] or '-'} "
            f"| {r['runs']} ({r['at_once']}) | {r['wall_s']:.1f} | {r['ideal_s']:.1f} "
            f"| **{r['wall_s'] / r['ideal_s']:.3f}** | {r['pass_s']:.1f} "
            f"| {r['pass_s'] / r['ideal_s']:.3f} | {100 * r['fal_busy']:.1f}% "
            f"| {r['first_render_s']:.1f} | {r['startup_median_s']:.1f}, {r['startup_max_s']:.1f} "
            f"| {r['ms_per_materialization']:.1f} | {r['peak_running']} "
            f"| {r['http_per_render']:.2f} | {r['load'][0]}, {r['load'][3]} |"
        )
    parts = ["launcher", "workers", "postgres", "redis", "emulator"]
    lines += [
        "",
        "CPU ms per render (launcher: `falassets run` and its run processes; workers: the "
        "worker hosts' trees). Pipeline = all but the emulator (fal is not on this machine); "
        f"renders/s its CPU allows per core = 1000 / pipeline ms (fal's limit {limit} at the "
        "mean latency allows limit / latency).",
        "",
        "| case | " + " | ".join(parts) + " | pipeline | renders/s per core | fal's renders/s |",
        "|---|" + "---:|" * (len(parts) + 3),
    ]
    for r in rows:
        cpu = r["cpu_ms_per_render"]
        pipeline = sum(v for k, v in cpu.items() if k != "emulator")
        cells = " | ".join(f"{cpu[p]:.1f}" if p in cpu else "-" for p in parts)
        lines.append(
            f"| {r['case']} (limit {limit}) | {cells} | {pipeline:.1f} "
            f"| {1000 / pipeline:.1f} | {limit / r['mean_latency_s']:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--latency-low", type=float, default=1.5, help="emulator mean, seconds")
    parser.add_argument("--limit", type=int, default=10, help="fal account limit (emulator)")
    parser.add_argument("--hosts", type=int, default=2, help="worker hosts (postgres case)")
    parser.add_argument(
        "--partitions-per-run",
        type=int,
        default=100,
        help="FALASSETS_PARTITIONS_PER_RUN of the postgres case (K)",
    )
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        help="steps each worker host runs at once (default: the launch path's runs at once, "
        "spread over the hosts)",
    )
    parser.add_argument(
        "--storage",
        default="postgres,sqlite",
        help="cases, in order: postgres (celery on --hosts hosts), sqlite (embedded default)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--inspect", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inspect:
        print(json.dumps(inspect_runs()))
        return 0

    from falassets.sim.control import SimProcess
    from falassets_tests import services as service_module

    cases = [c.strip() for c in args.storage.split(",") if c.strip()]
    unknown = set(cases) - {"postgres", "sqlite"}
    if unknown:
        parser.error(f"unknown storage {', '.join(sorted(unknown))}: use postgres and/or sqlite")
    services: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    sim = SimProcess.start(
        *("--time-scale", "1", "--concurrency", str(args.limit), "--mode", "queue"),
        *("--latency-low", str(args.latency_low)),
    )
    rows = []
    try:
        if "postgres" in cases:
            services["postgres"] = service_module.start_postgres()
            services["redis"] = service_module.start_redis()
        for case in cases:
            began = time.monotonic()
            row = measure(case, args, sim, services, root)
            rows.append(row)
            brief = {k: v for k, v in row.items() if k != "timeline"}
            print(
                f"{case}: done in {time.monotonic() - began:.0f} s, {json.dumps(brief)}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        sim.stop()
        for server in services.values():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"{args.prompts} prompts, account limit {args.limit}, mean latency {args.latency_low} s "
        f"(time scale 1), {os.cpu_count()} CPUs, {datetime.now():%Y-%m-%d %H:%M}\n"
    )
    print(table(rows, args.limit))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
