"""The one thing falassets sets in dagster-celery's run loop, pinned: if a dagster-celery
release stops reading ``TICK_SECONDS`` at call time, every run again ends a second or two after
its step (see ``falassets.pipeline.celery_executor``), and this says so before a benchmark does."""

from __future__ import annotations

import inspect

from dagster_celery import core_execution_loop
from dagster_celery.executor import CeleryExecutor

from falassets.pipeline.celery_executor import TICK_S, WatchedCeleryExecutor


def test_the_run_loop_sleeps_the_module_tick_it_reads_at_call_time() -> None:
    source = inspect.getsource(core_execution_loop.core_celery_execution_loop)
    assert "time.sleep(TICK_SECONDS)" in source


def test_a_run_process_polls_its_steps_at_the_short_tick(monkeypatch) -> None:
    monkeypatch.setattr(core_execution_loop, "TICK_SECONDS", 1)
    base = CeleryExecutor.for_cli(broker="redis://unused")
    executor = WatchedCeleryExecutor(worker_lost_after_s=60.0, retries=base.retries)
    executor.execute(None, None)  # the loop is a generator: nothing runs until iterated
    assert core_execution_loop.TICK_SECONDS == TICK_S < 1
