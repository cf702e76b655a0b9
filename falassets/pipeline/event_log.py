"""Dagster's SQLite event log, writing a batch of asset events in one transaction.

Why: a single-run backfill over N prompts makes Dagster store N "materialization planned"
events before the step starts. Dagster hands them to the storage as one batch (when
``DAGSTER_EVENT_BATCH_SIZE`` is set), but its SQLite storage writes them one by one: two
committed transactions and a fresh SQLAlchemy engine per event, ~16 ms each, so 1,000 prompts
waited ~16 s before the first render. Here the batch is two transactions (run shard, index
shard), storing exactly the rows the one-by-one path stores, so partition status (and the
UI's "failed and missing" filter) is unchanged. Anything else falls back to Dagster's path.

Opt-in, and with its Postgres twin (:mod:`falassets.pipeline.event_log_postgres`, which shares
the batching rule below) the only falassets module that touches Dagster's private API (the
subclass and the index-shard helpers below change without notice between Dagster minor
versions, which is why pyproject pins ``dagster<1.14``). A home uses it only when its
``dagster.yaml`` says so::

    event_log_storage:
      module: falassets.pipeline.event_log
      class: BatchedSqliteEventLogStorage
      config:
        dagster_home: {env: DAGSTER_HOME}
        batch_writes: true     # false: Dagster's own one-by-one writes, nothing else changes

``launch.prepare_dagster_home`` writes that block for a new home; set ``batch_writes: false``
(or delete the block: the storage directory is Dagster's default, so every run stays) to go
back to Dagster's storage. The contract, "same rows and partition statuses as Dagster's own
storage", is pinned by falassets_tests/pipeline/test_dagster_event_log.py against Dagster's
default storage; run it before widening the pin.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import Field, StringSource

# Dagster's private API: allowed here and in event_log_postgres only (a test enforces it).
from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlalchemy_compat import db_result
from dagster._serdes import ConfigurableClassData

# Dagster batches these (planned events at run creation); they only touch the event tables
# and the asset-key table, which is what the batched path writes.
BATCHED_EVENT_TYPES = frozenset(
    {
        DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
        DagsterEventType.ASSET_MATERIALIZATION,
        DagsterEventType.ASSET_OBSERVATION,
    }
)


# How many buffered events Dagster hands the storage at once: bounds one write transaction
# (other writers wait on SQLite's lock meanwhile) while 1,000 planned events become one write.
EVENT_BATCH_SIZE = "1000"


def event_log_directory(dagster_home: str) -> str:
    """Where Dagster's default SQLite storage keeps run event logs, so switching a home to this
    class keeps every run already recorded there."""
    return os.path.join(dagster_home, "history", "runs", "")


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` whose ``store_event_batch`` really batches. Its one config
    field, ``dagster_home``, is the home (see the ``dagster.yaml`` in ``launch.py``)."""

    def __init__(
        self,
        dagster_home: str,
        inst_data: ConfigurableClassData | None = None,
        batch_writes: bool = True,
    ):
        self.batch_writes = batch_writes
        if batch_writes:
            turn_on_batching()
        super().__init__(base_dir=event_log_directory(dagster_home), inst_data=inst_data)

    @classmethod
    def config_type(cls) -> Mapping[str, Any]:
        return {
            "dagster_home": Field(StringSource),
            "batch_writes": Field(bool, is_required=False, default_value=True),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> BatchedSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        if not self.batch_writes or not batchable(events):
            super().store_event_batch(events)
            return
        statements = [self.prepare_insert_event(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:  # one transaction
            for statement in statements:
                conn.execute(statement)
        # Mirror into the index shard, as SqliteEventLogStorage.store_event does per event.
        with self.index_transaction() as conn:
            event_ids: list[int] = []
            for statement in statements:
                with db_result(conn, statement) as result:
                    event_ids.append(result.inserted_primary_key[0])
            self._store_asset_event_tags(conn, events, event_ids)
            for index in latest_per_asset_and_type(events):
                self._store_asset_event(conn, events[index], event_ids[index])


def turn_on_batching() -> None:
    """Dagster buffers batchable events only when ``DAGSTER_EVENT_BATCH_SIZE`` is set, and
    reads it per event in whichever process holds the instance (CLI, webserver, daemon, run
    worker): every one of them builds its storage first, so the home's dagster.yaml alone
    turns batching on. A value the user chose (0 disables batching) is kept."""
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)


def latest_per_asset_and_type(events: Sequence[EventLogEntry]) -> list[int]:
    """Indexes of the events whose asset rows to write, in batch order.

    Each event type sets its own columns of the asset's row, so writing the last event of
    each (asset, type) leaves what writing every event in turn would (dagster-postgres's own
    batches keep only the last event, too)."""
    latest: dict[tuple[str, DagsterEventType], int] = {}
    for index, event in enumerate(events):
        dagster_event = event.get_dagster_event()
        latest[(dagster_event.asset_key.to_string(), dagster_event.event_type)] = index
    return sorted(latest.values())


def batchable(events: Sequence[EventLogEntry]) -> bool:
    """One run's asset events of the batched kinds, each naming its asset."""
    if len(events) < 2 or len({event.run_id for event in events}) != 1:
        return False
    return all(
        event.is_dagster_event
        and event.dagster_event_type in BATCHED_EVENT_TYPES
        and event.get_dagster_event().asset_key is not None
        for event in events
    )
