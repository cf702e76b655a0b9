"""One fal cap for every host, held in the deployment's Postgres (``FALASSETS_POSTGRES_URL``).

The table ``falassets_fal_slots`` has one row per in-flight place (slots ``0..N-1``, grown to
the largest N in use, like the slot files). A row's ``holder`` is the random 63-bit key of the
live process that holds it, and once fal accepts the request the row names it
(``request_id``, ``status_url``) with a ``deadline``. So capacity is held by *requests*, not
processes:

* **Alive or dead, exactly.** Each process holds a session-level advisory lock on its key on
  its own connection. A SIGKILL, a crash or a lost network closes that session and Postgres
  drops the lock (server-side TCP keepalives bound the last case). A checker tries a *shared*
  transaction-level lock on the key: it gets it only when no one holds the key, and never
  blocks another checker. No heartbeat to tune, no pid to trust.
* **A dead holder's row is not free.** One that names a request is an orphan: a live process
  that needs a place (and every engine at start) claims it, watches fal's status with backoff
  (:func:`~falassets.engine.orphan_holds.hold_until_finished`) and frees it when fal finishes
  or forgets the request, or its deadline (accepted + ``render_timeout_s``) passes. One that
  names none died mid-submit, and its request may have reached fal: its deadline is the
  submit's grace (``submit_timeout_s`` + a margin), before which nobody takes it. Either way
  a dead host's request holds exactly one place, and an engine that resumes such a request
  takes its row over instead of a second one.
* **Acquire** is one atomic ``UPDATE ... WHERE slot = (SELECT ... FOR UPDATE SKIP LOCKED
  LIMIT 1)``: free rows first, then dead rows past their deadline.
* **A lost database stops submitting.** Any error marks this process's cap lost for good: its
  connection is closed (so the others see it dead at once and watch its requests), every
  later acquire raises :class:`~falassets.engine.limiter.CapUnavailable` naming the host,
  never the password, and the engine fails those jobs unsubmitted (a rerun renders them).
  Requests already at fal are still followed; they stay counted by the rows others claim.

psycopg2 blocks, so every statement runs on one thread per process (statements in order,
one connection, never concurrent): the event loop keeps following requests at fal while a
statement waits, and a partitioned database costs a bounded wait (``connect_timeout``,
``statement_timeout``, client keepalives, ``tcp_user_timeout``) on that thread, not a frozen
batch. Each statement is a few milliseconds on a table of N rows.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions

from falassets.engine.limiter import AdaptiveLimiter, CapUnavailable
from falassets.engine.orphan_holds import hold_until_finished
from falassets.engine.queue_client import QueueClient

log = logging.getLogger(__name__)

T = TypeVar("T")

TABLE = "falassets_fal_slots"
#: The advisory lock a deployment's processes hold while they create schemas in its Postgres:
#: this table's, and Dagster's on an instance's first open (``pipeline.deployment``).
SCHEMA_LOCK_KEY = 0
#: Bounds on one statement, so a lost database is noticed in seconds (and said so).
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 5_000
TCP_USER_TIMEOUT_MS = 10_000
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
#: The server's side of the same: a host that vanishes without closing its socket loses its
#: advisory lock (and its rows become orphans) within about 20 s.
SERVER_KEEPALIVE = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
#: A dead holder's row that names no request is taken after the submit could have ended.
SUBMIT_GRACE_MARGIN_S = 10.0
#: A process with no free place asks the table this often (one poller per process).
POLL_MIN_S = 0.01
POLL_MAX_S = 0.1
#: ...and claims dead hosts' requests at most this often while it waits.
CLAIM_EVERY_S = 0.5
#: How often a resumed request's follow asks whether another live process still counts it.
NAME_WAIT_MAX_S = 2.0

#: A row's holder is dead: nobody holds its session lock (the shared try never blocks and
#: never stops another checker). Never asked of our own key: locks are re-entrant.
_DEAD = "({a}.holder <> %(me)s AND pg_try_advisory_xact_lock_shared({a}.holder))"
_FREE_ROW = "holder = NULL, request_id = NULL, status_url = NULL, deadline = NULL, taken_at = NULL"

_CREATE = f"""
SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY});
CREATE TABLE IF NOT EXISTS {TABLE} (
    slot integer PRIMARY KEY,
    holder bigint,
    request_id text,
    status_url text,
    deadline timestamptz,
    taken_at timestamptz
);
INSERT INTO {TABLE} (slot) SELECT generate_series(0, %(n)s - 1) ON CONFLICT DO NOTHING;
"""
_ACQUIRE = f"""
UPDATE {TABLE} AS s
SET holder = %(me)s, request_id = NULL, status_url = NULL, taken_at = now(),
    deadline = now() + make_interval(secs => %(grace)s)
WHERE s.slot = (
    SELECT c.slot FROM {TABLE} AS c
    WHERE c.slot < %(n)s
      AND (c.holder IS NULL OR (c.deadline < now() AND {_DEAD.format(a="c")}))
    ORDER BY c.holder IS NOT NULL, c.slot
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING s.slot
"""
#: Under a transaction lock on the request's key, so two processes naming the same request
#: at once cannot both see it uncounted.
_NAME = f"""
UPDATE {TABLE} AS s
SET request_id = %(rid)s, status_url = %(url)s,
    deadline = now() + make_interval(secs => %(ttl)s)
WHERE s.slot = %(slot)s AND s.holder = %(me)s
  AND NOT EXISTS (
    SELECT 1 FROM {TABLE} AS o
    WHERE o.request_id = %(rid)s AND o.slot <> %(slot)s AND o.holder IS NOT NULL
      AND (o.holder = %(me)s OR NOT pg_try_advisory_xact_lock_shared(o.holder))
  )
RETURNING s.slot
"""
_RELEASE = f"""
UPDATE {TABLE} SET {_FREE_ROW}
WHERE slot = %(slot)s AND holder = %(me)s AND (NOT %(keep_named)s OR request_id IS NULL)
"""
_FREE_REQUEST = f"""
UPDATE {TABLE} SET {_FREE_ROW}
WHERE slot = %(slot)s AND holder = %(me)s AND request_id = %(rid)s
"""
_ORPHAN_COLUMNS = "s.slot, s.request_id, s.status_url, " + (
    "GREATEST(0, EXTRACT(EPOCH FROM s.deadline - now()))::float8"
)
_CLAIM = f"""
UPDATE {TABLE} AS s SET holder = %(me)s
WHERE s.slot IN (
    SELECT c.slot FROM {TABLE} AS c
    WHERE c.request_id IS NOT NULL AND c.deadline >= now() AND {_DEAD.format(a="c")}
    FOR UPDATE SKIP LOCKED
)
RETURNING {_ORPHAN_COLUMNS}
"""
_TAKE_OVER = f"""
UPDATE {TABLE} AS s SET holder = %(me)s
WHERE s.slot = (
    SELECT c.slot FROM {TABLE} AS c
    WHERE c.request_id = %(rid)s AND {_DEAD.format(a="c")}
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING s.slot
"""
#: Rows that name no request go back on close; named ones stay for whoever watches them.
_CLOSE = f"UPDATE {TABLE} SET {_FREE_ROW} WHERE holder = %(me)s AND request_id IS NULL"


def where(url: str) -> str:
    """``host:port`` of a database URL, for messages: never the user or the password."""
    try:
        dsn = psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError:
        return "an unparsable FALASSETS_POSTGRES_URL"
    return f"{dsn.get('host') or 'localhost'}:{dsn.get('port') or 5432}"


def lease_key(request_id: str) -> int:
    """A request's advisory key: negative, so it never meets a holder key (positive)."""
    return -1 - (int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") >> 1)


@dataclass(frozen=True)
class Orphan:
    """A dead holder's request this process now holds a row for."""

    slot: int
    request_id: str
    status_url: str | None
    remaining_s: float  # until its deadline


class CapTable:
    """The table, one connection and one holder key: every statement of the Postgres cap, run
    in order on this object's own thread. Open it with :func:`open_cap_table`."""

    def __init__(self, url: str) -> None:
        self.where = where(url)
        self._url = url
        try:
            self._password = psycopg2.extensions.parse_dsn(url).get("password")
        except psycopg2.ProgrammingError:
            self._password = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="falassets-cap")
        self._connection: Any = None
        self.key = 0
        self.lost: CapUnavailable | None = None

    # -- on the cap thread ----------------------------------------------------------------------

    def _open(self, capacity: int) -> None:
        try:
            self._connection = psycopg2.connect(
                self._url,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name="falassets-fal-cap",
                options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS} {SERVER_KEEPALIVE}",
                tcp_user_timeout=TCP_USER_TIMEOUT_MS,
                **KEEPALIVE,
            )
        except psycopg2.Error as error:
            self.lost = CapUnavailable(
                f"cannot reach the fal cap database at {self.where} ({self._reason(error)}); "
                "not submitting (the cap cannot be enforced)"
            )
            raise self.lost from None
        self._statement(self._take_key)
        self._statement(lambda cursor: cursor.execute(_CREATE, {"n": capacity}))

    def _take_key(self, cursor: Any) -> None:
        while True:  # a clash of two random 63-bit keys is as good as impossible; still
            self.key = secrets.randbits(63) or 1
            cursor.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
            if cursor.fetchone()[0]:
                return

    def _statement(self, work: Callable[[Any], T]) -> T:
        """One transaction; any error loses the cap for good (see the module docstring)."""
        if self.lost is not None:
            raise self.lost
        try:
            with self._connection.cursor() as cursor:
                result = work(cursor)
            self._connection.commit()
            return result
        except psycopg2.Error as error:
            self.lost = CapUnavailable(
                f"lost the fal cap database at {self.where}; not submitting (the cap cannot "
                f"be enforced): {self._reason(error)}"
            )
            log.error("%s", self.lost)
            with contextlib.suppress(psycopg2.Error):
                self._connection.close()  # our lock goes: the others watch our requests now
            raise self.lost from None

    def _reason(self, error: psycopg2.Error) -> str:
        text = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return text.replace(self._password, "***") if self._password else text

    def _one(self, sql: str, **params: Any) -> Any:
        def work(cursor: Any) -> Any:
            cursor.execute(sql, {"me": self.key, **params})
            row = cursor.fetchone()
            return None if row is None else row[0]

        return self._statement(work)

    def try_acquire(self, capacity: int, grace_s: float) -> int | None:
        return self._one(_ACQUIRE, n=capacity, grace=grace_s)

    def name(self, slot: int, request_id: str, status_url: str | None, ttl_s: float) -> bool:
        """Record the request on this process's row; False while another live process (or
        another row of ours) already counts it."""

        def work(cursor: Any) -> bool:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (lease_key(request_id),))
            params = {"me": self.key, "slot": slot, "rid": request_id, "url": status_url}
            cursor.execute(_NAME, {**params, "ttl": ttl_s})
            return cursor.fetchone() is not None

        return self._statement(work)

    def release(self, slot: int, keep_named: bool) -> None:
        self._statement(
            lambda c: c.execute(_RELEASE, {"me": self.key, "slot": slot, "keep_named": keep_named})
        )

    def free_request(self, slot: int, request_id: str) -> None:
        self._statement(
            lambda c: c.execute(_FREE_REQUEST, {"me": self.key, "slot": slot, "rid": request_id})
        )

    def claim_orphans(self) -> list[Orphan]:
        def work(cursor: Any) -> list[Orphan]:
            cursor.execute(_CLAIM, {"me": self.key})
            return [Orphan(*row) for row in cursor.fetchall()]

        return self._statement(work)

    def take_over(self, request_id: str) -> int | None:
        """A dead holder's row for this request, now ours; None when there is none."""
        return self._one(_TAKE_OVER, rid=request_id)

    def _close(self) -> None:
        if self._connection is None or self.lost is not None:
            return
        with contextlib.suppress(CapUnavailable):
            self._statement(lambda c: c.execute(_CLOSE, {"me": self.key}))
        with contextlib.suppress(psycopg2.Error):
            self._connection.close()  # the session lock goes with it

    # -- from the event loop ----------------------------------------------------------------

    @property
    def backend_pid(self) -> int | None:
        """The server process of this holder's session (what ``pg_locks`` names)."""
        connection = self._connection
        return None if connection is None or connection.closed else connection.get_backend_pid()

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Queue ``fn`` on the cap thread (statements stay in order)."""
        return self._pool.submit(fn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.lost is not None:
            raise self.lost
        return await asyncio.wrap_future(self.submit(fn, *args))

    def close(self) -> None:
        """Give back rows that name no request, close the connection (named rows stay, for
        whoever watches them next), and wait for queued statements."""
        with contextlib.suppress(RuntimeError):  # closed twice
            self._pool.submit(self._close)
        self._pool.shutdown(wait=True)


async def open_cap_table(url: str, capacity: int) -> CapTable:
    """Connect, take this process's holder key, create or grow the table to ``capacity``.
    Raises :class:`CapUnavailable` (naming the host) when the database cannot be reached."""
    if capacity < 1:
        raise ValueError(f"concurrency must be at least 1, got {capacity}")
    table = CapTable(url)
    try:
        await asyncio.wrap_future(table.submit(table._open, capacity))
    except BaseException:
        table.close()
        raise
    return table


class PostgresSlots:
    """:class:`~falassets.engine.limiter.SlotSource` over :class:`CapTable`: the places of
    every host sharing the database. ``on_starved`` (set by :class:`PostgresOrphans`) claims
    dead hosts' requests while this process waits for a place."""

    def __init__(
        self, table: CapTable, capacity: int, *, render_timeout_s: float, submit_timeout_s: float
    ) -> None:
        self.table = table
        self.capacity = capacity
        self.render_timeout_s = render_timeout_s
        self.grace_s = submit_timeout_s + SUBMIT_GRACE_MARGIN_S
        self.on_starved: Callable[[], Awaitable[None]] | None = None
        self._held: set[int] = set()
        self._turn = asyncio.Lock()  # one poller per process; the rest wait here, not on it
        self._released = asyncio.Event()
        self._last_claim = 0.0

    @property
    def held(self) -> int:
        return len(self._held)

    async def acquire(self) -> int:
        async with self._turn:
            delay = POLL_MIN_S
            while True:
                index = await self._try_acquire()
                if index is not None:
                    self._held.add(index)
                    return index
                if self.on_starved is not None and time.monotonic() >= self._last_claim + (
                    CLAIM_EVERY_S
                ):
                    self._last_claim = time.monotonic()
                    await self.on_starved()
                self._released.clear()
                with contextlib.suppress(TimeoutError):  # ours come back at once
                    await asyncio.wait_for(self._released.wait(), delay * random.uniform(0.5, 1.5))
                delay = min(POLL_MAX_S, delay * 2)

    async def _try_acquire(self) -> int | None:
        if self.table.lost is not None:
            raise self.table.lost
        future = self.table.submit(self.table.try_acquire, self.capacity, self.grace_s)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # The statement may still take a row for a waiter that is gone: give it back.
            future.add_done_callback(self._undo)
            raise

    def _undo(self, future: concurrent.futures.Future[int | None]) -> None:
        if not future.cancelled() and future.exception() is None:
            index = future.result()
            if index is not None:
                with contextlib.suppress(RuntimeError):  # the table closed meanwhile
                    self.table.submit(self._release_quietly, index, False)

    async def accepted(self, index: int, request_id: str, status_url: str | None) -> None:
        # Lost: said once by the table; the request is at fal and is followed all the same.
        with contextlib.suppress(CapUnavailable):
            await self.name(index, request_id, status_url)

    async def name(self, index: int, request_id: str, status_url: str | None) -> bool:
        """Record on ``index`` the request this place is for; False while another live
        process counts it. Raises :class:`CapUnavailable`."""
        return await self.table.run(
            self.table.name, index, request_id, status_url, self.render_timeout_s
        )

    def release(self, index: int, *, abandoned: bool = False) -> None:
        """Queued on the cap thread, ahead of this process's next acquire. An abandoned place
        that names a request keeps it: that request may still run at fal."""
        self._held.discard(index)
        self._released.set()
        with contextlib.suppress(RuntimeError):
            self.table.submit(self._release_quietly, index, abandoned)

    def free_request(self, index: int, request_id: str) -> None:
        """Give back a row held for ``request_id`` (a claimed or taken-over orphan)."""
        self._released.set()
        with contextlib.suppress(RuntimeError):
            self.table.submit(self._free_quietly, index, request_id)

    def _release_quietly(self, index: int, keep_named: bool) -> None:
        with contextlib.suppress(CapUnavailable):  # lost: our lock went, others take over
            self.table.release(index, keep_named)

    def _free_quietly(self, index: int, request_id: str) -> None:
        with contextlib.suppress(CapUnavailable):
            self.table.free_request(index, request_id)

    def close(self) -> None:
        self.table.close()


@dataclass(eq=False)
class _Watched:
    """A dead holder's request whose row this process holds while fal still runs it."""

    orphan: Orphan
    deadline: float  # event-loop time
    handed: asyncio.Event = field(default_factory=asyncio.Event)  # the engine follows it now
    task: asyncio.Task[None] | None = None


class PostgresOrphans:
    """:class:`~falassets.engine.orphan_holds.OrphanPolicy` when the table carries orphans:
    claim dead hosts' requests (at start and while starved), watch each until fal is done
    with it, and let a follow of one take its row over."""

    def __init__(self, limiter: AdaptiveLimiter, slots: PostgresSlots, queue: QueueClient) -> None:
        self.limiter = limiter
        self.slots = slots
        self.table = slots.table
        self.queue = queue
        self._watching: dict[str, _Watched] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        slots.on_starved = self.claim

    @property
    def held(self) -> int:
        return len(self._watching)

    async def start(self, pending: Mapping[str, Iterable[dict[str, Any]]]) -> int:
        """Claim every orphan in the table now (``pending`` is not needed: the rows of dead
        hosts already hold their places, whoever claims them), and watch again the rows an
        earlier batch of this engine claimed and left running."""
        for watched in self._watching.values():
            if watched.task is None or watched.task.done():
                self._start_watching(watched)
        with contextlib.suppress(CapUnavailable):  # said by the table; submits stop
            await self.claim()
        if self._watching:
            log.info(
                "%d request(s) stopped processes left at fal keep their in-flight places "
                "until fal finishes them",
                len(self._watching),
            )
        return len(self._watching)

    async def claim(self) -> None:
        loop = asyncio.get_running_loop()
        for orphan in await self.table.run(self.table.claim_orphans):
            watched = _Watched(orphan, loop.time() + orphan.remaining_s)
            self._watching[orphan.request_id] = watched
            self._start_watching(watched)

    def _start_watching(self, watched: _Watched) -> None:
        task = asyncio.create_task(self._watch(watched))
        watched.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, watched: _Watched) -> None:
        orphan = watched.orphan
        if orphan.status_url:
            done = await hold_until_finished(
                self.queue, orphan.status_url, watched.deadline, watched.handed
            )
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(watched.deadline):
                    await watched.handed.wait()
            done = not watched.handed.is_set()
        if done:  # not handed over: the place is ours to give back
            self._watching.pop(orphan.request_id, None)
            self.slots.free_request(orphan.slot, orphan.request_id)

    @contextlib.asynccontextmanager
    async def slot_for(self, request_id: str, status_url: str | None = None) -> AsyncIterator[None]:
        """The row that already counts this request (one we watch, or a dead host's), else a
        new place once no other live process counts it (waiting with the place held:
        counted twice for a moment, never uncounted). Without the database the request is
        followed all the same: it is at fal already, and the others count its old row."""
        try:
            index = self._hand_over(request_id)
            if index is None:
                index = await self.table.run(self.table.take_over, request_id)
        except CapUnavailable as error:
            log.warning("%s; following %s without a place", error, request_id)
            yield
            return
        if index is not None:
            finished = False
            try:
                yield
                finished = True
            finally:
                if finished:  # else it may still run at fal: the row stays, an orphan
                    self.slots.free_request(index, request_id)
            return
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(self.limiter.slot(accepted=True))
                await self._name_when_uncounted(request_id, status_url)
            except CapUnavailable as error:
                log.warning("%s; following %s without a place", error, request_id)
            yield

    def _hand_over(self, request_id: str) -> int | None:
        watched = self._watching.pop(request_id, None)
        if watched is None:
            return None
        watched.handed.set()  # its watcher stops at once and leaves the row to the follow
        return watched.orphan.slot

    async def _name_when_uncounted(self, request_id: str, status_url: str | None) -> None:
        index = self.limiter.current_slot()
        assert index is not None, "inside limiter.slot()"
        delay = POLL_MIN_S
        while not await self.slots.name(index, request_id, status_url):
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(NAME_WAIT_MAX_S, delay * 2)

    async def wait(self) -> None:
        """Nothing to wait for: rows we watch outlive this engine. When its connection
        closes they are a dead holder's again, and the next process that needs a place
        claims them."""

    async def aclose(self) -> None:
        """Stop watching (the batch is over). Rows still watched stay ours, counted, until
        the next batch of this engine watches them again or its connection closes."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
