"""`falassets doctor`: one line per check, exit 0 / 1 / 2, and the key never printed."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from falassets.cli import doctor as cli_doctor
from falassets.lineage import catalog
from falassets.sim.control import SimProcess


def doctor(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    cli_doctor.add_parser(parser.add_subparsers())
    args = parser.parse_args(["doctor", *argv])
    capsys.readouterr()
    code = args.handler(args)
    out, err = capsys.readouterr()
    return code, out + err


def verdicts(output: str) -> dict[str, str]:
    """{check name: OK|WARN|FAIL} from doctor's lines."""
    found = {}
    for line in output.splitlines():
        verdict, _, rest = line.partition("  ")
        name = rest.strip().split("  ")[0].strip()
        if verdict.strip() in ("OK", "WARN", "FAIL", "SKIP"):
            found[name] = verdict.strip()
    return found


def test_every_check_passes_and_the_render_reaches_lineage(
    sim: SimProcess, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = doctor(capsys, "--render")

    assert code == 0, output
    assert verdicts(output) == {
        "mode": "OK",
        "queue host": "OK",
        "key": "OK",
        "request history": "OK",
        "observed limit": "OK",
        "render": "OK",
    }
    _, rows = catalog.query(
        "select status, campaign, pass, simulated, input->>'quality' from requests"
    )
    assert rows == [("completed", "doctor", "draft", True, "low")]
    assert sim.ledger()["totals"]["accepted"] == 1


def test_a_refused_key_is_a_setup_error_and_is_never_printed(
    sim: SimProcess,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim.configure(valid_key="the-right-key")
    monkeypatch.setenv("FAL_KEY", "wrong-key-7f3a9c")

    code, output = doctor(capsys, "--render", "--yes")

    assert code == 2, output
    assert verdicts(output)["key"] == "FAIL"
    assert "render" not in verdicts(output)  # nothing is submitted with a refused key
    assert "wrong-key-7f3a9c" not in output
    assert "FAL_KEY" in output  # the fix names the variable


def test_an_untrusted_queue_host_names_ssl_cert_file(
    sim: SimProcess,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import certifi

    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())  # a bundle without the emulator's CA

    code, output = doctor(capsys)

    assert code == 2, output
    assert verdicts(output)["queue host"] == "FAIL"
    assert "SSL_CERT_FILE" in output


def test_a_render_without_confirmation_bills_nothing(
    sim: SimProcess,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAL_KEY", "some-key")  # with a key the render would cost money
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)

    code, output = doctor(capsys, "--render")

    assert code == 1, output
    assert "--yes" in output
    assert verdicts(output)["render"] == "SKIP"
    assert sim.ledger()["totals"]["accepted"] == 0
