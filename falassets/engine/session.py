"""Open a render engine without Dagster: the resource, the CLI, benchmarks and child
processes all build engines here, so there is one wiring of clients, limiter and journals."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx

from falassets import settings
from falassets.engine.intents import IntentLog
from falassets.engine.limiter import AdaptiveLimiter
from falassets.engine.queue_client import QueueClient
from falassets.engine.records import RequestJournal
from falassets.engine.render_engine import EngineConfig, EventLog, RenderEngine
from falassets.storage.renders import renders_store

if TYPE_CHECKING:
    from falassets.engine.cap_postgres import PostgresSlots

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


def queue_ahead(config: EngineConfig) -> int:
    """Requests kept at fal beyond ``concurrency`` (``EngineConfig.queue_ahead``). A queueing
    fal runs its account's limit and holds the rest IN_QUEUE, never rejecting them, so the
    next render starts the moment one finishes instead of when a status poll notices: when
    fal serves no status stream, polling then costs a render's latency, not the batch's
    throughput. The price: the machine-wide cap becomes ``concurrency + queue_ahead``
    requests at fal, and an account whose limit is above ``concurrency`` runs them all.
    A rejecting fal refuses the extra ones (429) and the limiter settles where fal says."""
    return max(0, config.queue_ahead)


async def shared_slots(config: EngineConfig, capacity: int) -> PostgresSlots | None:
    """The places of every host sharing ``FALASSETS_POSTGRES_URL``; None without it (flock
    files on this machine, as before). Raises CapUnavailable when the database cannot be
    reached: no engine that would submit beyond the cap."""
    url = settings.postgres_url()
    if url is None:
        return None
    # psycopg2 comes with the deploy extra: imported only when a database is configured.
    from falassets.engine.cap_postgres import PostgresSlots, open_cap_table

    table = await open_cap_table(url, capacity)
    return PostgresSlots(
        table,
        capacity,
        render_timeout_s=config.render_timeout_s,
        submit_timeout_s=config.submit_timeout_s,
    )


@asynccontextmanager
async def open_engine(
    *,
    run_id: str,
    fal_key: str | None = None,
    log: EventLog | None = None,
    **config: Any,
) -> AsyncIterator[RenderEngine]:
    """An engine for one batch (``config``: :class:`EngineConfig` fields). Closes its clients.
    It starts nothing: the caller has the emulator ready (``pipeline.fal_environment``)."""
    key = (fal_key or "").strip() or None
    host = queue_host()
    simulated = key is None or is_loopback(host)
    engine_config = EngineConfig(**config)
    renders = renders_store()  # a bad FALASSETS_RENDERS_URI fails here, before any request
    capacity = engine_config.concurrency + queue_ahead(engine_config)
    slots = await shared_slots(engine_config, capacity)  # before any client: nothing to close
    limits = httpx.Limits(
        max_connections=4 * engine_config.concurrency + 8,
        max_keepalive_connections=2 * engine_config.concurrency + 4,
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
        capacity,
        settings.state_dir() / "slots" if slots is None else None,
        backoff_base_s=engine_config.backoff_base_s,
        backoff_cap_s=engine_config.backoff_cap_s,
        slots=slots,
    )
    journal = RequestJournal(settings.journal_dir())
    intents = IntentLog(settings.state_dir() / "intents")
    queue = QueueClient(
        fal_http,
        queue_host=host,
        api_host=api_host(host),
        submit_timeout_s=engine_config.submit_timeout_s,
    )
    orphans = None
    if slots is not None:  # the table carries a dead host's requests (no file-based holds)
        from falassets.engine.cap_postgres import PostgresOrphans

        orphans = PostgresOrphans(limiter, slots, queue)
    engine: RenderEngine | None = None
    try:
        engine = RenderEngine(
            queue=queue,
            download_http=download_http,
            limiter=limiter,
            journal=journal,
            intents=intents,
            journal_dir=settings.journal_dir(),
            renders=renders,
            run_id=run_id,
            simulated=simulated,
            config=engine_config,
            log=log,
            secret=key,
            orphans=orphans,
        )
        yield engine
    finally:
        if engine is not None:
            engine.close()
        await queue.aclose()
        await fal_http.aclose()
        await download_http.aclose()
        limiter.close()
        journal.close()
        intents.close()
