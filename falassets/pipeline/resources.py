"""The Dagster resource that hands assets a configured render engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import dagster as dg
from pydantic import Field

from falassets.engine.render_engine import EventLog, RenderEngine
from falassets.engine.session import api_host, is_loopback, open_engine, queue_host
from falassets.lineage.passes import DEFAULT_CONCURRENCY, TEXT_TO_IMAGE
from falassets.pipeline.fal_environment import prepare_fal

__all__ = ["FalRenderer", "api_host", "is_loopback", "queue_host"]


class FalRenderer(dg.ConfigurableResource):
    """fal.ai (or the emulator, without a key) behind a rate limit, retries and lineage.

    In definitions: ``FalRenderer(fal_key=dg.EnvVar("FAL_KEY"))`` when FAL_KEY is set, else
    ``FalRenderer()`` (emulator; everything labelled simulated). Jobs carry their own endpoint;
    ``endpoint`` is the one assets should build text-to-image jobs for.
    """

    fal_key: str | None = Field(default=None, description="fal API key; None: the emulator")
    endpoint: str = TEXT_TO_IMAGE
    concurrency: int = Field(
        default=DEFAULT_CONCURRENCY, ge=1, description="requests in flight, machine-wide"
    )
    submit_timeout_s: float = 30.0
    render_timeout_s: float = 900.0  # a request not finished by then is cancelled, recorded
    retry_budget: int = Field(default=4, ge=1)  # attempts per job for retryable failures
    budget_usd: float | None = None  # stop submitting before spend would exceed this
    history_wait_s: float = Field(
        default=120.0,
        ge=0,
        description="how long a lost submit waits for fal's request history before it is "
        "recorded submit_unconfirmed (never resent)",
    )
    queue_ahead: int = Field(
        default=0,
        ge=0,
        description="requests kept waiting at a queueing fal beyond `concurrency` (raises the "
        "machine-wide cap to concurrency + queue_ahead); helps only when fal's status stream "
        "is unavailable and renders are polled",
    )

    @asynccontextmanager
    async def engine(
        self, *, run_id: str, log: EventLog | None = None, **overrides: Any
    ) -> AsyncIterator[RenderEngine]:
        """An engine for one batch; starts the built-in emulator when needed (prepare_fal).

        ``log`` receives human-readable events (pass Dagster's ``context.log``); ``overrides``
        set further :class:`EngineConfig` fields (tests, benchmarks).
        """
        prepare_fal(self.fal_key)
        async with open_engine(
            run_id=run_id,
            fal_key=self.fal_key,
            log=log,
            concurrency=self.concurrency,
            submit_timeout_s=self.submit_timeout_s,
            render_timeout_s=self.render_timeout_s,
            retry_budget=self.retry_budget,
            budget_usd=self.budget_usd,
            **{"history_wait_s": self.history_wait_s, "queue_ahead": self.queue_ahead, **overrides},
        ) as engine:
            yield engine
