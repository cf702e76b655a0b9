"""Dagster's Postgres event log, writing a run's planned events in one statement.

Why: a run of K partitions makes Dagster store K "materialization planned" events before its
step starts. With ``DAGSTER_EVENT_BATCH_SIZE`` set Dagster hands them to the storage as one
batch, but dagster-postgres batches only materializations and observations: planned events go
one by one, each on a fresh connection (its engine uses ``NullPool``) plus an index
transaction, ~20-30 ms each (bench/README.md, issue 13). Here such a batch is one multi-row
``INSERT … RETURNING`` and one index transaction, storing the rows the one-by-one path stores,
so partition status (and the UI's "failed and missing") is unchanged. Anything else goes to
dagster-postgres's own path.

Like :mod:`falassets.pipeline.event_log` (its SQLite twin, which holds the batching rule) this
subclasses a storage through Dagster's private API, pinned by ``dagster-postgres<0.30``; the
contract "same rows and statuses as dagster-postgres" is pinned by
``falassets_tests/deploy/test_postgres_event_log.py`` against a real PostgreSQL. The deployment's
``dagster.yaml`` (:data:`falassets.pipeline.deployment.POSTGRES_DAGSTER_YAML`) opts in::

    event_log_storage:
      module: falassets.pipeline.event_log_postgres
      class: BatchedPostgresEventLogStorage
      config:
        postgres_url: {env: FALASSETS_POSTGRES_URL}
        batch_writes: true     # false: dagster-postgres's own writes, nothing else changes
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import Field
from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.config import pg_config
from dagster._core.storage.event_log import SqlEventLogStorageTable
from dagster._serdes import ConfigurableClassData
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

from falassets.pipeline.event_log import batchable, latest_per_asset_and_type, turn_on_batching

#: The batches dagster-postgres already writes in one statement itself.
_NATIVE_BATCHES = (
    {DagsterEventType.ASSET_MATERIALIZATION},
    {DagsterEventType.ASSET_OBSERVATION},
)


class BatchedPostgresEventLogStorage(PostgresEventLogStorage):
    """``PostgresEventLogStorage`` whose ``store_event_batch`` also batches planned events.
    Config: dagster-postgres's own fields plus ``batch_writes`` (default true)."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
        batch_writes: bool = True,
    ):
        self.batch_writes = batch_writes
        if batch_writes:
            turn_on_batching()
        super().__init__(
            postgres_url,
            should_autocreate_tables=should_autocreate_tables,
            inst_data=inst_data,
            token_provider=token_provider,
        )

    @classmethod
    def config_type(cls) -> Mapping[str, Any]:
        return {**pg_config(), "batch_writes": Field(bool, is_required=False, default_value=True)}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> BatchedPostgresEventLogStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
            batch_writes=config_value.get("batch_writes", True),
        )

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        types = {event.dagster_event_type for event in events}
        if not self.batch_writes or types in _NATIVE_BATCHES or not batchable(events):
            super().store_event_batch(events)
            return
        statement = self.prepare_insert_event_batch(events)
        with self._connect() as conn:  # one statement; Postgres returns ids in VALUES order
            result = conn.execute(statement.returning(SqlEventLogStorageTable.c.id))
            event_ids = [int(row[0]) for row in result.fetchall()]
        with self.index_transaction() as conn:
            self._store_asset_event_tags(conn, events, event_ids)
            for index in latest_per_asset_and_type(events):
                self._store_asset_event(conn, events[index], event_ids[index])
