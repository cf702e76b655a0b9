"""Dagster's celery executor, plus the one thing it lacks on hosts that can die: a step whose
worker vanished fails, instead of leaving its run STARTED forever.

What dagster-celery 0.29 does: each step is a Celery task, and the process that orchestrates
the run polls the task's result once a second until it is ready. Its Celery settings set
neither ``task_acks_late`` nor ``task_reject_on_worker_lost``, so a task is acknowledged when a
worker starts it and the broker forgets it. If the worker's pool process dies, the worker's
main process records ``WorkerLostError`` and the run fails. If the whole worker dies (SIGKILL
of its process group, a lost host), nobody records anything: the task is gone from Redis, its
result never comes, and the run waits forever (dagster-io/dagster#2336).

Why not ``task_acks_late``: Redis hands an unacknowledged task to another worker once
``visibility_timeout`` has passed, whether or not the first worker still runs it. A step that
outlasts the timeout (a chunk waiting behind the fal cap can) would run twice at once, and two
engines would each submit the prompts the other had not submitted yet: billed twice. A long
timeout instead leaves a dead host's step waiting that long.

What this adds: workers (``falassets worker``, :func:`worker_app`) mark a step STARTED with
their name (``task_track_started``) and take a task only when a pool process is free
(``worker_disable_prefetch``: a dead worker holds no task it had not started). While a step is
STARTED, the orchestrator pings its worker through the broker every few seconds (Celery's
control ``ping``); once the worker has not answered for ``worker_lost_after_s``, the step fails
with :class:`CeleryWorkerLost` and its task is revoked (in case the worker was only cut off).
The run then fails like any other, Dagster shows what the dead worker materialised as
materialised and the rest as failed, and "Backfill failed and missing" or ``falassets run``
again renders only those: the engine resumes the dead host's requests still at fal instead of
submitting them again.

Coupling: the run loop is dagster-celery's ``core_celery_execution_loop`` with its own task
submission wrapped (module functions of dagster-celery, pinned ``<0.30`` in pyproject), so the
step tasks, queues and priorities are exactly dagster-celery's and its workers can run them.
The loop sleeps its module's ``TICK_SECONDS`` (1 s) after every pass, including the one that
collects the last step, so each run ended 1-2 s after its step: the tail of every pass and
every hand-over between runs of one (bench/README.md). A run process sets it to
:data:`TICK_S` before the loop; ``falassets_tests/deploy/test_celery_loop.py`` pins that the
loop still reads it at call time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import dagster as dg
from dagster_celery import celery_executor as dagster_celery_executor
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor

#: The Celery settings runs and workers share, on top of dagster-celery's own defaults.
SHARED_CELERY_SETTINGS: dict[str, Any] = {
    "task_track_started": True,  # a running step names its worker in the result backend
    "worker_disable_prefetch": True,  # a worker holds only tasks it is running (Redis)
    "worker_prefetch_multiplier": 1,
    "task_acks_late": False,  # see the module docstring: never run a step twice at once
}

#: dagster-celery's queue (its workers listen on it; steps go there unless tagged otherwise).
QUEUE = "dagster"
#: How often a run process asks for its steps' results: one Redis GET per running step.
TICK_S = 0.05
CHECK_EVERY_S = 5.0  # how often a STARTED step's worker is pinged
PING_TIMEOUT_S = 2.0


class CeleryWorkerLost(Exception):
    """The worker running a step stopped answering: the step is lost, its run fails."""


class WatchedResult:
    """A step's Celery result that also turns ready when the worker running it is gone.

    dagster-celery's loop uses ``ready()``, ``get()`` and ``revoke()`` only."""

    def __init__(
        self,
        result: Any,
        ping: Callable[[str], bool],
        lost_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.result = result
        self.ping = ping
        self.lost_after_s = lost_after_s
        self.clock = clock
        self.lost: CeleryWorkerLost | None = None
        self._next_check = 0.0
        self._silent_since: float | None = None

    def ready(self) -> bool:
        if self.lost is not None or self.result.ready():
            return True
        now = self.clock()
        if now < self._next_check:
            return False
        self._next_check = now + CHECK_EVERY_S
        worker = self._worker()
        if worker is None or self.ping(worker):
            self._silent_since = None
            return False
        if self._silent_since is None:
            self._silent_since = now
        silent_s = now - self._silent_since
        if silent_s < self.lost_after_s:
            return False
        self.lost = CeleryWorkerLost(
            f"celery worker {worker} has not answered for {silent_s:.0f} s while running this "
            "step; the step is lost and its run fails. Partitions it materialised stay "
            "materialised; `falassets run` again (or 'Backfill failed and missing' in the UI) "
            "renders only the rest, resuming its requests still at fal without paying twice"
        )
        with contextlib.suppress(Exception):  # in case it was only cut off from the broker
            self.result.revoke(terminate=True)
        return True

    def _worker(self) -> str | None:
        """The worker running the step, once it is STARTED (queued steps have none)."""
        try:
            if self.result.state != "STARTED":
                return None
            info = self.result.info
        except Exception:  # the backend is unreachable: no evidence that the worker is gone
            return None
        return info.get("hostname") if isinstance(info, dict) else None

    def get(self) -> Any:
        if self.lost is not None:
            raise self.lost
        return self.result.get()

    def revoke(self, *args: Any, **kwargs: Any) -> Any:
        return self.result.revoke(*args, **kwargs)


def worker_answers(app: Any, worker: str) -> bool:
    """Celery's control ping to one worker, through the broker. A broker error is not evidence
    that the worker is gone, so it counts as an answer."""
    try:
        replies = app.control.ping(destination=[worker], timeout=PING_TIMEOUT_S)
    except Exception:
        return True
    return any(worker in reply for reply in replies or [])


class WatchedCeleryExecutor(CeleryExecutor):
    """dagster-celery's executor whose steps fail when their worker is lost."""

    def __init__(self, *, worker_lost_after_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.worker_lost_after_s = worker_lost_after_s

    def execute(self, plan_context: Any, execution_plan: Any) -> Any:
        from dagster_celery import core_execution_loop
        from dagster_celery.core_execution_loop import core_celery_execution_loop

        # See the module docstring: the run process is this run's own, so this touches no other.
        core_execution_loop.TICK_SECONDS = TICK_S
        return core_celery_execution_loop(
            plan_context, execution_plan, step_execution_fn=self._submit
        )

    def _submit(
        self, app: Any, plan_context: Any, step: Any, queue: str, priority: int, known: Any
    ) -> WatchedResult:
        from dagster_celery.executor import _submit_task

        result = _submit_task(app, plan_context, step, queue, priority, known)
        return WatchedResult(
            result, lambda worker: worker_answers(app, worker), self.worker_lost_after_s
        )


@dg.executor(
    name="celery",
    config_schema={
        **CELERY_CONFIG,
        "worker_lost_after_s": dg.Field(
            float,
            is_required=False,
            default_value=60.0,
            description="seconds a worker running a step may leave Celery's ping unanswered "
            "before the step counts as lost and its run fails",
        ),
    },
    requirements=dg.multiple_process_executor_requirements(),
)
def celery_executor(init_context: dg.InitExecutorContext) -> WatchedCeleryExecutor:
    """``dagster_celery.celery_executor`` (same config, same tasks and queues) whose steps fail
    when their worker is lost; see the module docstring."""
    base = dagster_celery_executor.executor_creation_fn(init_context)
    return WatchedCeleryExecutor(
        worker_lost_after_s=init_context.executor_config["worker_lost_after_s"],
        retries=base.retries,
        broker=base.broker,
        backend=base.backend,
        include=base.include,
        config_source=vars(base.config_source),
    )


def worker_app(broker: str, backend: str, *, include: list[str] | None = None) -> Any:
    """The Celery app a ``falassets worker`` runs: dagster-celery's, with its step task
    registered and the settings the runs use (:data:`SHARED_CELERY_SETTINGS`). ``include``:
    modules the worker imports once at start, before its pool processes fork."""
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    executor = CeleryExecutor.for_cli(
        broker=broker, backend=backend, include=include, config_source=SHARED_CELERY_SETTINGS
    )
    app = make_app(executor.app_args())
    create_task(app)
    return app
