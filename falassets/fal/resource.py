"""The Dagster resource that hands assets a configured render engine."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import dagster as dg
import httpx
from pydantic import Field

from falassets import settings
from falassets.fal.engine import EngineConfig, EventLog, RenderEngine
from falassets.fal.intents import IntentLog
from falassets.fal.limiter import AdaptiveLimiter
from falassets.fal.queue_client import QueueClient
from falassets.fal.records import RequestJournal

#: Sent in place of a key to the emulator, which accepts any key unless told otherwise.
PLACEHOLDER_KEY = "simulated-no-key"
FAL_API_HOST = "api.fal.ai"


def queue_host() -> str:
    """The host fal_client submits to (``FAL_QUEUE_RUN_HOST``, default ``queue.fal.run``)."""
    explicit = os.environ.get("FAL_QUEUE_RUN_HOST", "").strip()
    if explicit:
        return explicit
    return "queue." + (os.environ.get("FAL_RUN_HOST", "").strip() or "fal.run")


def api_host(queue: str) -> str:
    """Where fal's request history lives: api.fal.ai for fal, the same host for a stand-in."""
    explicit = os.environ.get("FALASSETS_FAL_API_HOST", "").strip()
    if explicit:
        return explicit
    return FAL_API_HOST if queue.split(":")[0].endswith("fal.run") else queue


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0].strip("[]") if host.count(":") <= 1 else host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class FalRenderer(dg.ConfigurableResource):
    """fal.ai (or the emulator, without a key) behind a rate limit, retries and lineage.

    In definitions: ``FalRenderer(fal_key=dg.EnvVar("FAL_KEY"))`` when FAL_KEY is set, else
    ``FalRenderer()`` (emulator; everything labelled simulated). Jobs carry their own endpoint;
    ``endpoint`` is the one assets should build text-to-image jobs for.
    """

    fal_key: str | None = Field(default=None, description="fal API key; None: the emulator")
    endpoint: str = "openai/gpt-image-2"
    concurrency: int = Field(default=10, ge=1, description="requests in flight, machine-wide")
    submit_timeout_s: float = 30.0
    render_timeout_s: float = 900.0  # a request not finished by then is cancelled, recorded
    retry_budget: int = Field(default=4, ge=1)  # attempts per job for retryable failures
    budget_usd: float | None = None  # stop submitting before spend would exceed this

    @asynccontextmanager
    async def engine(
        self, *, run_id: str, log: EventLog | None = None, **overrides: Any
    ) -> AsyncIterator[RenderEngine]:
        """An engine for one batch; starts the built-in emulator when needed.

        ``log`` receives human-readable events (pass Dagster's ``context.log``); ``overrides``
        set further :class:`EngineConfig` fields (tests, benchmarks).
        """
        key = (self.fal_key or "").strip() or None
        host = queue_host()
        if key is None and settings.uses_builtin_emulator():
            from falassets.sim.control import ensure_builtin_emulator

            ensure_builtin_emulator()
        simulated = key is None or is_loopback(host)
        config = EngineConfig(
            concurrency=self.concurrency,
            submit_timeout_s=self.submit_timeout_s,
            render_timeout_s=self.render_timeout_s,
            retry_budget=self.retry_budget,
            budget_usd=self.budget_usd,
            **overrides,
        )
        limits = httpx.Limits(
            max_connections=4 * config.concurrency + 8,
            max_keepalive_connections=2 * config.concurrency + 4,
        )
        fal_http = httpx.AsyncClient(
            headers={
                "Authorization": f"Key {key or PLACEHOLDER_KEY}",
                "User-Agent": "falassets/0.1",
            },
            limits=limits,
            timeout=httpx.Timeout(120.0, connect=30.0),
            trust_env=True,
        )
        # Outputs come from a CDN: never send the key there.
        download_http = httpx.AsyncClient(
            limits=limits, timeout=httpx.Timeout(120.0, connect=30.0), trust_env=True
        )
        limiter = AdaptiveLimiter(
            config.concurrency,
            settings.state_dir() / "slots",
            backoff_base_s=config.backoff_base_s,
            backoff_cap_s=config.backoff_cap_s,
        )
        journal = RequestJournal(settings.journal_dir())
        intents = IntentLog(settings.state_dir() / "intents")
        queue = QueueClient(
            fal_http,
            queue_host=host,
            api_host=api_host(host),
            submit_timeout_s=config.submit_timeout_s,
        )
        try:
            yield RenderEngine(
                queue=queue,
                download_http=download_http,
                limiter=limiter,
                journal=journal,
                intents=intents,
                journal_dir=settings.journal_dir(),
                renders_dir=settings.renders_dir(),
                run_id=run_id,
                simulated=simulated,
                config=config,
                log=log,
                secret=key,
            )
        finally:
            await queue.aclose()
            await fal_http.aclose()
            await download_http.aclose()
            limiter.close()
            journal.close()
            intents.close()
