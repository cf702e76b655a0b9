"""Questions the pipeline, the CLI and the review page ask of the lineage.

INTERFACE STUB: owned by the lineage work; signatures are the contract. These read the
journals directly (no DuckDB connection), so they are cheap and never contend for a lock.
"""

from __future__ import annotations

from typing import Any


def latest_requests(
    campaign: str | None = None, pass_name: str | None = None
) -> dict[tuple[str, str], dict[str, Any]]:
    """The latest request row (a dict with REQUEST_COLUMNS) per (partition_key, pass)."""
    raise NotImplementedError


def completed_by_job_key() -> dict[str, dict[str, Any]]:
    """Latest completed request row per job_key (for idempotent reuse)."""
    raise NotImplementedError


def summary() -> list[dict[str, Any]]:
    """Per campaign and pass: requests, completed, failed, pending, cancelled, spend (USD),
    simulated; what `falassets lineage` prints by default."""
    raise NotImplementedError
