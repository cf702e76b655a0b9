"""The built-in emulator's life cycle as a user meets it: `falassets sim status|stop`, the line
a command prints when it leaves the emulator running, and lineage.duckdb readable by the
DuckDB shell right after the first `falassets run`."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from falassets import settings
from falassets.pipeline.fal_environment import ensure_builtin_emulator, stop_builtin_emulator
from falassets_tests.cli.test_cli_support import run_cli
from falassets_tests.lineage.test_lineage_support import DUCKDB_SHELL
from falassets_tests.sim.test_sim_support import free_port


@pytest.fixture
def builtin(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A free FALASSETS_SIM_PORT for this test's built-in emulator; stopped afterwards."""
    monkeypatch.setenv("FALASSETS_SIM_PORT", str(free_port()))
    monkeypatch.setenv("FALASSETS_SIM_ARGS", "--time-scale 0.01")
    yield settings.default_sim_address()
    stop_builtin_emulator()


def pid_exists(pid: int) -> bool:
    """Alive, not a zombie (an emulator started from this test process stays one until this
    process reaps it; a user's is reaped by init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_status_says_not_running_and_exits_1(builtin: str, capsys) -> None:
    code, out, _ = run_cli(capsys, "sim", "status")
    assert code == 1
    assert f"not running (nothing answers on {builtin})" in out
    code, out, _ = run_cli(capsys, "sim", "stop")  # nothing to stop is not an error
    assert code == 0 and "not running" in out


def test_status_names_pid_port_and_in_flight_then_stop_ends_the_process(
    builtin: str, capsys
) -> None:
    ensure_builtin_emulator()
    pid = int((settings.state_dir() / "sim" / "emulator.pid").read_text())

    code, out, _ = run_cli(capsys, "sim", "status")
    assert code == 0
    assert f"running on {builtin} (pid {pid}); 0 request(s) in flight" in out

    code, out, _ = run_cli(capsys, "sim", "stop")
    assert code == 0
    assert f"stopped the built-in fal emulator on {builtin} (pid {pid})" in out
    assert not pid_exists(pid)  # stop returns only once the process has exited
    assert run_cli(capsys, "sim", "status")[0] == 1


def test_stop_refuses_while_a_request_is_in_flight_unless_forced(builtin: str, capsys) -> None:
    ensure_builtin_emulator()
    pid = int((settings.state_dir() / "sim" / "emulator.pid").read_text())
    context = ssl.create_default_context(cafile=str(settings.sim_cert_file()))
    with httpx.Client(verify=context, trust_env=False, headers={"Authorization": "Key k"}) as c:
        hung = c.post(
            f"https://{builtin}/openai/gpt-image-2", json={"prompt": "x SIM_HANG", "quality": "low"}
        )
    assert hung.status_code == 200

    code, out, _ = run_cli(capsys, "sim", "status")
    assert code == 0 and "1 request(s) in flight (1 running, 0 queued)" in out
    code, _, err = run_cli(capsys, "sim", "stop")
    assert code == 2
    assert "1 request(s) in flight" in err and "--force" in err
    assert pid_exists(pid)

    code, out, _ = run_cli(capsys, "sim", "stop", "--force")
    assert code == 0 and f"(pid {pid})" in out
    assert not pid_exists(pid)


def test_sim_with_flags_still_runs_the_emulator_in_the_foreground(capsys) -> None:
    code, _, err = run_cli(capsys, "sim", "--mode", "drop")  # the emulator's own parser
    assert code == 2 and "invalid choice" in err


@pytest.mark.slow
def test_first_run_leaves_a_catalog_the_duckdb_shell_opens_and_says_the_emulator_runs(
    data_dir: Path, builtin: str
) -> None:
    if not DUCKDB_SHELL.exists():
        pytest.skip("the duckdb shell (duckdb-cli, a dev dependency) is not installed")
    campaign = data_dir / "campaigns" / "newcomer.csv"
    campaign.parent.mkdir(parents=True)
    campaign.write_text("id,prompt\nfirst,a lighthouse at dusk\nsecond,a red bicycle\n")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"FAL_KEY", "FAL_QUEUE_RUN_HOST", "SSL_CERT_FILE", "DAGSTER_HOME"}
    }
    env["FALASSETS_DATA_DIR"] = str(data_dir)

    def falassets(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "falassets.cli", *argv],
            env=env,
            cwd=data_dir,
            capture_output=True,
            text=True,
            timeout=240,
        )

    done = falassets("run", str(campaign), "--plain")
    assert done.returncode == 0, done.stdout + done.stderr
    pid = int((data_dir / ".state" / "sim" / "emulator.pid").read_text())
    assert (
        f"the fal emulator is still running on {builtin} (pid {pid}); stop it with "
        "`falassets sim stop`"
    ) in done.stderr
    assert not re.search(r"BetaWarning|PreviewWarning", done.stdout + done.stderr)

    shell = subprocess.run(
        [str(DUCKDB_SHELL), "-readonly", "-json", "lineage.duckdb", "-c",
         "select count(*) as n from requests"],
        cwd=data_dir, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shell.returncode == 0, shell.stderr
    assert json.loads(shell.stdout) == [{"n": 2}]

    again = falassets("lineage")  # reuses the running emulator: no new notice
    assert again.returncode == 0 and "still running" not in again.stderr
    assert falassets("sim", "status").returncode == 0
    stopped = falassets("sim", "stop")
    assert stopped.returncode == 0 and f"(pid {pid})" in stopped.stdout
    assert not pid_exists(pid)


def test_status_tells_another_listener_from_nothing_at_all(builtin: str, capsys) -> None:
    from falassets.sim.control import SimProcess

    port = int(builtin.rsplit(":", 1)[1])
    with SimProcess.start("--time-scale", "0.01", port=port):  # its own CA, not this data dir's
        code, out, _ = run_cli(capsys, "sim", "status")
    assert code == 1
    assert f"something else answers on {builtin}" in out and "FALASSETS_SIM_PORT" in out
