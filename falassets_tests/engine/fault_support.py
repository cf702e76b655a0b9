"""Helpers for the fault suite (``pytest -m faults``): a configurable engine child process,
the figures every scenario reports (from the emulator's ledger and our lineage), and the
figures file ``bench/fault_matrix.py`` turns into the table in ``docs/reliability.md``.

The figures are the promise of issue 6 in numbers: every request the emulator accepted is in
lineage (``lost_ids`` = 0), no input billed twice except where fal's own behaviour makes it
unavoidable (an expired result is resubmitted once), and what was billed but never delivered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from falassets.engine.jobs import RenderJob, canonical_json
from falassets_tests.engine.engine_support import all_journal_lines, lineage_rows, wait_for

#: Set by bench/fault_matrix.py: each scenario appends its figures here as one JSON line.
FIGURES_ENV = "FALASSETS_FAULT_FIGURES"

CHILD = """
import asyncio, json, signal, sys, threading
from falassets.engine.jobs import RenderJob
from falassets.engine.records import RequestJournal
from falassets.engine.session import open_engine

spec = json.loads(sys.argv[1])
jobs = [RenderJob(**job) for job in spec["jobs"]]

stop = spec.get("stop_before_row")
if stop:  # freeze the whole process just before this row reaches its journal
    write = RequestJournal.write

    def write_or_stop(self, row):
        if all(row.get(name) == value for name, value in stop.items()):
            # to this thread: a process-wide SIGSTOP may stop the others first and let
            # this one write on for a moment
            signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
        write(self, row)

    RequestJournal.write = write_or_stop

async def main():
    async with open_engine(run_id=spec["run_id"], **spec["config"]) as engine:
        async for outcome in engine.render(jobs):
            print(json.dumps({"prompt_id": outcome.job.prompt_id, "status": outcome.status,
                              "error_type": outcome.error_type}), flush=True)
        print(json.dumps({"spend_usd": engine.progress().spend_usd}), flush=True)

asyncio.run(main())
"""


def job_spec(job: RenderJob) -> dict[str, Any]:
    return {
        "partition_key": job.partition_key,
        "campaign": job.campaign,
        "prompt_id": job.prompt_id,
        "pass_name": job.pass_name,
        "input": job.input,
        "endpoint": job.endpoint,
        "variant": job.variant,
        "force": job.force,
    }


def spawn_batch(
    jobs: list[RenderJob],
    *,
    run_id: str,
    env: dict[str, str] | None = None,
    stop_before_row: dict[str, Any] | None = None,
    **config: Any,
) -> subprocess.Popen[str]:
    """Render ``jobs`` in a child process with :func:`open_engine` (``config``: EngineConfig
    fields). Its stdout is one JSON line per outcome. ``stop_before_row``: the child SIGSTOPs
    itself just before it journals a row holding these values (see :func:`wait_stopped`), a
    kill point between two of the engine's steps that no line count can hit reliably."""
    spec = {
        "run_id": run_id,
        "config": config,
        "jobs": [job_spec(j) for j in jobs],
        "stop_before_row": stop_before_row,
    }
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_stopped(child: subprocess.Popen[str], timeout: float = 60) -> None:
    """Until every thread of ``child`` has stopped (``stop_before_row``); fails if it ends."""
    tasks = Path(f"/proc/{child.pid}/task")

    def stopped() -> bool:
        if child.poll() is not None:
            raise AssertionError(f"the batch ended before its stop point: {child.returncode}")
        # each thread's state follows its parenthesised name: "tid (comm) T ..."
        try:
            states = {s.read_text().rpartition(")")[2].split()[0] for s in tasks.glob("*/stat")}
        except FileNotFoundError:  # a thread ended as we looked: look again
            return False
        return states == {"T"}

    wait_for(stopped, timeout=timeout, what="the batch stopped at its stop point")


def outcomes_of(stdout: str) -> dict[str, dict[str, Any]]:
    """The outcome lines a child printed, by prompt id (the last one wins)."""
    found: dict[str, dict[str, Any]] = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            data = json.loads(line)
            if "prompt_id" in data:
                found[data["prompt_id"]] = data
    return found


def reported_spend(stdout: str) -> float:
    """The spend a child's engine reported at the end of its batch."""
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return next(line["spend_usd"] for line in reversed(lines) if "spend_usd" in line)


def journal_line_count() -> int:
    return len(all_journal_lines())


@dataclass
class Figures:
    """One scenario's evidence. ``double_billed`` counts extra bills of one input beyond the
    first, *excluding* the one resubmission fal's expiry forces (``expired_rebills``)."""

    scenario: str
    mode: str
    prompts: int
    outcomes: dict[str, int]
    accepted: int  # requests the emulator accepted (its ledger)
    recorded: int  # of those, in our lineage
    lost_ids: int  # accepted - recorded: must be 0
    billed: int  # requests fal billed
    billed_usd: float
    double_billed: int  # must be 0
    expired_rebills: int  # allowed: an expired result is resubmitted once
    wasted_usd: float  # billed but not delivered, or a second bill for one input
    lost_decisions: int = 0

    def as_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def figures(
    scenario: str,
    mode: str,
    ledger: dict[str, Any],
    outcomes: dict[str, str],
    *,
    lost_decisions: int = 0,
) -> Figures:
    """Compare the emulator's ledger with our lineage; ``outcomes`` is status per prompt."""
    rows = lineage_rows()
    accepted = {r["request_id"] for r in ledger["requests"]}
    recorded = accepted & set(rows)
    delivered = {
        rid for rid, row in rows.items() if row["status"] == "completed" and row["image_path"]
    }
    billed = [r for r in ledger["requests"] if r["billed"]]
    per_input: Counter[str] = Counter(canonical_json(r["input"]) for r in billed)
    expired_inputs = {
        canonical_json(r["input"]) for r in billed if "expire" in (r.get("faults") or [])
    }
    extra = {key: count - 1 for key, count in per_input.items() if count > 1}
    expired_rebills = sum(min(1, n) for key, n in extra.items() if key in expired_inputs)
    double = sum(extra.values()) - expired_rebills
    # per input, every bill but the one render we kept is waste (undelivered or a second bill)
    kept: set[str] = set()
    wasted = 0.0
    for entry in billed:
        key = canonical_json(entry["input"])
        if entry["request_id"] in delivered and key not in kept:
            kept.add(key)
        else:
            wasted += entry["cost_usd"]
    return Figures(
        scenario=scenario,
        mode=mode,
        prompts=len(outcomes),
        outcomes=dict(Counter(outcomes.values())),
        accepted=len(accepted),
        recorded=len(recorded),
        lost_ids=len(accepted - recorded),
        billed=len(billed),
        billed_usd=round(sum(r["cost_usd"] for r in billed), 6),
        double_billed=double,
        expired_rebills=expired_rebills,
        wasted_usd=round(wasted, 6),
        lost_decisions=lost_decisions,
    )


def record(fig: Figures) -> Figures:
    """Append the figures to the file bench/fault_matrix.py reads (when it is running us)."""
    target = os.environ.get(FIGURES_ENV)
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(fig.as_json() + "\n")
    return fig


def assert_promises(fig: Figures) -> None:
    """The invariants of issue 6 that hold under every fault."""
    assert fig.lost_ids == 0, f"{fig.scenario}/{fig.mode}: request ids missing from lineage"
    assert fig.double_billed == 0, f"{fig.scenario}/{fig.mode}: an input was billed twice"
    assert fig.lost_decisions == 0, f"{fig.scenario}/{fig.mode}: decisions lost"


def scan_for_secret(root: Path, secret: str) -> list[str]:
    """Every file under ``root`` whose bytes hold ``secret`` (plain, or URL/JSON-escaped)."""
    needles = {secret.encode(), json.dumps(secret)[1:-1].encode()}
    hits = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if any(needle in data for needle in needles):
                hits.append(str(path))
    return hits


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (to prove a refused command changed nothing)."""
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
