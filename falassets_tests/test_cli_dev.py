"""`falassets dev`: runs started by `falassets run` show up in the Dagster UI it serves, and it
stops cleanly (webserver and daemon) when asked to."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from falassets_tests.test_cli_support import run_cli, use_dagster_home, write_csv
from falassets_tests.test_sim_support import free_port

RUNS_QUERY = "{ runsOrError { ... on Runs { results { runId jobName status } } } }"


@pytest.fixture
def home(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_dagster_home(data_dir, monkeypatch)


def wait_for(condition, *, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)  # polling a condition, bounded by the deadline
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


@pytest.mark.slow
def test_dev_serves_the_cli_runs_and_stops_cleanly(sim, data_dir, home, capsys) -> None:
    source = write_csv(data_dir / "incoming" / "spring.csv", {"hero_1": "a red bicycle"})
    code, out, _ = run_cli(capsys, "run", str(source), "--plain")
    assert code == 0
    cli_run_id = out.split("Dagster run(s): ")[1].split()[0]
    port = free_port()
    log = (data_dir / "dev.log").open("wb")
    child = subprocess.Popen(
        [sys.executable, "-m", "falassets.cli", "dev", "--port", str(port)],
        cwd=data_dir,  # no workspace.yaml here: dev writes a temporary one
        env={**os.environ, "FALASSETS_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(home)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def runs() -> list[dict] | None:
            try:
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/graphql", json={"query": RUNS_QUERY}, timeout=5
                )
            except httpx.TransportError:
                return None
            return answer.json()["data"]["runsOrError"]["results"] if answer.is_success else None

        listed = wait_for(runs, timeout_s=180, what="the Dagster UI of falassets dev")
        # (the daemon's own sensors may have started runs of their own meanwhile)
        assert {"runId": cli_run_id, "jobName": "draft_pass", "status": "SUCCESS"} in listed

        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=120) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        log.close()
    output = (data_dir / "dev.log").read_text()
    assert "Dagster services shut down" in output
