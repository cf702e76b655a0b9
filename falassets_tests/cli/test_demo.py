"""`falassets demo`: the whole two-pass flow on its own emulator, and its refusal to spend
real money by accident."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from falassets.campaigns import load_campaign
from falassets.cli.demo import choose_winners, demo_csv, demo_rows
from falassets.lineage import decisions, queries
from falassets_tests.cli.test_cli_support import partition_statuses, run_cli, use_dagster_home


@pytest.fixture
def home(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_dagster_home(data_dir, monkeypatch)


@pytest.mark.slow
def test_demo_runs_drafts_pick_finals_and_report_and_says_where_to_look(
    data_dir, home, capsys
) -> None:
    code, out, err = run_cli(
        capsys, "demo", "--prompts", "8", "--winners", "3", "--time-scale", "0.01", "--plain"
    )

    assert code == 0, (out, err)
    report = json.loads((data_dir / "reports" / "demo" / "report.json").read_text())
    assert report["prompts"] == 8
    assert report["drafts"]["done"] == 8 and report["drafts"]["failed"] == 0
    assert report["picked"] == 3
    assert report["finals"]["done"] == 3 and report["finals"]["failed"] == 0
    sheet = Path(report["contact_sheets"][0])
    assert sheet.is_file()
    # Winners are recorded as the demo's decisions, and their finals went through the edit
    # endpoint (refine) at high quality.
    winners = decisions.winners("demo")
    assert len(winners) == 3
    finals = queries.latest_requests("demo", "final")
    assert {key.split("-", 1)[1] for key, _ in finals} == set(winners)
    assert all(row["endpoint"].endswith("/edit") for row in finals.values())
    assert set(partition_statuses("final_renders", [f"demo-{w}" for w in winners]).values()) == {
        "MATERIALIZED"
    }
    for where in (str(sheet), "falassets lineage", "duckdb -readonly", "falassets review"):
        assert where in out
    assert "falassets dev" in out


def test_demo_with_a_fal_key_refuses_without_real_and_shows_the_cost(
    data_dir, home, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("FAL_KEY", "key-id:very-secret-value")

    code, out, err = run_cli(capsys, "demo", "--prompts", "20")

    assert code == 2
    assert "--real" in err and "$" in err
    assert "very-secret-value" not in out + err
    assert not (data_dir / "campaigns").exists()


def test_demo_campaign_is_deterministic_varied_and_valid(tmp_path) -> None:
    assert demo_csv(50) == demo_csv(50)
    rows = demo_rows(200)
    assert len({row["prompt"] for row in rows}) == 200
    assert len({row["subject"] for row in rows}) >= 10 and len({row["colour"] for row in rows}) >= 8
    path = tmp_path / "demo.csv"
    path.write_bytes(demo_csv(200))
    assert len(load_campaign(path).rows) == 200


def test_winners_are_spread_over_the_completed_drafts() -> None:
    ids = [f"p{i}" for i in range(100)]
    picked = choose_winners(ids, 4)
    assert picked == ["p0", "p25", "p50", "p75"]
    assert choose_winners(ids[:2], 5) == ids[:2]
    assert choose_winners([], 3) == []


def test_demo_does_not_overwrite_a_users_own_demo_campaign(data_dir, home, capsys) -> None:
    mine = data_dir / "campaigns" / "demo.csv"
    mine.parent.mkdir(parents=True)
    mine.write_text("id,prompt\nmine_1,my own prompt\n")

    code, _, err = run_cli(capsys, "demo", "--prompts", "4", "--time-scale", "0.01")

    assert code == 2
    assert str(mine) in err and "Fix:" in err
    assert mine.read_text() == "id,prompt\nmine_1,my own prompt\n"
