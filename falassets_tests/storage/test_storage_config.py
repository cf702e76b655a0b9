"""``FALASSETS_RENDERS_URI`` as a user sets it: the default, a plain folder elsewhere, and the
mistakes (an unknown scheme, a backend package not installed), which stop a command at start
with one line naming the variable and the fix, never a traceback, and send nothing to fal."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from falassets import settings
from falassets_tests.cli.test_cli_support import run_cli, use_dagster_home, write_csv
from falassets_tests.review.test_review_support import ReviewServer
from falassets_tests.storage.storage_support import (
    PROMPTS,
    draft_rows,
    render_drafts,
    sha256,
)


@pytest.mark.parametrize(
    ("uri", "package"), [("s3://renders-bucket/team", "s3fs"), ("gs://renders-bucket", "gcsfs")]
)
def test_a_missing_backend_stops_run_with_exit_2_naming_the_package(
    sim, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys, uri: str, package: str
) -> None:
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    use_dagster_home(data_dir, monkeypatch)
    monkeypatch.setenv("FALASSETS_RENDERS_URI", uri)
    source = write_csv(data_dir / "incoming" / "spring.csv", PROMPTS)

    code, out, err = run_cli(capsys, "run", str(source), "--plain")

    assert code == 2, (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "FALASSETS_RENDERS_URI" in err and f"pip install {package}" in err
    assert sim.ledger()["totals"]["accepted"] == 0


def test_an_unknown_scheme_stops_every_command_with_exit_2(
    sim, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    use_dagster_home(data_dir, monkeypatch)
    monkeypatch.setenv("FALASSETS_RENDERS_URI", "bucketz://renders")
    source = write_csv(data_dir / "incoming" / "spring.csv", PROMPTS)

    for argv in (("run", str(source), "--plain"), ("run", str(source), "--dry-run"), ("demo",)):
        code, out, err = run_cli(capsys, *argv)
        assert code == 2, (argv, out, err)
        assert "Traceback" not in err
        assert "FALASSETS_RENDERS_URI='bucketz://renders'" in err
        assert "not a storage scheme" in err and "Fix:" in err
    assert sim.ledger()["totals"]["accepted"] == 0


def test_the_review_page_refuses_to_start_on_a_bad_renders_uri(data_dir: Path) -> None:
    env = {**os.environ, "FALASSETS_RENDERS_URI": "bucketz://renders"}
    done = subprocess.run(
        [sys.executable, "-m", "falassets.cli", "review", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # a page that starts anyway serves until killed: this fails it
    )
    assert done.returncode == 2
    assert "FALASSETS_RENDERS_URI" in done.stderr and "Traceback" not in done.stderr


async def test_unset_keeps_the_data_dirs_folder_and_records_a_file_uri(sim, data_dir) -> None:
    outcomes = await render_drafts(data_dir, prompts={"p1": PROMPTS["p1"]})

    row = draft_rows()["p1"]
    path = Path(row["image_path"])
    assert path.parent == settings.renders_dir() / "spring" / "draft"
    assert row["image_uri"] == path.as_uri()
    assert sha256(path.read_bytes()) == row["sha256"]
    assert outcomes[0].image_path == path and outcomes[0].image_uri == row["image_uri"]
    assert not list(path.parent.glob(".part-*"))


async def test_a_plain_folder_outside_the_data_dir_is_written_and_served(
    sim, data_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch
) -> None:
    shared = tmp_path_factory.mktemp("shared-volume")
    monkeypatch.setenv("FALASSETS_RENDERS_URI", str(shared))

    await render_drafts(data_dir, prompts={"p1": PROMPTS["p1"]})

    row = draft_rows()["p1"]
    path = Path(row["image_path"])
    assert path.is_relative_to(shared.resolve()) and path.is_file()
    assert row["image_uri"] == path.as_uri()
    assert not settings.renders_dir().exists()
    with ReviewServer(budget_usd=None) as server:
        [item] = server.request("GET", "/api/campaigns/spring").json()["items"]
        assert item["draft"]["image"] == f"/files/renders/spring/draft/{path.name}"
        reply = server.request("GET", item["draft"]["image"])
        assert reply.status == 200 and reply.body == path.read_bytes()
        (shared / "spring" / "draft" / "escape.png").symlink_to(data_dir / "lineage")
        assert server.request("GET", "/files/renders/spring/draft/escape.png").status in (
            403,
            404,
        )
