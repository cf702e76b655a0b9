"""Live progress of a pass for the `falassets` command: a bar on a terminal, plain lines in CI.

Where the figures come from, without any channel of our own between the run and the CLI:
- *done*: the run's ``ASSET_MATERIALIZATION`` events in DAGSTER_HOME (exact; reused renders
  count too, as they materialise their partitions);
- *in flight* (split into running and waiting in fal's queue, as fal last said), *failed so
  far* and *spend*: the request journals the engine appends to
  (``settings.journal_dir()``), filtered by the run ids of this pass and read incrementally
  (only the bytes appended since the last look).
Both are written by the run whether it executes in this process or in a step subprocess.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from falassets import settings
from falassets.engine.progress import format_progress
from falassets.engine.render_engine import Progress

PLAIN_INTERVAL_S = 10.0  # CI logs: a line every 10 s is readable and still shows a stall
POLL_INTERVAL_S = 0.5


class JournalTail:
    """Request rows appended to any ``requests-*.jsonl`` since the previous ``read()``."""

    def __init__(self, directory: Path, *, from_end: bool = True) -> None:
        self.directory = directory
        self.offsets: dict[Path, int] = {}
        if from_end:
            for path in directory.glob("requests-*.jsonl"):
                self.offsets[path] = path.stat().st_size

    def read(self) -> list[dict[str, Any]]:
        import json

        rows: list[dict[str, Any]] = []
        for path in sorted(self.directory.glob("requests-*.jsonl")):
            offset = self.offsets.get(path, 0)
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n")
            if end < 0:
                continue
            for line in data[: end + 1].splitlines():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
            self.offsets[path] = offset + end + 1
        return rows


class PassWatcher:
    """Follows the runs of one pass and keeps a :class:`Progress` snapshot up to date."""

    def __init__(self, asset: str, total: int) -> None:
        self.asset = asset
        self.total = total
        self.started = time.monotonic()
        self.run_ids: list[str] = []
        self._done: set[str] = set()
        self._cursors: dict[str, str | None] = {}
        self._requests: dict[str, dict[str, Any]] = {}  # request_id -> latest row
        self._tail = JournalTail(settings.journal_dir())
        self._lock = threading.Lock()
        self._instance: Any = None

    def add_run(self, run_id: str, keys: list[str]) -> None:
        with self._lock:
            if not self.run_ids:  # rates and ETA count from the first render run, not setup
                self.started = time.monotonic()
            self.run_ids.append(run_id)
            self._cursors[run_id] = None

    def poll(self) -> Progress:
        """Read what is new in the event log and journals; return the current snapshot."""
        with self._lock:
            self._poll_events()
            for row in self._tail.read():
                if row.get("run_id") in self._cursors and row.get("request_id"):
                    self._requests[row["request_id"]] = row
            return self._snapshot()

    def _poll_events(self) -> None:
        from dagster import AssetKey, DagsterEventType

        from falassets.pipeline.launch import dagster_instance

        if not self._cursors:
            return
        if self._instance is None:
            self._instance = dagster_instance()
        key = AssetKey(self.asset)
        for run_id, cursor in list(self._cursors.items()):
            while True:
                connection = self._instance.get_records_for_run(
                    run_id,
                    cursor=cursor,
                    of_type=DagsterEventType.ASSET_MATERIALIZATION,
                    limit=1000,
                )
                for record in connection.records:
                    event = record.event_log_entry.dagster_event
                    if event.asset_key == key and event.partition:
                        self._done.add(event.partition)
                cursor = connection.cursor
                if not connection.has_more:
                    break
            self._cursors[run_id] = cursor

    def _snapshot(self) -> Progress:
        latest_by_key: dict[str, dict[str, Any]] = {}
        in_flight = 0
        at_fal = {"IN_QUEUE": 0, "IN_PROGRESS": 0}
        spend = 0.0
        for row in self._requests.values():
            spend += float(row.get("cost_usd") or 0.0)
            if row.get("status") == "pending":
                in_flight += 1
                if row.get("fal_status") in at_fal:
                    at_fal[row["fal_status"]] += 1
            key = row.get("partition_key")
            current = latest_by_key.get(key)
            if current is None or str(row.get("recorded_at", "")) >= str(
                current.get("recorded_at", "")
            ):
                latest_by_key[key] = row
        failed = sum(
            1
            for key, row in latest_by_key.items()
            if row.get("status") in ("failed", "cancelled") and key not in self._done
        )
        done = len(self._done)
        return Progress(
            total=self.total,
            done=done,
            failed=failed,
            in_flight=in_flight,
            queued=max(0, self.total - done - failed - in_flight),
            spend_usd=round(spend, 6),
            elapsed_s=time.monotonic() - self.started,
            waiting_at_fal=at_fal["IN_QUEUE"],
            running_at_fal=at_fal["IN_PROGRESS"],
        )


class ProgressDisplay:
    """Shows a watcher's progress until stopped: rich bar on a TTY, else periodic lines."""

    def __init__(
        self,
        watcher: PassWatcher,
        *,
        label: str,
        plain: bool | None = None,
        stream: TextIO | None = None,
        interval_s: float = PLAIN_INTERVAL_S,
    ) -> None:
        self.watcher = watcher
        self.label = label
        self.stream = stream or sys.stderr
        self.plain = plain if plain is not None else not self.stream.isatty()
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="falassets-progress", daemon=True)
        self.last: Progress | None = None

    def __enter__(self) -> ProgressDisplay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _safe_poll(self) -> Progress | None:
        try:
            self.last = self.watcher.poll()
        except Exception:  # a display must never break the run it watches
            return self.last
        return self.last

    def _loop(self) -> None:
        if self.plain:
            self._plain_loop()
        else:
            self._bar_loop()

    def _plain_loop(self) -> None:
        printed = ""
        next_line = 0.0
        while True:
            stopping = self._stop.wait(POLL_INTERVAL_S)
            progress = self._safe_poll()
            now = time.monotonic()
            if progress is not None and (stopping or now >= next_line):
                line = f"{self.label}: {format_progress(progress)}"
                if line != printed:
                    print(line, file=self.stream, flush=True)
                    printed = line
                next_line = now + self.interval_s
            if stopping:
                return

    def _bar_loop(self) -> None:
        """A bar with the progress line under it (the line is ~80 characters: it does not fit
        beside a bar on a standard terminal)."""
        from rich.console import Console, Group
        from rich.live import Live
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        console = Console(file=self.stream)
        total = max(1, self.watcher.total)

        def view(progress: Progress | None) -> Group:
            finished = 0 if progress is None else progress.done + progress.failed
            row = Table.grid(padding=(0, 1))
            row.add_row(
                Text(self.label, style="bold"),
                ProgressBar(total=total, completed=finished, width=max(10, console.width - 40)),
                Text(f"{100 * finished / total:3.0f}%"),
            )
            line = "starting…" if progress is None else format_progress(progress)
            return Group(row, Text(line, overflow="fold"))

        with Live(view(None), console=console, refresh_per_second=4, transient=False) as live:
            while True:
                stopping = self._stop.wait(POLL_INTERVAL_S)
                live.update(view(self._safe_poll()))
                if stopping:
                    return


def watch(
    asset: str, total: int, *, label: str, plain: bool | None
) -> tuple[PassWatcher, ProgressDisplay, Callable[[str, list[str]], None]]:
    """A watcher, its display, and the ``on_run_start`` hook for :func:`launch.run_pass`."""
    watcher = PassWatcher(asset, total)
    display = ProgressDisplay(watcher, label=label, plain=plain)
    return watcher, display, watcher.add_run
