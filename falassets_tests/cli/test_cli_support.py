"""Helpers for the CLI tests: run the command in-process, write campaigns, read Dagster."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from falassets.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``falassets ARGV`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_csv(path: Path, rows: dict[str, str], *, size: str = "landscape_4_3") -> Path:
    """A campaign file with columns id, prompt, image_size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "prompt", "image_size"])
        for prompt_id, prompt in rows.items():
            writer.writerow([prompt_id, prompt, size])
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to prove nothing was touched)."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def use_dagster_home(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DAGSTER_HOME inside this test's data dir (restored afterwards); the modules' ``home``
    fixture."""
    path = data_dir / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(path))
    return path


def partition_statuses(asset: str, keys: list[str]) -> dict[str, str]:
    """Dagster's own view of each partition (MATERIALIZED, FAILED, ...), in DAGSTER_HOME."""
    import dagster as dg

    from falassets.pipeline.assets.partitions import prompt_partitions, winner_partitions

    partitions = winner_partitions if asset == "final_renders" else prompt_partitions
    instance = dg.DagsterInstance.get()
    found = instance.get_status_by_partition(dg.AssetKey(asset), list(keys), partitions)
    return {key: (found.get(key).value if found.get(key) else "MISSING") for key in keys}
