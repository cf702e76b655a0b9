"""Run the render engine on its own thread and event loop, feeding outcomes to the asset.

Dagster drives an async-generator asset by running its event loop only until the next
``yield``; while Dagster stores that event (tens of milliseconds on SQLite, more on a busy
machine or a remote instance) the loop, and with it every submit, stream and download, would
stand still. On its own loop the engine keeps rendering while Dagster writes events, so
per-partition bookkeeping overlaps the renders instead of adding to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from falassets.engine.jobs import RenderJob, RenderOutcome
from falassets.engine.render_engine import Progress, RenderEngine
from falassets.pipeline.resources import FalRenderer

_STOP_TIMEOUT_S = 60.0


class _QueuedLog:
    """The engine's logger: messages wait in a queue for the asset's thread to log them
    (Dagster's run logger belongs to the step's thread)."""

    def __init__(self, sink: queue.SimpleQueue[tuple[str, str]]) -> None:
        self._sink = sink

    def info(self, msg: str, *args: Any) -> None:
        self._sink.put(("info", msg % args if args else msg))

    def warning(self, msg: str, *args: Any) -> None:
        self._sink.put(("warning", msg % args if args else msg))


class RenderPump:
    """``start()``, then ``next()`` until it returns ``("done",)``; ``stop()`` always."""

    def __init__(
        self,
        renderer: FalRenderer,
        jobs: Sequence[RenderJob],
        *,
        run_id: str,
        prepare: Callable[[RenderOutcome], dict[str, Any]],
    ) -> None:
        self._renderer, self._jobs, self._run_id, self._prepare = renderer, jobs, run_id, prepare
        self._items: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.logs: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name="falassets-render", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._engine: RenderEngine | None = None

    def start(self) -> None:
        self._thread.start()

    def next(self, timeout_s: float) -> tuple[Any, ...] | None:
        """``("outcome", outcome, metadata)``, ``("error", exc)``, ``("done",)``, or None
        when nothing arrived within ``timeout_s``."""
        try:
            return self._items.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def progress(self) -> Progress | None:
        return self._engine.progress() if self._engine else None

    def stop(self) -> None:
        """Cancel what is still rendering (the engine records and cancels its requests)."""
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            # RuntimeError: the loop closed in between, so nothing is left to cancel.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
        self._thread.join(_STOP_TIMEOUT_S)

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()  # type: ignore[assignment]
        try:
            async with self._renderer.engine(
                run_id=self._run_id, log=_QueuedLog(self.logs)
            ) as engine:
                self._engine = engine
                async for outcome in engine.render(self._jobs):
                    metadata = await asyncio.to_thread(self._prepare, outcome) if outcome.ok else {}
                    self._items.put(("outcome", outcome, metadata))
        except BaseException as exc:  # handed to the asset's thread, which raises it
            self._items.put(("error", exc))
            if not isinstance(exc, Exception):
                raise
        else:
            self._items.put(("done",))
