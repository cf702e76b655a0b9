"""lineage.duckdb: views over the journals that users open read-only while runs write."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from falassets import settings
from falassets.lineage import catalog
from falassets.lineage.journal import Journal
from falassets.lineage.schema import DECISION_COLUMNS, REQUEST_COLUMNS
from falassets_tests.lineage.test_lineage_support import (
    DUCKDB_SHELL,
    TIMEOUT_S,
    Child,
    at,
    request_row,
    run_python,
    scenario,
    write_requests,
)

VIEWS = (
    "requests",
    "request_events",
    "latest_renders",
    "failures_by_type",
    "cost_by_campaign",
    "pending",
    "decisions",
    "decision_events",
    "winners",
    "catalog_info",
)

HOLDER = """
import duckdb, json, sys
con = duckdb.connect({db!r}, read_only=True)
print("ready")
for sql in sys.stdin:
    print(json.dumps(con.execute(sql).fetchall(), default=str))
"""


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    monkeypatch.setenv("FALASSETS_DATA_DIR", str(root))
    return root


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A current directory unrelated to the data dir, as a user's shell would have."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


def rows_as_dicts(sql: str, params: list | None = None) -> list[dict]:
    names, rows = catalog.query(sql, params)
    return [dict(zip(names, row, strict=True)) for row in rows]


def test_empty_data_dir_gives_a_catalog_whose_views_all_answer(data_root: Path) -> None:
    assert not data_root.exists()
    path = catalog.ensure_catalog()

    assert path == data_root / "lineage.duckdb"
    for view in VIEWS[:-1]:
        assert catalog.query(f"SELECT * FROM {view}")[1] == [], view
    names, _ = catalog.query("SELECT * FROM requests")
    assert names == list(REQUEST_COLUMNS)
    names, _ = catalog.query("SELECT * FROM decisions")
    assert names == list(DECISION_COLUMNS)


def test_catalog_holds_only_views_and_records_what_it_points_at(data_root: Path) -> None:
    catalog.ensure_catalog()
    kinds = catalog.query(  # the file's own tables (the sandbox adds temporary ones)
        "SELECT DISTINCT table_type FROM information_schema.tables WHERE table_catalog <> 'temp'"
    )[1]
    assert kinds == [("VIEW",)]
    info = rows_as_dicts("SELECT * FROM catalog_info")[0]
    assert info["catalog_version"] == catalog.CATALOG_VERSION
    assert info["journal_dir"] == str(settings.journal_dir())


def test_views_give_the_latest_snapshot_and_the_latest_request(data_root: Path) -> None:
    scenario(settings.journal_dir())

    status = dict(catalog.query("SELECT request_id, status FROM requests")[1])
    assert status == {"r1": "failed", "r2": "completed", "r3": "pending", "r4": "failed",
                      "r5": "completed", "r6": "failed"}  # fmt: skip
    assert catalog.query("SELECT count(*) FROM request_events")[1] == [(9,)]

    latest = {
        (r["partition_key"], r["pass"]): r["request_id"]
        for r in rows_as_dicts("SELECT * FROM latest_renders")
    }
    assert latest == {("spring-a", "draft"): "r2", ("spring-b", "draft"): "r3",
                      ("spring-c", "draft"): "r6", ("spring-a", "final"): "r4",
                      ("autumn-x", "draft"): "r5"}  # fmt: skip

    failures = {
        (r["pass"], r["error_type"]): (r["count"], r["example_request_id"])
        for r in rows_as_dicts("SELECT * FROM failures_by_type WHERE campaign = ?", ["spring"])
    }
    assert failures[("draft", "transport")][0] == 2
    assert failures[("draft", "transport")][1] in {"r1", "r6"}
    assert failures[("final", "content_policy_violation")] == (1, "r4")

    cost = rows_as_dicts("SELECT * FROM cost_by_campaign")
    assert cost == [
        {"campaign": "autumn", "pass": "draft", "requests": 1, "completed": 1, "failed": 0,
         "pending": 0, "cancelled": 0, "cost_usd": 0.2, "simulated": False},
        {"campaign": "spring", "pass": "draft", "requests": 4, "completed": 1, "failed": 2,
         "pending": 1, "cancelled": 0, "cost_usd": 0.011, "simulated": True},
        {"campaign": "spring", "pass": "final", "requests": 1, "completed": 0, "failed": 1,
         "pending": 0, "cancelled": 0, "cost_usd": 0.0, "simulated": True},
    ]  # fmt: skip

    assert [r["request_id"] for r in rows_as_dicts("SELECT * FROM pending")] == ["r3"]
    row = rows_as_dicts("SELECT * FROM requests WHERE request_id = 'r2'")[0]
    assert json.loads(row["input"]) == {"prompt": "a picture of a", "quality": "low"}
    assert row["submitted_at"] == datetime.fromisoformat(at(2))


def test_a_torn_last_line_is_skipped_not_shown_as_an_empty_row(data_root: Path) -> None:
    journal = write_requests(settings.journal_dir(), [request_row("r1", "spring-a")])
    with journal.open("ab") as handle:
        handle.write(b'{"request_id":"r2","partition_key":"spring-b","sta')

    assert catalog.query("SELECT request_id FROM request_events")[1] == [("r1",)]
    assert catalog.query("SELECT request_id FROM requests")[1] == [("r1",)]


def test_duckdb_shell_opens_it_read_only_from_another_directory(
    data_root: Path, elsewhere: Path
) -> None:
    if not DUCKDB_SHELL.exists():
        pytest.skip("the duckdb shell (duckdb-cli, a dev dependency) is not installed")
    scenario(settings.journal_dir())
    db = catalog.ensure_catalog()
    sql = "SELECT request_id, status FROM requests ORDER BY request_id"

    shell = subprocess.run(
        [str(DUCKDB_SHELL), "-readonly", str(db), "-json", "-c", sql],
        cwd=elsewhere, capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip

    assert shell.returncode == 0, shell.stderr
    assert [(r["request_id"], r["status"]) for r in json.loads(shell.stdout)] == [
        ("r1", "failed"), ("r2", "completed"), ("r3", "pending"), ("r4", "failed"),
        ("r5", "completed"), ("r6", "failed"),
    ]  # fmt: skip


def test_python_opens_it_read_only_from_another_directory(data_root: Path, elsewhere: Path) -> None:
    scenario(settings.journal_dir())
    db = catalog.ensure_catalog()

    count = run_python(
        f"""
        import duckdb, json
        con = duckdb.connect({str(db)!r}, read_only=True)
        print(json.dumps(con.execute("SELECT count(*) FROM requests").fetchone()[0]))
        """,
        data_dir=None,
        cwd=elsewhere,
    )
    assert count == 6


def test_an_open_connection_sees_rows_appended_after_it_opened(data_root: Path) -> None:
    con = catalog.connect_readonly()
    try:
        assert con.execute("SELECT count(*) FROM requests").fetchone() == (0,)
        with Journal(settings.journal_dir(), "requests") as journal:
            for n in range(1, 51):
                journal.append(request_row(f"r{n}", f"spring-p{n}"))
                assert con.execute("SELECT count(*) FROM requests").fetchone() == (n,)
    finally:
        con.close()
    assert catalog.query("SELECT count(*) FROM requests")[1] == [(50,)]


def test_a_reader_holding_it_open_blocks_no_writer_builder_or_reader(
    data_root: Path, elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = catalog.ensure_catalog()
    holder = Child(HOLDER.format(db=str(db)), data_dir=None, cwd=elsewhere)
    try:
        assert holder.ask("SELECT count(*) FROM requests") == [[0]]

        write_requests(settings.journal_dir(), [request_row("r1", "spring-a")])
        assert holder.ask("SELECT count(*) FROM requests") == [[1]]

        other = run_python(
            """
            import json
            from falassets.lineage import catalog
            catalog.ensure_catalog()
            print(json.dumps(catalog.query("SELECT request_id FROM requests")[1]))
            """,
            data_dir=data_root,
            cwd=elsewhere,
        )
        assert other == [["r1"]]

        # An outdated catalog is rebuilt and moved into place under the holder's feet.
        monkeypatch.setattr(catalog, "CATALOG_VERSION", catalog.CATALOG_VERSION + 1)
        catalog.ensure_catalog()
        assert catalog.query("SELECT catalog_version FROM catalog_info")[1] == [
            (catalog.CATALOG_VERSION,)
        ]
        write_requests(settings.journal_dir(), [request_row("r2", "spring-b")])
        assert holder.ask("SELECT count(*) FROM requests") == [[2]]
    finally:
        exit_code = holder.finish()
    assert exit_code == 0


def test_two_writer_processes_appending_at_once_lose_nothing(
    data_root: Path, elsewhere: Path
) -> None:
    writer = """
    import json, sys
    from falassets import settings
    from falassets.lineage.journal import Journal
    from falassets_tests.lineage.test_lineage_support import request_row
    name = sys.argv[1]
    journal = Journal(settings.journal_dir(), "requests")
    print("ready")
    sys.stdin.readline()
    for n in range(300):
        journal.append(request_row(f"{name}-{n}", f"{name}-p{n}"))
        journal.append(request_row(f"{name}-{n}", f"{name}-p{n}", status="completed"))
    print(json.dumps(n + 1))
    """
    project = Path(__file__).resolve().parents[2]
    writers = [
        Child(writer.replace("sys.argv[1]", repr(name)), data_dir=data_root, cwd=project)
        for name in ("alpha", "beta")
    ]
    try:
        with catalog.connect_readonly() as reader:
            for child in writers:
                child.send("go")
            # Reading while both write must neither fail nor disturb them.
            reader.execute("SELECT count(*) FROM request_events").fetchone()
            assert [child.answer() for child in writers] == [300, 300]
    finally:
        for child in writers:
            child.kill()

    counts = catalog.query(
        "SELECT campaign, count(*), count(*) FILTER (WHERE status = 'completed') "
        "FROM requests GROUP BY campaign ORDER BY campaign"
    )[1]
    assert counts == [("alpha", 300, 300), ("beta", 300, 300)]
    assert catalog.query("SELECT count(*) FROM request_events")[1] == [(1200,)]


def test_racing_processes_build_one_valid_catalog(data_root: Path, elsewhere: Path) -> None:
    builder = """
    import json, sys
    from falassets.lineage import catalog
    print("ready")
    sys.stdin.readline()
    catalog.ensure_catalog()
    print(json.dumps(catalog.query("SELECT definition_sha FROM catalog_info")[1][0][0]))
    """
    builders = [Child(builder, data_dir=data_root, cwd=elsewhere) for _ in range(4)]
    try:
        for child in builders:
            child.send("go")
        shas = {child.answer() for child in builders}
    finally:
        for child in builders:
            child.kill()

    assert len(shas) == 1
    assert catalog.query("SELECT definition_sha FROM catalog_info")[1] == [(shas.pop(),)]
    leftovers = [p.name for p in data_root.iterdir() if p.name.endswith((".tmp", ".wal"))]
    assert leftovers == []


def test_catalog_follows_the_data_dir_when_it_moves(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_requests(settings.journal_dir(), [request_row("r1", "spring-a")])
    catalog.ensure_catalog()
    moved = tmp_path / "moved"
    data_root.rename(moved)
    monkeypatch.setenv("FALASSETS_DATA_DIR", str(moved))

    assert catalog.query("SELECT journal_dir FROM catalog_info")[1] == [(str(moved / "lineage"),)]
    assert catalog.query("SELECT request_id FROM requests")[1] == [("r1",)]


def test_a_damaged_catalog_file_is_rebuilt(data_root: Path) -> None:
    write_requests(settings.journal_dir(), [request_row("r1", "spring-a")])
    data_root.joinpath("lineage.duckdb").write_bytes(b"not a database" * 100)

    assert catalog.query("SELECT request_id FROM requests")[1] == [("r1",)]


def test_deleted_journals_folder_is_recreated_with_placeholders(data_root: Path) -> None:
    catalog.ensure_catalog()
    for path in settings.journal_dir().iterdir():
        path.unlink()
    settings.journal_dir().rmdir()

    assert catalog.query("SELECT count(*) FROM requests")[1] == [(0,)]


def test_glob_characters_and_quotes_in_the_data_dir_are_literal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    odd = tmp_path / "it's [odd] *dir?"
    decoy = tmp_path / "it's o *dirx"  # what '[odd]' and '?' would match as a pattern
    for root in (odd, decoy):
        monkeypatch.setenv("FALASSETS_DATA_DIR", str(root))
        write_requests(settings.journal_dir(), [request_row(f"r-{root.name[-1]}", "spring-a")])
    monkeypatch.setenv("FALASSETS_DATA_DIR", str(odd))

    assert catalog.query("SELECT request_id FROM requests")[1] == [("r-?",)]


def test_queries_are_read_only_and_take_parameters(data_root: Path) -> None:
    scenario(settings.journal_dir())
    names, rows = catalog.query(
        "SELECT request_id FROM requests WHERE campaign = ? AND status = ? ORDER BY 1",
        ["spring", "failed"],
    )
    assert names == ["request_id"]
    assert rows == [("r1",), ("r4",), ("r6",)]
    with pytest.raises(duckdb.Error, match="read-only"):
        catalog.query("CREATE TABLE scratch AS SELECT 1")


def test_a_read_write_holder_does_not_fail_a_run_and_gets_a_clear_message(
    data_root: Path, elsewhere: Path
) -> None:
    db = catalog.ensure_catalog()
    holder = Child(
        HOLDER.replace("read_only=True", "read_only=False").format(db=str(db)),
        data_dir=None,
        cwd=elsewhere,
    )
    try:
        assert catalog.ensure_catalog() == db  # what a run calls: no error, no rebuild
        write_requests(settings.journal_dir(), [request_row("r1", "spring-a")])
        with pytest.raises(catalog.CatalogError, match="-readonly"):
            catalog.connect_readonly()
        assert holder.ask("SELECT count(*) FROM requests") == [[1]]
    finally:
        holder.finish()
