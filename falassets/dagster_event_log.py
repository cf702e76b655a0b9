"""Old home of the batched event log: ``dagster.yaml`` files written by falassets before
issue 12 name ``module: falassets.dagster_event_log``; this keeps them loading."""

from falassets.pipeline.event_log import BatchedSqliteEventLogStorage

__all__ = ["BatchedSqliteEventLogStorage"]
