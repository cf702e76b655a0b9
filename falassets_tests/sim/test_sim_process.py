"""The emulator as a process: start-up lines, bad flags, certificates kept across restarts,
requests kept across a SIGKILL (state file), the ledger file, and the built-in emulator."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from falassets import settings
from falassets.pipeline.fal_environment import ensure_builtin_emulator, stop_builtin_emulator
from falassets.sim.control import SimProcess
from falassets_tests.sim.test_sim_support import free_port


def _sim(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "falassets.cli", "sim", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _client_for(sim: SimProcess) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(sim.cert_file))
    return httpx.Client(
        base_url=sim.url, verify=context, headers={"Authorization": "Key k"}, trust_env=False
    )


def test_start_prints_export_lines_a_shell_can_eval(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "falassets.cli", "sim", "--port", "0", "--cert-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = "".join(process.stdout.readline() for _ in range(3))
        shell = 'eval "$LINES"; echo "$FAL_QUEUE_RUN_HOST|$SSL_CERT_FILE|$NO_PROXY"'
        seen = subprocess.run(
            ["bash", "-c", shell], env={"LINES": lines}, capture_output=True, text=True
        ).stdout.strip()
        host, cert, no_proxy = seen.split("|")
        assert re.fullmatch(r"127\.0\.0\.1:\d+", host) and not host.endswith(":0")
        assert cert == str(tmp_path / "ca.pem") and no_proxy == "127.0.0.1,localhost"
        context = ssl.create_default_context(cafile=cert)
        health = httpx.get(f"https://{host}/_sim/health", verify=context, trust_env=False)
        assert health.json()["ok"] is True
    finally:
        process.terminate()
        # uvicorn shuts down gracefully, then re-raises SIGTERM (the conventional exit).
        assert process.wait(timeout=15) in (0, -signal.SIGTERM)
        process.stdout.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "drop"], "invalid choice"),
        (["--time-scale", "0"], "time_scale must be a finite number in (0, 1000]"),
        (["--time-scale", "inf"], "time_scale must be a finite number in (0, 1000]"),
        (["--latency-low", "nan"], "latency_low must be a finite number"),
        (["--5xx-rate", "1.5"], "error_5xx_rate must be a finite number in [0, 1]"),
        (["--concurrency", "0"], "concurrency must be an integer from 1 to"),
        (["--stream", "sometimes"], "invalid choice"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(tmp_path: Path, args: list[str], message: str) -> None:
    done = _sim(*args, "--cert-dir", str(tmp_path))
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""


def test_a_busy_port_exits_2_and_says_how_to_fix_it(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = _sim("--port", str(port), "--cert-dir", str(tmp_path))
    assert done.returncode == 2
    assert f"port {port}" in done.stderr and "--port" in done.stderr


def test_restart_keeps_port_ca_and_requests_from_the_state_file(tmp_path: Path) -> None:
    state = tmp_path / "state.jsonl"
    with SimProcess.start("--state-file", str(state), "--time-scale", "0.01") as sim:
        ca_before = sim.cert_file.read_bytes()
        host = sim.host
        with _client_for(sim) as http:
            done = http.post("/openai/gpt-image-2", json={"prompt": "x", "quality": "low"}).json()
            slow = http.post(
                "/openai/gpt-image-2", json={"prompt": "y SIM_HANG", "quality": "low"}
            ).json()
            with http.stream("GET", f"{done['status_url']}/stream") as response:
                assert any('"COMPLETED"' in line for line in response.iter_lines())
            sim.kill()
            with pytest.raises(httpx.TransportError):
                http.get("/_sim/health")
            sim.restart()
            assert sim.host == host
            assert sim.cert_file.read_bytes() == ca_before
            # The same client (CA loaded before the restart) still trusts the emulator.
            assert http.get(done["status_url"]).json()["status"] == "COMPLETED"
            assert http.get(done["response_url"]).status_code == 200
            assert http.get(slow["status_url"]).json()["status"] == "IN_PROGRESS"
            assert http.put(slow["cancel_url"]).status_code == 202
        ledger = sim.ledger()
    assert [r["request_id"] for r in ledger["requests"]] == [
        done["request_id"],
        slow["request_id"],
    ]
    assert ledger["totals"]["billed"] == 1


def test_ledger_file_records_each_request_accepted_and_completed(tmp_path: Path) -> None:
    ledger_file = tmp_path / "ledger.jsonl"
    sim = SimProcess.start("--ledger-file", str(ledger_file), "--time-scale", "0.01")
    with sim, _client_for(sim) as http:
        accepted = http.post("/openai/gpt-image-2", json={"prompt": "x", "quality": "low"})
        with http.stream("GET", f"{accepted.json()['status_url']}/stream") as response:
            list(response.iter_lines())
    lines = [json.loads(line) for line in ledger_file.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["accepted", "completed"]
    assert lines[1]["billed"] is True and lines[1]["cost_usd"] == 0.01


def test_builtin_emulator_starts_once_when_processes_race(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALASSETS_SIM_PORT", str(free_port()))
    monkeypatch.setenv("FALASSETS_SIM_ARGS", "--time-scale 0.01")
    errors: list[BaseException] = []

    def start() -> None:
        try:
            ensure_builtin_emulator()
        except BaseException as error:  # collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        pid = int((data_dir / ".state" / "sim" / "emulator.pid").read_text())
        assert os.path.exists(f"/proc/{pid}")
        context = ssl.create_default_context(cafile=str(settings.sim_cert_file()))
        health = httpx.get(
            f"https://{settings.default_sim_address()}/_sim/health", verify=context, trust_env=False
        )
        assert health.json()["ok"] is True
        ensure_builtin_emulator()  # already up: nothing new is started
        assert int((data_dir / ".state" / "sim" / "emulator.pid").read_text()) == pid
    finally:
        assert stop_builtin_emulator() is True


@pytest.mark.slow
def test_run_without_a_key_renders_on_the_builtin_emulator_whatever_ssl_cert_file_says(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newcomer's machine often exports SSL_CERT_FILE (the system bundle), which cannot know
    the emulator's CA: `falassets run` must still trust the emulator it starts itself."""
    import certifi

    monkeypatch.setenv("FALASSETS_SIM_PORT", str(free_port()))
    campaign = data_dir / "campaigns" / "newcomer.csv"
    campaign.parent.mkdir(parents=True)
    campaign.write_text("id,prompt\nfirst,a lighthouse at dusk\nsecond,a red bicycle\n")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"FAL_KEY", "FAL_QUEUE_RUN_HOST", "NO_PROXY", "DAGSTER_HOME"}
    }
    env.update(
        SSL_CERT_FILE=certifi.where(),
        FALASSETS_DATA_DIR=str(data_dir),
        FALASSETS_SIM_PORT=os.environ["FALASSETS_SIM_PORT"],
        FALASSETS_SIM_ARGS="--time-scale 0.01",
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "falassets.cli", "run", str(campaign), "--plain"],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        stop_builtin_emulator()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 succeeded, 0 failed" in done.stdout
    assert "CERTIFICATE_VERIFY_FAILED" not in done.stdout + done.stderr
