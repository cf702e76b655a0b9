"""At most N fal requests in flight on this machine, and fewer while fal says 429.

Two layers, because they solve different problems:

* :class:`SlotFiles`: N lock files under ``state_dir()/slots``. A request holds an exclusive
  ``flock`` on one of them while it is at fal. Every process on the machine shares the same
  files, so two runs started at once still hold N together, and the kernel drops a dead
  process's locks, so a SIGKILL never leaks a slot.
* :class:`AdaptiveLimiter`: per process, an asyncio gate with an *in-flight target*. A 429
  while k of our requests are accepted and running at fal proves fal takes k at once, so the
  target drops to k (halved when we have none there), and later 429s of the same round can
  only raise it to a larger proven k. It then
  climbs +1 per ``target`` accepted submits, but probes the level fal refused only after
  ``PROBE_FACTOR`` x ``target`` accepted submits: halving and climbing back (plain AIMD) ran
  at ~70% of the account's limit with a 429 every ~30 submits. A ``Retry-After`` (or our
  backoff) holds every submit of the process until it passes, so one 429 does not become ten.
* :class:`RequestLeases`: one lock file per request id at fal, held by whichever live process
  accounts for that request. A slot dies with its process but the request does not: the
  lease tells the next process which pending requests nobody alive counts any more
  (:mod:`falassets.engine.orphan_holds`).

Where the places come from is pluggable (:class:`SlotSource`): the flock files above by
default, or one table for every host (:mod:`falassets.engine.cap_postgres`) when
``FALASSETS_POSTGRES_URL`` is set. The per-process target and its 429 adaptation are the same
in front of either.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from falassets.engine.retry import backoff_delay

#: How often a process re-tries the slot files while another process holds them all.
SLOT_POLL_MIN_S = 0.005
SLOT_POLL_MAX_S = 0.05
#: Accepted submits, per unit of target, before probing the in-flight level fal last refused.
PROBE_FACTOR = 20

T = TypeVar("T")


class CapUnavailable(RuntimeError):
    """The in-flight cap cannot be enforced (its database is gone): nothing is submitted.
    The job fails unsubmitted and a rerun renders it; requests already at fal are followed."""


class SlotSource(Protocol):
    """Where in-flight places come from: :class:`SlotFiles` (this machine) or
    :class:`~falassets.engine.cap_postgres.PostgresSlots` (every host sharing a database)."""

    @property
    def held(self) -> int: ...

    async def acquire(self) -> int:
        """A place, waiting while all are taken; raises :class:`CapUnavailable` when the cap
        cannot be enforced."""
        ...

    async def accepted(self, index: int, request_id: str, status_url: str | None) -> None:
        """fal accepted ``request_id`` on this place. Never raises: the request is at fal."""
        ...

    def release(self, index: int, *, abandoned: bool = False) -> None:
        """Give the place back. ``abandoned``: its holder stopped early (cancelled, crashed),
        so an accepted request may still run at fal and a source that can tell keeps the
        place for it."""
        ...

    def close(self) -> None: ...


async def poll_until(attempt: Callable[[], T | None]) -> T:
    """Call ``attempt`` (a non-blocking lock try) until it returns a value, backing off from a
    few milliseconds to ``SLOT_POLL_MAX_S``: a local syscall, so polling costs nothing, and a
    blocking ``flock`` would tie up a thread per waiter."""
    delay = SLOT_POLL_MIN_S
    while True:
        value = attempt()
        if value is not None:
            return value
        await asyncio.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(SLOT_POLL_MAX_S, delay * 2)


class SlotFiles:
    """Machine-wide slots: exclusive ``flock`` on one of ``slot-0 .. slot-(N-1)``.

    Processes configured with different N share the low-numbered files, so the machine-wide
    cap is the largest N in use. A process that finds every slot taken re-tries every few
    milliseconds (a local syscall, no network).
    """

    def __init__(self, directory: Path, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"concurrency must be at least 1, got {capacity}")
        self.directory = Path(directory)
        self.capacity = capacity
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fds: list[int | None] = [None] * capacity
        self._held: set[int] = set()

    def _fd(self, index: int) -> int:
        fd = self._fds[index]
        if fd is None:
            fd = os.open(self.directory / f"slot-{index}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            self._fds[index] = fd
        return fd

    def try_acquire(self) -> int | None:
        """A free slot's index, now locked by this process, or None when all are taken."""
        start = random.randrange(self.capacity)  # spread processes over the files
        for offset in range(self.capacity):
            index = (start + offset) % self.capacity
            if index in self._held:
                continue
            try:
                fcntl.flock(self._fd(index), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            self._held.add(index)
            return index
        return None

    async def acquire(self) -> int:
        return await poll_until(self.try_acquire)

    async def accepted(self, index: int, request_id: str, status_url: str | None) -> None:
        """Nothing to record: a lock file names no request (:class:`RequestLeases` does)."""

    def release(self, index: int, *, abandoned: bool = False) -> None:
        # The kernel would drop the lock of a dead process anyway: abandoned or not, free it.
        if index in self._held:
            self._held.discard(index)
            fcntl.flock(self._fd(index), fcntl.LOCK_UN)

    @property
    def held(self) -> int:
        return len(self._held)

    def close(self) -> None:
        for index in list(self._held):
            self.release(index)
        for fd in self._fds:
            if fd is not None:
                os.close(fd)
        self._fds = [None] * self.capacity


class RequestLeases:
    """Who accounts for a request at fal: the one process holding ``flock`` on its lease file.

    The submitter takes the lease before the request's pending row is written, a follower
    (resume, adoption) before it waits on it, and the kernel drops it when that process dies.
    So a pending row whose lease is free belongs to nobody alive: no need to trust the pid in
    the row (pids are reused) or to ask whether its writer still runs. ``LOCK_NB`` makes a
    claim atomic across processes, and a second descriptor of this process conflicts with the
    first, so within a process the ``_fds`` map answers first.

    A released lease's file is unlinked while still locked (no directory of 100k files). A
    process that opened the old file just before then locks an unlinked inode, so every take
    checks that the locked file is still the one at the path, and tries again when not.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fds: dict[str, int] = {}

    def _path(self, request_id: str) -> Path:
        # fal's ids are UUIDs, but a file name must not depend on that.
        return self.directory / (hashlib.sha256(request_id.encode()).hexdigest()[:32] + ".lock")

    def try_take(self, request_id: str) -> bool:
        """Take the lease now; False when any process (this one included) holds it."""
        if request_id in self._fds:
            return False
        path = self._path(request_id)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                current = os.stat(path)
                locked = os.fstat(fd)
                same = (current.st_dev, current.st_ino) == (locked.st_dev, locked.st_ino)
            except FileNotFoundError:
                same = False
            if same:
                self._fds[request_id] = fd
                return True
            os.close(fd)  # its holder unlinked it as we opened it: lock the current file

    async def take(self, request_id: str) -> None:
        """Wait for the lease: another live process follows or holds this request until
        fal finishes it, and counting it twice would only idle a slot."""
        await poll_until(lambda: True if self.try_take(request_id) else None)

    def release(self, request_id: str) -> None:
        fd = self._fds.pop(request_id, None)
        if fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self._path(request_id).unlink()
        os.close(fd)  # closing the only descriptor drops the lock

    def close(self) -> None:
        for request_id in list(self._fds):
            self.release(request_id)


class AdaptiveLimiter:
    """Gate every submit through a per-process target and a machine-wide slot.

    Use ``async with limiter.slot(): ...`` around the time a request is at fal; call
    ``await on_accepted(request_id)`` when a submit is accepted (it takes the request's lease
    until the slot is released) and ``await on_rate_limited(...)`` on a 429. ``lease_dir``
    defaults to ``slot_dir/requests``: the leases are machine-wide like the slots.

    ``slots``: another :class:`SlotSource` instead of the flock files under ``slot_dir``. Such
    a source names each place's request itself (:meth:`SlotSource.accepted`), so there are no
    lease files then (``leases`` is None) and the file-based orphan holds do not apply.
    """

    def __init__(
        self,
        capacity: int,
        slot_dir: Path | None,
        *,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        lease_dir: Path | None = None,
        slots: SlotSource | None = None,
    ) -> None:
        self.capacity = capacity
        self.slots: SlotSource
        self.leases: RequestLeases | None
        if slots is None:
            if slot_dir is None:
                raise ValueError("AdaptiveLimiter needs a slot_dir or a slot source")
            self.slots = SlotFiles(slot_dir, capacity)
            self.leases = RequestLeases(lease_dir or Path(slot_dir) / "requests")
        else:
            self.slots, self.leases = slots, None
        self._leased: dict[asyncio.Task[Any] | None, str] = {}  # slot holder -> its lease
        self._slot_of: dict[asyncio.Task[Any] | None, int] = {}  # slot holder -> its place
        self.target = capacity
        self.ceiling: int | None = None  # in-flight level (ours) at which fal last said 429
        self.in_flight = 0
        self._at_fal: set[asyncio.Task[Any] | None] = set()  # holders fal has accepted
        self.peak_in_flight = 0
        self.rate_limited = 0
        self._successes_since_change = 0
        self._hold_until = 0.0
        self._consecutive_429 = 0
        self._epoch = 0  # bumps on every decrease; a 429 from an older epoch is not news
        self._cond = asyncio.Condition()
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s

    @contextlib.asynccontextmanager
    async def slot(self, *, accepted: bool = False) -> AsyncIterator[int]:
        """Hold one in-flight place; yields the epoch to pass back to ``on_rate_limited``.
        ``accepted``: the place is for a request fal already accepted (a resumed one)."""
        async with self._cond:
            while True:
                wait = self._hold_until - time.monotonic()
                if self.in_flight < self.target and wait <= 0:
                    break
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._cond.wait(), timeout=wait)
                else:
                    await self._cond.wait()
            self.in_flight += 1
        epoch = self._epoch
        index: int | None = None
        abandoned = False
        task = asyncio.current_task()
        try:
            index = await self.slots.acquire()
            self._slot_of[task] = index
            self.peak_in_flight = max(self.peak_in_flight, self.slots.held)
            if accepted:
                self._at_fal.add(task)
            try:
                yield epoch
            except BaseException:
                abandoned = True  # cancelled or crashed: its request may still be at fal
                raise
        finally:
            self._at_fal.discard(task)
            self._slot_of.pop(task, None)
            leased = self._leased.pop(task, None)
            if leased is not None and self.leases is not None:
                self.leases.release(leased)
            if index is not None:
                self.slots.release(index, abandoned=abandoned)
            async with self._cond:
                self.in_flight -= 1
                self._cond.notify_all()

    def current_slot(self) -> int | None:
        """The place the calling task holds (inside :meth:`slot`), else None."""
        return self._slot_of.get(asyncio.current_task())

    async def on_accepted(
        self, request_id: str | None = None, status_url: str | None = None
    ) -> None:
        """Additive increase: one more place after ``target`` accepted submits, and only after
        ``PROBE_FACTOR`` times as many when the next place is the level fal refused. Call it
        from the task holding the slot, before the request's pending row is written: the
        lease on ``request_id`` it takes (until the slot is released) tells other processes
        this request is counted, so none mistakes it for a dead run's. A slot source that
        names requests itself records ``request_id`` and ``status_url`` on the place."""
        task = asyncio.current_task()
        self._at_fal.add(task)
        index = self._slot_of.get(task)
        if request_id is not None and index is not None:
            await self.slots.accepted(index, request_id, status_url)
        if (
            request_id is not None
            and self.leases is not None
            and task not in self._leased
            and self.leases.try_take(request_id)
        ):
            self._leased[task] = request_id
        self._consecutive_429 = 0
        if self.target >= self.capacity:
            return
        self._successes_since_change += 1
        probing = self.ceiling is not None and self.target + 1 >= self.ceiling
        needed = self.target * (PROBE_FACTOR if probing else 1)
        if self._successes_since_change >= needed:
            self.target += 1
            self._successes_since_change = 0
            if probing:
                self.ceiling = None  # probed through it; the next 429 sets it again
            async with self._cond:
                self._cond.notify_all()

    async def on_rate_limited(self, epoch: int, retry_after_s: float | None) -> float:
        """Lower the target to just under the refused level; hold submits; returns the hold."""
        self.rate_limited += 1
        proven = len(self._at_fal)  # ours accepted and running at fal: it takes that many
        if epoch == self._epoch:
            # One burst of refusals is one signal: only a fresh one lengthens the back-off
            # (six 429s of one burst used to hold every submit for 0.5 + 1 + ... + 16 s).
            self._consecutive_429 += 1
            self.target = min(self.target, proven) if proven else max(1, self.target // 2)
            # Refused with this many of ours submitted: the level to probe only rarely. Submits
            # still unanswered count, so a burst's first 429 does not set it too low.
            self.ceiling = self.in_flight if proven else None
            self._epoch += 1
            self._successes_since_change = 0
        elif proven > self.target:  # a 429 of the same round, now that more answers arrived
            self.target = min(self.capacity, proven)
        if retry_after_s is not None:
            delay = min(retry_after_s, 300.0)
        else:
            delay = backoff_delay(
                self._consecutive_429, base_s=self._backoff_base_s, cap_s=self._backoff_cap_s
            )
        self._hold_until = max(self._hold_until, time.monotonic() + delay)
        return delay

    def close(self) -> None:
        self.slots.close()
        if self.leases is not None:
            self.leases.close()
