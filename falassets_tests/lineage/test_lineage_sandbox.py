"""`falassets lineage "SQL"` reads the lineage views and nothing else: no file is written or
read, no database attached, no extension installed, no setting undone (DuckDB refuses them);
every answer, the summary included, comes from lineage.duckdb, which exists from the first
recorded request."""

from __future__ import annotations

from pathlib import Path

import pytest

from falassets import settings
from falassets.lineage import journal as journal_module
from falassets.lineage.journal import Journal
from falassets_tests.cli.test_cli_support import run_cli, snapshot
from falassets_tests.lineage.test_lineage_support import request_row, write_requests

OUTSIDE = Path("/etc/hostname")


@pytest.fixture
def recorded(data_dir: Path) -> Path:
    """Two requests of campaign 'spring' in the data dir's journals; returns the journals."""
    write_requests(
        settings.journal_dir(),
        [
            request_row("r1", "spring-a", status="completed", cost_usd=0.01, simulated=True),
            request_row("r2", "spring-b", status="failed", error_type="timeout", simulated=True),
        ],
    )
    return settings.journal_dir()


def refused_sql(tmp_path: Path, journals: Path) -> dict[str, str]:
    return {
        "copy to any file": f"COPY (SELECT * FROM requests) TO '{tmp_path / 'out.csv'}'",
        "copy into the journals": (
            f"COPY (SELECT 'evil' AS request_id) TO '{journals / 'requests-evil.jsonl'}'"
        ),
        "copy after a select": f"SELECT 1; COPY (SELECT 1) TO '{tmp_path / 'out2.csv'}'",
        "export database": f"EXPORT DATABASE '{tmp_path / 'export'}'",
        "read_text outside": f"SELECT * FROM read_text('{OUTSIDE}')",
        "read_csv outside": f"SELECT * FROM read_csv('{OUTSIDE}')",
        "read_text by ..": f"SELECT * FROM read_text('{journals}/../../../../../{OUTSIDE}')",
        "attach a file": f"ATTACH '{tmp_path / 'other.duckdb'}' AS other",
        "attach memory": "ATTACH ':memory:' AS scratch",
        "install": "INSTALL httpfs",
        "load": "LOAD httpfs",
        "unlock": "SET lock_configuration = false",
        "reopen the file system": "SET disabled_filesystems = ''",
        "reset the file system": "RESET disabled_filesystems",
        "external access": "SET enable_external_access = true",
        "create a table": "CREATE TABLE scratch AS SELECT 1",
    }


CASES = list(refused_sql(Path("/t"), Path("/j")))


@pytest.mark.parametrize("case", CASES)
def test_sql_that_writes_or_reads_outside_the_lineage_is_refused_with_exit_2(
    case: str, recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql = refused_sql(tmp_path, recorded)[case]
    before = snapshot(settings.data_dir())
    before_tmp = sorted(path.name for path in tmp_path.iterdir())

    code, out, err = run_cli(capsys, "lineage", sql)

    assert code == 2, out
    assert "refused: `falassets lineage` only reads the lineage views" in err
    assert "duckdb -readonly" in err and len(err.strip().splitlines()) == 1
    assert OUTSIDE.read_text().strip() not in out
    after = snapshot(settings.data_dir())
    assert {name for name in after if name not in before} <= {"lineage.duckdb"}
    assert {name: after[name] for name in before} == before  # nothing written or changed
    assert sorted(path.name for path in tmp_path.iterdir()) == before_tmp


def test_the_views_still_answer_and_a_typo_is_an_sql_error_not_a_refusal(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys, "lineage", "select request_id, status from requests order by request_id"
    )
    assert code == 0
    assert [line.split() for line in out.splitlines()[2:4]] == [
        ["r1", "completed"],
        ["r2", "failed"],
    ]
    code, out, _ = run_cli(capsys, "lineage", "select error_type, count from failures_by_type")
    assert code == 0 and "timeout" in out

    code, _, err = run_cli(capsys, "lineage", "selec 1")
    assert code == 2 and "SQL error" in err and "refused" not in err


def test_the_summary_comes_from_the_cost_by_campaign_view(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary, _ = run_cli(capsys, "lineage")
    assert code == 0
    assert settings.lineage_db_path().is_file()  # asked of DuckDB, not folded in Python
    code, view, _ = run_cli(capsys, "lineage", "select * from cost_by_campaign")
    assert code == 0
    assert summary.splitlines()[:3] == view.splitlines()[:3]
    assert summary.splitlines()[2].split() == [
        "spring", "draft", "2", "1", "1", "0", "0", "0.01", "True",
    ]  # fmt: skip


def test_the_catalog_exists_once_a_process_records_its_first_line(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "_catalog_ensured", set())
    private = tmp_path / "private-journals"
    with Journal(private, "requests") as journal:
        journal.append(request_row("p1", "spring-a"))
    assert not settings.lineage_db_path().exists()  # a private folder has no catalog
    assert not (private.parent / "lineage.duckdb").exists()

    with Journal(settings.journal_dir(), "requests") as journal:
        assert not settings.lineage_db_path().exists()  # opening is not recording
        journal.append(request_row("r1", "spring-a"))
        assert settings.lineage_db_path().is_file()
