"""The deployment's event log (pipeline/event_log_postgres.py) against a real PostgreSQL: a run's
planned events in one statement, storing exactly what dagster-postgres's own storage stores (so
partition states, and "backfill failed and missing", are unchanged), on far fewer connections."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy

from falassets.pipeline import deployment
from falassets.pipeline.event_log_postgres import BatchedPostgresEventLogStorage
from falassets_tests.pipeline.test_dagster_event_log import FAILING, KEYS, run_range
from falassets_tests.services import PostgresServer

DAGSTER_POSTGRES_YAML = """\
storage:
  postgres:
    postgres_url:
      env: FALASSETS_POSTGRES_URL
"""


def _home(root: Path, name: str, config: str) -> str:
    home = root / name
    home.mkdir()
    (home / "dagster.yaml").write_text(config)
    return str(home)


def _run_range(home: str) -> tuple[dict[str, str], list[tuple], int, type]:
    """:func:`run_range` (the SQLite event log's test run) on this home, counting the
    database connections the storage opened meanwhile; and the home's event-log class."""
    with dg.DagsterInstance.from_config(home) as instance:
        states, events, connections = run_range(instance, (sqlalchemy.pool.Pool, "connect"))
        return states, events, connections, type(instance.event_log_storage)


@pytest.mark.parametrize("batch_writes", [True, False])
def test_a_range_run_stores_what_dagster_postgres_stores(
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    batch_writes: bool,
) -> None:
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")  # as the batched storage sets it
    monkeypatch.setenv("FALASSETS_POSTGRES_URL", postgres.new_database("events_dagster"))
    monkeypatch.setenv("DAGSTER_HOME", _home(tmp_path, "dagster", DAGSTER_POSTGRES_YAML))
    baseline = _run_range(os.environ["DAGSTER_HOME"])
    assert baseline[3].__name__ == "PostgresEventLogStorage"

    config = deployment.POSTGRES_DAGSTER_YAML
    if not batch_writes:  # the one setting that gives dagster-postgres's writes back
        config = config.replace("batch_writes: true", "batch_writes: false")
    monkeypatch.setenv("FALASSETS_POSTGRES_URL", postgres.new_database("events_batched"))
    monkeypatch.setenv("DAGSTER_HOME", _home(tmp_path, "batched", config))
    states, events, connections, storage = _run_range(os.environ["DAGSTER_HOME"])

    assert storage is BatchedPostgresEventLogStorage
    assert states == baseline[0]
    assert {key for key, state in states.items() if state == "FAILED"} == FAILING
    assert {key for key, state in states.items() if state == "MATERIALIZED"} == set(KEYS) - FAILING
    assert events == baseline[1]
    if batch_writes:
        # dagster-postgres opens two connections per planned event; batched, two in all
        assert connections <= baseline[2] - len(KEYS), (connections, baseline[2])
    else:
        assert connections > baseline[2] - len(KEYS) // 2, (connections, baseline[2])
