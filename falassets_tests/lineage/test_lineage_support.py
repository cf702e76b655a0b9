"""Helpers shared by the lineage and decisions tests (no tests of its own).

They write journals the way the engine does (``Journal.append`` of full snapshots) and run
Python snippets in separate processes, because the behaviour under test is between processes:
a reader in one, writers in others.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from falassets.lineage.journal import Journal
from falassets.lineage.schema import REQUEST_COLUMNS

DUCKDB_SHELL = Path(sys.executable).with_name("duckdb")
TIMEOUT_S = 60


def request_row(request_id: str, partition_key: str, **fields: Any) -> dict[str, Any]:
    """A full request snapshot as the engine journals it (writer columns left to Journal)."""
    campaign, _, prompt_id = partition_key.partition("-")
    row: dict[str, Any] = dict.fromkeys(REQUEST_COLUMNS)
    del row["recorded_at"], row["writer"]
    row.update(
        request_id=request_id,
        partition_key=partition_key,
        campaign=campaign,
        prompt_id=prompt_id,
        endpoint="openai/gpt-image-2",
        input={"prompt": f"a picture of {prompt_id}", "quality": "low"},
        job_key=f"job-{partition_key}",
        status="pending",
        attempt=1,
        cost_usd=0.0,
        simulated=True,
        run_id="run-test",
    )
    row["pass"] = "draft"
    row.update(fields)
    return row


def at(second: int) -> str:
    return datetime(2026, 3, 1, 12, 0, second, tzinfo=UTC).isoformat(timespec="microseconds")


def scenario(journal_dir: Path) -> None:
    """Two campaigns, retries, refusals, a pending request, real and simulated spend."""
    write_requests(
        journal_dir,
        [
            request_row("r1", "spring-a", submitted_at=at(1)),
            request_row("r1", "spring-a", submitted_at=at(1), status="failed",
                        error_type="transport", error_message="connection reset"),
            request_row("r2", "spring-a", submitted_at=at(2), attempt=2),
            request_row("r2", "spring-a", submitted_at=at(2), attempt=2, status="completed",
                        cost_usd=0.011, sha256="ab" * 32),
            request_row("r3", "spring-b", submitted_at=at(3)),
            request_row("r6", "spring-c", submitted_at=at(4), status="failed",
                        error_type="transport", error_message="timed out"),
        ],
    )  # fmt: skip
    write_requests(
        journal_dir,
        [
            request_row("r4", "spring-a", submitted_at=at(5), **{"pass": "final"}),
            request_row("r4", "spring-a", submitted_at=at(5), status="failed",
                        error_type="content_policy_violation", **{"pass": "final"}),
            request_row("r5", "autumn-x", submitted_at=at(6), status="completed",
                        cost_usd=0.2, simulated=False),
        ],
    )  # fmt: skip


def write_requests(journal_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """Append snapshots, in order, to a new journal file; return its path."""
    with Journal(journal_dir, "requests") as journal:
        for row in rows:
            journal.append(row)
    return journal.path


def child_env(data_dir: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FALASSETS_DATA_DIR"}
    if data_dir is not None:
        env["FALASSETS_DATA_DIR"] = str(data_dir)
    return env


def run_python(code: str, *, data_dir: Path | None, cwd: Path) -> Any:
    """Run a snippet in a fresh interpreter; it prints one JSON value, which is returned."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=child_env(data_dir),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


class Child:
    """A Python process driven line by line over pipes: the test waits on its answers, never
    on a clock. The snippet must print ``ready`` first, then answer each stdin line."""

    def __init__(self, code: str, *, data_dir: Path | None, cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-c", textwrap.dedent(code)],
            cwd=cwd,
            env=child_env(data_dir),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.expect("ready")

    def expect(self, what: str) -> None:
        line = self.readline()
        assert line == what, f"child said {line!r}, expected {what!r}"

    def readline(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=TIMEOUT_S)
            raise AssertionError(f"child exited: {self.process.stderr.read()}")  # type: ignore[union-attr]
        return line.strip()

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def answer(self) -> Any:
        return json.loads(self.readline())

    def ask(self, line: str) -> Any:
        self.send(line)
        return self.answer()

    def finish(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        code = self.process.wait(timeout=TIMEOUT_S)
        assert self.process.stdout is not None and self.process.stderr is not None
        self.process.stdout.close()
        self.process.stderr.close()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=TIMEOUT_S)
