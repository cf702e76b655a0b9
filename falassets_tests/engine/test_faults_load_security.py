"""Load and secrets (issue 6): two campaigns rendering at once in two processes while a DuckDB
shell holds the lineage open and answers queries, and a full draft -> pick -> final flow run
with a FAL_KEY-like secret, after which no file and no output holds the secret.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from falassets import settings
from falassets.lineage import catalog
from falassets_tests.cli.test_cli_support import write_csv
from falassets_tests.engine.engine_support import lineage_rows, make_jobs
from falassets_tests.engine.fault_support import (
    assert_promises,
    figures,
    outcomes_of,
    record,
    scan_for_secret,
    spawn_batch,
)

pytestmark = pytest.mark.faults

DUCKDB = Path(sys.executable).with_name("duckdb")


class DuckDBShell:
    """``duckdb -readonly`` kept open; ``ask`` sends one query and waits for its answer."""

    def __init__(self, database: Path) -> None:
        self.process = subprocess.Popen(
            [str(DUCKDB), "-readonly", "-csv", "-noheader", str(database)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def ask(self, sql: str, timeout: float = 15.0) -> str:
        marker = f"answer-{uuid.uuid4().hex[:8]}"
        assert self.process.stdin is not None
        self.process.stdin.write(f"select '{marker}:' || ({sql});\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line.startswith(marker):
                return line.split(":", 1)[1]
            if "Error" in line:
                raise AssertionError(f"duckdb shell: {line}")

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


@pytest.mark.skipif(not DUCKDB.exists(), reason="the duckdb shell (duckdb-cli) is a dev dependency")
def test_two_campaigns_at_once_with_a_duckdb_shell_holding_the_lineage(sim, data_dir: Path) -> None:
    sim.configure(time_scale=0.05, concurrency=10)  # fal would allow 10; our cap is 3
    shell = DuckDBShell(catalog.ensure_catalog())
    try:
        assert shell.ask("select count(*) from requests") == "0"
        runs = [
            spawn_batch(make_jobs(15, tag=t, campaign=t), run_id=t, concurrency=3)
            for t in ("autumn", "winter")
        ]
        answers = []
        while any(run.poll() is None for run in runs):
            answers.append(int(shell.ask("select count(*) from requests")))
        outs = [run.communicate(timeout=60) for run in runs]
        final = int(shell.ask("select count(*) from requests where status = 'completed'"))
    finally:
        shell.close()
    for run, (out, err) in zip(runs, outs, strict=True):
        assert run.returncode == 0, err[-2000:]
        assert [o["status"] for o in outcomes_of(out).values()] == ["completed"] * 15
    assert len(answers) >= 3 and answers == sorted(answers)  # answered while runs wrote
    assert final == 30
    ledger = sim.ledger()
    assert ledger["peak_running"] <= 3  # one machine-wide cap over both processes
    statuses = {r["partition_key"]: r["status"] for r in lineage_rows().values()}
    fig = record(figures("two_runs_and_a_shell", "queue", ledger, statuses))
    assert fig.accepted == 30 and fig.billed == 30
    assert_promises(fig)


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "falassets.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_fal_key_appears_nowhere_after_a_full_flow(sim, data_dir: Path) -> None:
    secret = f"fal-key-{uuid.uuid4().hex}:{uuid.uuid4().hex[:12]}"
    sim.configure(valid_key=secret)  # the emulator accepts only this key: the runs must use it
    env = {
        **os.environ,
        "FAL_KEY": secret,
        "FALASSETS_DATA_DIR": str(data_dir),
        "DAGSTER_HOME": str(data_dir / "dagster_home"),
    }
    source = write_csv(
        data_dir / "incoming" / "spring.csv",
        {"hero_1": "a red bicycle", "hero_2": "a blue mug", "hero_3": "forest trail SIM_5XX"},
    )
    steps = [
        ["run", str(source), "--plain"],
        ["pick", "spring", "hero_1", "hero_2"],
        ["run", "spring", "--pass", "final", "--mode", "refine", "--plain"],
        ["lineage"],
        ["lineage", "select request_id, error_message from requests"],
        ["reconcile"],
    ]
    captured = []
    for step in steps:
        done = _cli(step, env)
        captured.append((step, done.returncode, done.stdout + done.stderr))
    codes = [code for _, code, _ in captured]
    assert codes == [1, 0, 0, 0, 0, 0], captured  # the first run reports its failed draft
    ledger = sim.ledger()
    assert sum(r["billed"] for r in ledger["requests"]) == 4  # 2 drafts + 2 finals, with the key

    _, winners = catalog.query("select prompt_id from winners where campaign = 'spring'")
    picked = {"hero_1", "hero_2"}
    finals = {r["prompt_id"] for r in lineage_rows().values() if r["pass"] == "final"}
    outcomes = {r["partition_key"] + "/" + r["pass"]: r["status"] for r in lineage_rows().values()}
    fig = record(
        figures(
            "full_flow_with_key",
            "queue",
            ledger,
            outcomes,
            lost_decisions=len(picked - {w for (w,) in winners}),
        )
    )
    assert_promises(fig)
    assert finals == picked  # every pick reached the final pass, nothing else did

    hits = scan_for_secret(data_dir, secret)
    assert hits == []
    assert (data_dir / "dagster_home").is_dir() and (data_dir / "lineage.duckdb").is_file()
    for step, _, output in captured:
        assert secret not in output, step
    assert settings.fal_key() is None  # the key stayed in the children
