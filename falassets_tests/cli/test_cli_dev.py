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

from falassets.pipeline.fal_environment import stop_builtin_emulator
from falassets_tests.cli.test_cli_support import run_cli, use_dagster_home, write_csv
from falassets_tests.sim.test_sim_support import free_port

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


@pytest.mark.slow
def test_dev_stops_the_emulator_it_started_and_shows_no_dagster_beta_or_dg_notices(
    data_dir: Path,
) -> None:
    port, sim_port = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"FAL_KEY", "FAL_QUEUE_RUN_HOST", "SSL_CERT_FILE", "DAGSTER_HOME"}
    }
    env.update(FALASSETS_DATA_DIR=str(data_dir), FALASSETS_SIM_PORT=str(sim_port))
    log_path = data_dir / "dev.log"
    with log_path.open("wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "falassets.cli", "dev", "--port", str(port)],
            cwd=data_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:

            def serving() -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).is_success
                except httpx.TransportError:
                    return False

            wait_for(serving, timeout_s=180, what="the Dagster UI of falassets dev")
            pid = int((data_dir / ".state" / "sim" / "emulator.pid").read_text())
            assert Path(f"/proc/{pid}/cmdline").read_bytes().count(b"sim") >= 1
            child.send_signal(signal.SIGTERM)
            assert child.wait(timeout=120) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            leftover = stop_builtin_emulator()  # same data dir: never leak one on failure
    assert not leftover
    output = log_path.read_text()
    assert f"stopped the built-in fal emulator on 127.0.0.1:{sim_port} (pid {pid})" in output
    assert (
        not Path(f"/proc/{pid}/cmdline").exists() or not Path(f"/proc/{pid}/cmdline").read_bytes()
    )  # gone (or a zombie nobody has reaped yet)
    for notice in ("BetaWarning", "PreviewWarning", "dg dev", "still running"):
        assert notice not in output, output
