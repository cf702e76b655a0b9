"""A worker "host" for the distributed tests and bench/bench_distributed.py: a `falassets
worker` process tree in its own session, with its own DAGSTER_HOME, TMPDIR, HOME and cwd, so it
shares only what its environment names (Postgres, the broker, the data dir) with other hosts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PY = sys.executable
WORKER = (PY, "-m", "falassets.cli", "worker")


def group_pids(pgid: int) -> set[int]:
    """Every live process in a process group (a host's whole tree: it runs in its own session)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                found.add(int(entry.name))
    return found


@dataclass
class Host:
    name: str
    root: Path
    env: dict[str, str]
    concurrency: int = 1  # steps this worker runs at once
    process: subprocess.Popen | None = None
    pids: set[int] | None = None  # the tree's pids, as last seen alive

    @property
    def node(self) -> str:
        return f"{self.name}@{socket.gethostname()}"

    def start(self) -> None:
        for folder in ("tmp", "home", "work"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        env = {
            **self.env,
            "DAGSTER_HOME": str(self.root / "dagster_home"),
            "TMPDIR": str(self.root / "tmp"),
            "HOME": str(self.root / "home"),
        }
        with (self.root / "worker.log").open("ab") as log:
            self.process = subprocess.Popen(
                [*WORKER, "--concurrency", str(self.concurrency), "--name", self.name],
                env=env,
                cwd=self.root / "work",
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = (self.root / "worker.log").read_text(errors="replace")
        except OSError as error:
            return f"(no log: {error})"
        return "\n".join(text.splitlines()[-lines:])

    def remember_pids(self) -> set[int]:
        if self.process is not None and self.process.poll() is None:
            self.pids = group_pids(self.process.pid) | (self.pids or set())
        return self.pids or set()

    def kill(self) -> None:
        """SIGKILL the host's whole process tree at once."""
        assert self.process is not None
        self.remember_pids()
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


def wait_for_workers(hosts: Iterable[Host], broker: str, timeout_s: float) -> None:
    """Until every host's worker answers Celery's ping; a worker that exits or stays silent
    fails with its log's tail in the message (CI shows the message, not the log file)."""
    from falassets.pipeline.celery_executor import worker_app

    app = worker_app(broker, broker)
    for host in hosts:
        assert host.process is not None
        deadline = time.monotonic() + timeout_s
        while not app.control.ping(destination=[host.node], timeout=1.0):
            exited = host.process.poll() is not None
            if exited or time.monotonic() > deadline:
                state = (
                    f"exited with status {host.process.returncode}"
                    if exited
                    else f"did not answer in {timeout_s:.0f} s"
                )
                raise AssertionError(
                    f"worker {host.node} {state}; the end of {host.root / 'worker.log'}:\n"
                    f"{host.log_tail()}"
                )
            time.sleep(0.2)  # polling interval of a condition bounded by the deadline above
        host.remember_pids()
