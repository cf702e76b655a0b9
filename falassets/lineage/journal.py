"""Durable, append-only JSONL journals that many processes can write at once.

Each writing process gets a file of its own (``<kind>-<host>-<pid>-<start>.jsonl``), so
writers never interleave or lock each other, and a reader (DuckDB, a user's shell) never
blocks a writer. A line is written with one ``write`` on an ``O_APPEND`` descriptor, so a
SIGKILL cannot leave half a line, and ``fsync`` makes it survive a crash before we wait on
the request it describes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Journal folders whose lineage.duckdb this process has already made sure of.
_catalog_ensured: set[str] = set()
_catalog_lock = threading.Lock()


def utc_now() -> str:
    """ISO-8601 timestamp with microseconds and an explicit UTC offset."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def age_s(timestamp: Any) -> float:
    """Seconds since a journal timestamp; 0 when it is missing or unreadable (a caller then
    counts a deadline in full, the safe side for both waiting and holding capacity)."""
    if not isinstance(timestamp, str):
        return 0.0
    try:
        when = datetime.fromisoformat(timestamp)
    except ValueError:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - when).total_seconds())


def writer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Journal:
    """One process's append-only journal file of one kind (``requests``, ``decisions``)."""

    def __init__(self, directory: Path, kind: str) -> None:
        self.directory = Path(directory)
        self.kind = kind
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self.path = self.directory / f"{kind}-{writer_id()}-{stamp}-{time.time_ns() % 10**6}.jsonl"
        self._fd: int | None = None
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any], *, durable: bool = True) -> None:
        """Write one record as one line; with ``durable`` it is on disk when this returns."""
        line = json.dumps(
            {**record, "recorded_at": utc_now(), "writer": writer_id()},
            separators=(",", ":"),
            ensure_ascii=False,
            default=str,
        )
        data = (line + "\n").encode("utf-8")
        if self._fd is None:
            ensure_catalog_once(self.directory)
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(self._fd, data)
            if durable:
                os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ensure_catalog_once(directory: Path) -> None:
    """Make sure ``lineage.duckdb`` exists as soon as a process records anything, so the
    database the README tells users to open is there after the first ``falassets run``.

    Once per process and folder (the first journal opened for writing); only for the data
    dir's own journal folder (a test's private folder has no catalog). A failure is logged,
    never raised: recording a request matters more than its query catalog, which the next
    ``falassets lineage`` builds anyway.
    """
    from falassets import settings

    key = str(Path(directory).resolve())
    with _catalog_lock:
        if key in _catalog_ensured:
            return
        _catalog_ensured.add(key)
        if key != str(settings.journal_dir()):
            return
        try:
            from falassets.lineage import catalog

            catalog.ensure_catalog()
        except Exception as error:  # any failure: the journal line still matters more
            log.warning("could not create the lineage catalog: %s", error)


def read_journal(directory: Path, kind: str) -> Iterator[dict[str, Any]]:
    """Every record of one kind, file by file, skipping a torn last line (power loss) and
    any line that is not a JSON object (a hand-edited or foreign file must not break readers)."""
    for path in sorted(Path(directory).glob(f"{kind}-*.jsonl")):
        with path.open("rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                try:
                    record = json.loads(raw)
                except ValueError:  # JSONDecodeError, and bytes that are not UTF-8
                    continue
                if isinstance(record, dict):
                    yield record


def latest_by(records: Iterator[dict[str, Any]], *key: str) -> dict[tuple, dict[str, Any]]:
    """Fold snapshots to the latest per key (by ``recorded_at``, then file order)."""
    latest: dict[tuple, dict[str, Any]] = {}
    for record in records:
        k = tuple(record.get(name) for name in key)
        current = latest.get(k)
        if current is None or record.get("recorded_at", "") >= current.get("recorded_at", ""):
            latest[k] = record
    return latest
