"""Helpers for the Postgres fal cap tests: "hosts" (separate OS processes, each its own
process group and TMPDIR) rendering through the engine with one ``FALASSETS_POSTGRES_URL``,
holders that take places on the table and are then SIGKILLed, and an admin's view of the
database (which sessions hold which locks, terminating one)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg2

from falassets.engine.jobs import RenderJob
from falassets.lineage.journal import latest_by, read_journal
from falassets_tests.engine.engine_support import wait_for
from falassets_tests.engine.fault_support import job_spec

HOST = """
import asyncio, json, sys, time
from falassets.engine.jobs import RenderJob
from falassets.engine.session import open_engine

spec = json.loads(sys.argv[1])
jobs = [RenderJob(**job) for job in spec["jobs"]]

async def main():
    async with open_engine(run_id=spec["run_id"], **spec["config"]) as engine:
        print(json.dumps({"ready": True}), flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        print(json.dumps({"started": time.time()}), flush=True)
        async for outcome in engine.render(jobs):
            print(json.dumps({"prompt_id": outcome.job.prompt_id, "status": outcome.status,
                              "error_type": outcome.error_type,
                              "error_message": outcome.error_message}), flush=True)

asyncio.run(main())
"""

HOLDER = """
import asyncio, json, sys
from falassets.engine.cap_postgres import open_cap_table

spec = json.loads(sys.argv[1])

async def main():
    table = await open_cap_table(spec["url"], spec["n"])
    taken = []
    for op in spec["ops"]:
        slot = await table.run(table.try_acquire, spec["n"], op.get("grace", 60.0))
        if op.get("request_id") is not None:
            await table.run(table.name, slot, op["request_id"], op.get("status_url"),
                            op.get("ttl", 60.0))
        taken.append(slot)
    print(json.dumps({"slots": taken, "backend_pid": table.backend_pid}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # until SIGKILL

asyncio.run(main())
"""


class Host:
    """One engine in its own process group: a host of the deployment."""

    def __init__(self, jobs: list[RenderJob], run_id: str, env: dict[str, str], **config: Any):
        spec = {"run_id": run_id, "config": config, "jobs": [job_spec(j) for j in jobs]}
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOST, json.dumps(spec)],
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, killed as one
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # blocks until its engine is open
        assert "ready" in line, self.process.communicate(timeout=60)[1][-3000:]

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def started(self) -> float:
        assert self.process.stdout is not None
        return json.loads(self.process.stdout.readline())["started"]

    def finish(self, timeout: float = 180) -> tuple[dict[str, dict[str, Any]], str]:
        """Outcomes by prompt id, and stderr; the host must exit 0."""
        out, err = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, err[-3000:]
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return {line["prompt_id"]: line for line in lines if "prompt_id" in line}, err

    def kill(self) -> None:
        """SIGKILL its whole process group, as a host that dies would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.communicate(timeout=60)
        assert self.process.returncode == -signal.SIGKILL

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill()


def host_env(root: Path, url: str, *, data_dir: Path | None = None) -> dict[str, str]:
    """A host's environment: the shared database, its own TMPDIR, and the data dir given
    (shared) or its own under ``root``."""
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    return {
        "FALASSETS_POSTGRES_URL": url,
        "FALASSETS_DATA_DIR": str(data_dir or root / "data"),
        "TMPDIR": str(root / "tmp"),
    }


def rows_of(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Latest journal row per request id under one data dir."""
    latest = latest_by(read_journal(data_dir / "lineage", "requests"), "request_id")
    return {key[0]: row for key, row in latest.items()}


class Holder:
    """A process that opens the table, takes places (naming some) and waits to be killed."""

    def __init__(self, url: str, n: int, ops: list[dict[str, Any]]) -> None:
        spec = {"url": url, "n": n, "ops": ops}
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("{"), self.process.communicate(timeout=60)[1][-3000:]
        reported = json.loads(line)
        self.slots: list[int] = reported["slots"]
        self.backend_pid: int = reported["backend_pid"]

    def kill(self, admin_url: str) -> None:
        """SIGKILL, then wait until the server has dropped its session's locks."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.communicate(timeout=60)
        wait_for(
            lambda: not backend_locks(admin_url, self.backend_pid),
            timeout=30,
            what="the server to drop the killed holder's locks",
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.communicate(timeout=60)


def query(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with contextlib.closing(psycopg2.connect(url)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []


def backend_locks(admin_url: str, pid: int) -> int:
    return query(admin_url, "SELECT count(*) FROM pg_locks WHERE pid = %s", (pid,))[0][0]


def terminate_cap_sessions(admin_url: str, database: str) -> int:
    """End every cap session on ``database`` as an outage would; how many were ended."""
    rows = query(
        admin_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND application_name = 'falassets-fal-cap'",
        (database,),
    )
    return sum(1 for (ended,) in rows if ended)


def wait_cap_sessions_gone(admin_url: str, database: str, deadline_s: float = 60.0) -> None:
    """Wait until the server has ended every cap session on ``database``. A client's close
    returns before its server process has exited and dropped its advisory locks, so a holder
    that just closed still looks alive for a moment (longer on a loaded machine)."""
    deadline = time.monotonic() + deadline_s
    while query(
        admin_url,
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = %s AND application_name = 'falassets-fal-cap'",
        (database,),
    )[0][0]:
        assert time.monotonic() < deadline, f"cap sessions on {database} did not end"
        time.sleep(0.01)  # polling the server's own view of its sessions, bounded above


def slot_rows(url: str) -> list[tuple[Any, ...]]:
    """(slot, holder, request_id) of every row, by slot."""
    return query(url, "SELECT slot, holder, request_id FROM falassets_fal_slots ORDER BY slot")
