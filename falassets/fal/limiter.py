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
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from falassets.fal.retry import backoff_delay

#: How often a process re-tries the slot files while another process holds them all.
SLOT_POLL_MIN_S = 0.005
SLOT_POLL_MAX_S = 0.05
#: Accepted submits, per unit of target, before probing the in-flight level fal last refused.
PROBE_FACTOR = 20


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
        delay = SLOT_POLL_MIN_S
        while True:
            index = self.try_acquire()
            if index is not None:
                return index
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(SLOT_POLL_MAX_S, delay * 2)

    def release(self, index: int) -> None:
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


class AdaptiveLimiter:
    """Gate every submit through a per-process target and a machine-wide slot.

    Use ``async with limiter.slot(): ...`` around the time a request is at fal; call
    ``await on_accepted()`` when a submit is accepted and ``await on_rate_limited(...)`` on a
    429.
    """

    def __init__(
        self,
        capacity: int,
        slot_dir: Path,
        *,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
    ) -> None:
        self.capacity = capacity
        self.slots = SlotFiles(slot_dir, capacity)
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
        try:
            index = await self.slots.acquire()
            self.peak_in_flight = max(self.peak_in_flight, self.slots.held)
            if accepted:
                self._at_fal.add(asyncio.current_task())
            yield epoch
        finally:
            self._at_fal.discard(asyncio.current_task())
            if index is not None:
                self.slots.release(index)
            async with self._cond:
                self.in_flight -= 1
                self._cond.notify_all()

    async def on_accepted(self) -> None:
        """Additive increase: one more place after ``target`` accepted submits, and only after
        ``PROBE_FACTOR`` times as many when the next place is the level fal refused. Call it
        from the task holding the slot."""
        self._at_fal.add(asyncio.current_task())
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
