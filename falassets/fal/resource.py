"""The Dagster resource that hands assets a configured render engine.

INTERFACE STUB: owned by the engine work; signatures are the contract.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import dagster as dg

from falassets.fal.engine import RenderEngine


class FalRenderer(dg.ConfigurableResource):
    """fal.ai (or the emulator, without a key) behind a rate limit, retries and lineage.

    In definitions: ``FalRenderer(fal_key=dg.EnvVar("FAL_KEY"))`` when FAL_KEY is set, else
    ``FalRenderer()`` (emulator; everything labelled simulated).
    """

    fal_key: str | None = None
    endpoint: str = "openai/gpt-image-2"
    concurrency: int = 10
    submit_timeout_s: float = 30.0
    render_timeout_s: float = 900.0  # a request not finished by then is cancelled, recorded
    retry_budget: int = 4  # attempts per job for retryable failures
    budget_usd: float | None = None  # stop submitting before spend would exceed this

    @asynccontextmanager
    async def engine(self, *, run_id: str) -> AsyncIterator[RenderEngine]:
        """An engine for one batch; starts the built-in emulator when needed."""
        raise NotImplementedError
        yield  # pragma: no cover
