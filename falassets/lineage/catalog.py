"""The DuckDB catalog over the journals: ``$FALASSETS_DATA_DIR/lineage.duckdb``.

INTERFACE STUB: owned by the lineage work; signatures are the contract.
The database holds only views over the JSONL journals (absolute paths), so it is written once
and then only ever opened read-only: a user's DuckDB shell never blocks a run and vice versa.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb


def ensure_catalog() -> Path:
    """Create (or recreate when outdated) lineage.duckdb with its views; safe across processes."""
    raise NotImplementedError


def connect_readonly() -> duckdb.DuckDBPyConnection:
    """A read-only connection to the catalog (created first if needed)."""
    raise NotImplementedError


def query(sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple]]:
    """Run one query on a short-lived read-only connection; return (column names, rows)."""
    raise NotImplementedError
