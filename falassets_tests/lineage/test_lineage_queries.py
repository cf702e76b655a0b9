"""Lineage questions answered straight from the journals, and their agreement with the views."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from falassets import settings
from falassets.lineage import catalog, queries
from falassets.lineage.journal import Journal
from falassets.lineage.schema import REQUEST_COLUMNS, REQUEST_STATUSES
from falassets_tests.lineage.test_lineage_support import at, request_row, scenario, write_requests


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    monkeypatch.setenv("FALASSETS_DATA_DIR", str(root))
    return root


def view(sql: str) -> list[dict]:
    names, rows = catalog.query(sql)
    return [dict(zip(names, row, strict=True)) for row in rows]


def test_nothing_recorded_yet_gives_empty_answers(data_root: Path) -> None:
    assert queries.latest_requests() == {}
    assert queries.completed_by_job_key() == {}
    assert queries.summary() == []
    assert not data_root.exists()  # asking does not create anything


def test_latest_request_per_partition_and_pass(data_root: Path) -> None:
    scenario(settings.journal_dir())

    latest = queries.latest_requests()
    assert {key: row["request_id"] for key, row in latest.items()} == {
        ("spring-a", "draft"): "r2",
        ("spring-b", "draft"): "r3",
        ("spring-c", "draft"): "r6",
        ("spring-a", "final"): "r4",
        ("autumn-x", "draft"): "r5",
    }
    assert latest[("spring-a", "draft")]["status"] == "completed"
    assert latest[("spring-a", "final")]["error_type"] == "content_policy_violation"
    assert all(list(row) == list(REQUEST_COLUMNS) for row in latest.values())

    assert list(queries.latest_requests(campaign="spring", pass_name="final")) == [
        ("spring-a", "final")
    ]
    assert sorted(queries.latest_requests(campaign="autumn")) == [("autumn-x", "draft")]


def test_a_retry_still_pending_replaces_the_failure_before_it(data_root: Path) -> None:
    write_requests(
        settings.journal_dir(),
        [
            request_row("r1", "spring-a", submitted_at=at(1), status="failed"),
            request_row("r2", "spring-a", submitted_at=at(2), attempt=2),
        ],
    )
    assert queries.latest_requests()[("spring-a", "draft")]["request_id"] == "r2"


def test_a_late_snapshot_of_an_older_request_does_not_make_it_the_latest(
    data_root: Path,
) -> None:
    """A request resumed by a later run is journalled after its successor was submitted."""
    write_requests(
        settings.journal_dir(),
        [
            request_row("old", "spring-a", submitted_at=at(1)),
            request_row("new", "spring-a", submitted_at=at(2), status="completed"),
            request_row("old", "spring-a", submitted_at=at(1), status="completed"),
        ],
    )
    assert queries.latest_requests()[("spring-a", "draft")]["request_id"] == "new"
    assert view("SELECT request_id FROM latest_renders") == [{"request_id": "new"}]


def test_completed_by_job_key_keeps_a_render_a_later_attempt_failed_to_replace(
    data_root: Path,
) -> None:
    write_requests(
        settings.journal_dir(),
        [
            request_row("r1", "spring-a", job_key="k1", submitted_at=at(1)),
            request_row("r1", "spring-a", job_key="k1", status="completed", completed_at=at(2),
                        image_path="/renders/one.png"),
            request_row("r2", "spring-a", job_key="k1", status="failed", submitted_at=at(3)),
            request_row("r3", "spring-b", job_key="k2", status="completed", completed_at=at(4)),
            request_row("r4", "spring-b", job_key="k2", status="completed", completed_at=at(5)),
            request_row("r5", "spring-c", job_key="k3"),
        ],
    )  # fmt: skip

    done = queries.completed_by_job_key()
    assert {key: row["request_id"] for key, row in done.items()} == {"k1": "r1", "k2": "r4"}
    assert done["k1"]["image_path"] == "/renders/one.png"


def test_summary_counts_and_spend_match_the_cost_view(data_root: Path) -> None:
    scenario(settings.journal_dir())

    summary = queries.summary()
    assert summary == view("SELECT * FROM cost_by_campaign")
    spring_draft = next(s for s in summary if (s["campaign"], s["pass"]) == ("spring", "draft"))
    assert spring_draft == {
        "campaign": "spring", "pass": "draft", "requests": 4, "completed": 1, "failed": 2,
        "pending": 1, "cancelled": 0, "cost_usd": 0.011, "simulated": True,
    }  # fmt: skip


def test_a_torn_last_line_is_ignored(data_root: Path) -> None:
    path = write_requests(settings.journal_dir(), [request_row("r1", "spring-a")])
    with path.open("ab") as handle:
        handle.write(b'{"request_id":"r9","partition_key":"spring-z"')

    assert list(queries.latest_requests()) == [("spring-a", "draft")]
    assert queries.summary()[0]["requests"] == 1


snapshot = st.fixed_dictionaries(
    {
        "request": st.integers(0, 5),
        "status": st.sampled_from(REQUEST_STATUSES),
        "cost_usd": st.sampled_from([0.0, 0.011, 0.04, 0.25]),
        "journal": st.integers(0, 1),
    }
)


@hypothesis_settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=st.lists(snapshot, max_size=25), seed=st.randoms(use_true_random=False))
def test_python_answers_agree_with_the_duckdb_views(
    history: list[dict], seed, data_root: Path
) -> None:
    """Whatever the order of snapshots across journals, both readers pick the same rows.

    One data dir serves every example (so the catalog is built once); each example starts
    from empty journals."""
    # Fixed per request, as the engine keeps them: where it renders and when it was sent.
    requests = {
        n: {
            "partition_key": seed.choice(["spring-a", "spring-b", "autumn-a"]),
            "pass": seed.choice(["draft", "final"]),
            "submitted_at": at(seed.randrange(0, 4)),
            "simulated": seed.random() < 0.7,
        }
        for n in range(6)
    }
    for old in settings.journal_dir().glob("requests-*.jsonl"):
        if old != catalog.placeholder(old.parent, "requests"):
            old.unlink()
    journals = [Journal(settings.journal_dir(), "requests") for _ in range(2)]
    for step in history:
        row = request_row(f"r{step['request']}", **requests[step["request"]])
        row.update(status=step["status"], cost_usd=step["cost_usd"])
        journals[step["journal"]].append(row, durable=False)
    for journal in journals:
        journal.close()

    python_latest = {k: r["request_id"] for k, r in queries.latest_requests().items()}
    view_latest = {
        (r["partition_key"], r["pass"]): r["request_id"]
        for r in view("SELECT * FROM latest_renders")
    }
    assert python_latest == view_latest
    assert queries.summary() == view("SELECT * FROM cost_by_campaign")
