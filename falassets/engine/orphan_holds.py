"""Requests a dead process left running at fal keep their place under the in-flight cap.

The kernel frees a SIGKILLed process's slots at once, but its requests run on at fal. A run
started right after filled the freed slots, so fal had cap + orphans in flight (7 against a
cap of 4 in issue 11; 429s in fal's reject mode). So before a new engine submits anything:

* **Which requests:** pending rows of the lineage (:class:`~falassets.engine.records.PriorWork`)
  whose deadline (``submitted_at`` + ``render_timeout_s``, when the engine would cancel
  them) has not passed and whose lease (:class:`~falassets.engine.limiter.RequestLeases`) no
  live process holds. Every live submitter or follower holds its request's lease, so a
  free lease means its process died: no pid to trust, no liveness probe.
* **Who holds them:** a process takes a limiter slot first, then tries the leases of the
  candidates in turn (non-blocking ``flock``) and keeps the slot for the first it gets. A
  lease is therefore only ever held together with a slot, everywhere: of two processes
  starting at once, each orphan is held by exactly one, and the one that finds a lease
  taken may rely on that request being counted (never both, never neither).
* **How long:** a light watcher (status GET with backoff, not a stream per orphan) releases
  the slot when fal finishes or forgets the request, or its deadline passes. When this
  engine resumes such a request, its follow takes the held slot over: no second slot, and
  no moment in which the request counts for nobody.

:meth:`OrphanHolds.start` returns once every orphan has its slot, so no submit of the new
run can take a place an orphan still needs, and a batch that ends before its orphans do
waits for them (:meth:`OrphanHolds.wait`): another process may have found their leases
taken and relies on them being counted.

This is the embedded default. With ``FALASSETS_POSTGRES_URL`` set the cap's table carries a
dead host's requests itself (:mod:`falassets.engine.cap_postgres`), watched with the same
:func:`hold_until_finished`; :class:`OrphanPolicy` is what the engine asks of either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from fal_client import FalClientHTTPError

from falassets.engine.limiter import AdaptiveLimiter
from falassets.engine.queue_client import POLL_FIRST_S, POLL_MAX_S, QueueClient, raise_for_status
from falassets.engine.retry import Action, classify_exception
from falassets.lineage.journal import age_s

log = logging.getLogger(__name__)


class OrphanPolicy(Protocol):
    """What the engine asks of whoever keeps a dead run's requests counted."""

    @property
    def held(self) -> int: ...

    async def start(self, pending: Mapping[str, Iterable[dict[str, Any]]]) -> int:
        """Before the first submit: count the orphans (``pending``: lineage rows by job key)."""
        ...

    def slot_for(
        self, request_id: str, status_url: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """The in-flight place of a request already at fal that this engine now follows."""
        ...

    async def wait(self) -> None:
        """At the batch's end: until no one else relies on what this process holds."""
        ...

    async def aclose(self) -> None: ...


async def finished_at_fal(queue: QueueClient, status_url: str) -> bool:
    """One status GET: True when fal says COMPLETED or no longer knows the request (or
    refuses us: the engine reports that), False while it runs or the answer is unsure."""
    queue.calls["status"] += 1
    try:
        response = await queue.http.get(status_url, params={"logs": "0"}, timeout=30.0)
        raise_for_status(response)
        return response.json().get("status") == "COMPLETED"
    except (FalClientHTTPError, httpx.TransportError, httpx.TimeoutException) as error:
        return classify_exception(error).action not in (Action.RETRY, Action.RATE_LIMITED)
    except (ValueError, AttributeError):
        return False  # an unreadable answer: ask again later


async def hold_until_finished(
    queue: QueueClient, status_url: str, deadline: float, handed: asyncio.Event
) -> bool:
    """Watch a request (status GETs with backoff, not a stream per orphan) until it needs no
    place: True once fal finished or forgot it or ``deadline`` (event-loop time) passed,
    False as soon as ``handed`` is set (the engine follows it now, place included)."""
    try:
        async with asyncio.timeout_at(deadline):
            return await _watch(queue, status_url, handed)
    except TimeoutError:
        return not handed.is_set()


async def _watch(queue: QueueClient, status_url: str, handed: asyncio.Event) -> bool:
    delay = 0.0  # ask at once: a request that finished meanwhile frees its slot now
    while not handed.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(handed.wait(), delay * random.uniform(0.8, 1.2))
        if handed.is_set():
            break
        if await finished_at_fal(queue, status_url) and not handed.is_set():
            return True
        delay = min(POLL_MAX_S, max(POLL_FIRST_S, delay * 1.5))
    return False


@dataclass(eq=False)
class _Hold:
    """One orphan this process holds a slot and the lease for."""

    request_id: str
    status_url: str
    deadline: float  # event-loop time
    handed: asyncio.Event = field(default_factory=asyncio.Event)  # the engine follows it now
    returned: asyncio.Event = field(default_factory=asyncio.Event)  # ...and is done with it
    done: bool = False  # its slot is going: a follow must take its own


class OrphanHolds:
    """The orphans one engine holds places for (see the module docstring)."""

    def __init__(
        self, limiter: AdaptiveLimiter, queue: QueueClient, *, render_timeout_s: float
    ) -> None:
        if limiter.leases is None:
            raise ValueError("file-based orphan holds need the limiter's request leases")
        self.leases = limiter.leases
        self.limiter = limiter
        self.queue = queue
        self.render_timeout_s = render_timeout_s
        self._holds: dict[str, _Hold] = {}
        self._candidates: deque[_Hold] = deque()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def held(self) -> int:
        return len(self._holds)

    async def start(self, pending: Mapping[str, Iterable[dict[str, Any]]]) -> int:
        """Hold a place for every orphan among ``pending`` (rows by job key) that no other
        process holds; returns once each has its slot, with how many this process holds.

        One task per candidate takes a slot first and only then the lease of the next
        candidate it can get, so a held lease always means a held slot: another process
        that finds a lease taken may rely on that request being counted."""
        self._candidates = deque(
            hold for rows in pending.values() for row in rows if (hold := self._candidate(row))
        )
        settled = [asyncio.Event() for _ in self._candidates]
        for event in settled:
            task = asyncio.create_task(self._hold_one(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            await asyncio.gather(*(event.wait() for event in settled))
        except BaseException:
            await self.aclose()
            raise
        if self._holds:
            log.info(
                "%d request(s) a stopped run left at fal keep their in-flight places "
                "until fal finishes them",
                len(self._holds),
            )
        return len(self._holds)

    @contextlib.asynccontextmanager
    async def slot_for(self, request_id: str, status_url: str | None = None) -> AsyncIterator[None]:
        """The in-flight place of a request already at fal that this engine now waits on
        (resumed or adopted): the orphan hold's slot when this process holds one for it,
        else a new slot and then the request's lease (waiting, slot held, while another
        process counts it: counted twice for a moment, never uncounted)."""
        hold = self._holds.get(request_id)
        if hold is not None and not hold.done:
            hold.handed.set()  # its watcher stops; the slot stays until we return it
            try:
                yield
            finally:
                hold.returned.set()
            return
        async with self.limiter.slot(accepted=True):
            await self.leases.take(request_id)
            try:
                yield
            finally:
                self.leases.release(request_id)

    async def wait(self) -> None:
        """Wait until every orphan held here has finished at fal (or passed its deadline).
        The batch's end must not release them early: another process that found their
        leases taken counts on this one, and would fill their places at once."""
        if self._holds:
            log.info(
                "waiting for %d request(s) a stopped run left at fal: they hold in-flight "
                "places until they finish",
                len(self._holds),
            )
        for result in await asyncio.gather(*list(self._tasks), return_exceptions=True):
            if isinstance(result, Exception):
                log.error("an orphan hold failed", exc_info=result)

    async def aclose(self) -> None:
        """End every hold (the batch is over): leases and slots go back."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- one hold ------------------------------------------------------------------------------

    def _candidate(self, row: dict[str, Any]) -> _Hold | None:
        request_id, status_url = row.get("request_id"), row.get("status_url")
        if not request_id or not status_url or str(request_id) in self._holds:
            return None
        remaining = self.render_timeout_s - age_s(row.get("submitted_at"))
        if remaining <= 0:
            return None  # past the time its own run would have cancelled it
        deadline = asyncio.get_running_loop().time() + remaining
        return _Hold(str(request_id), str(status_url), deadline)

    def _claim_next(self) -> _Hold | None:
        """The next candidate whose lease this process gets; one whose lease is taken is
        counted by its holder (who has a slot for it) and dropped."""
        while self._candidates:
            hold = self._candidates.popleft()
            if asyncio.get_running_loop().time() < hold.deadline and (
                self.leases.try_take(hold.request_id)
            ):
                self._holds[hold.request_id] = hold
                return hold
        return None

    def _forget(self, hold: _Hold) -> None:
        hold.done = True
        self._holds.pop(hold.request_id, None)
        self.leases.release(hold.request_id)

    async def _hold_one(self, settled: asyncio.Event) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(self.limiter.slot(accepted=True))
                hold = self._claim_next()
                if hold is None:
                    return  # every candidate is counted (here or elsewhere)
                stack.callback(self._forget, hold)  # the lease goes before the slot does
                settled.set()
                if await self._hold_until_finished(hold):
                    hold.done = True  # before the slot goes: a follow now takes its own
                    return
                await hold.returned.wait()  # handed over: the slot is the follow's now
        finally:
            settled.set()

    async def _hold_until_finished(self, hold: _Hold) -> bool:
        """True once the request needs no place (fal finished or forgot it, or its deadline
        passed); False when the engine took it over, slot included."""
        return await hold_until_finished(self.queue, hold.status_url, hold.deadline, hold.handed)
