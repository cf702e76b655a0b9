"""The in-flight cap holds across processes, dies with them, and adapts to 429s."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from falassets.engine.limiter import PROBE_FACTOR, AdaptiveLimiter, RequestLeases, SlotFiles

HOLDER = """
import sys, time
from pathlib import Path
from falassets.engine.limiter import SlotFiles
slots = SlotFiles(Path(sys.argv[1]), int(sys.argv[2]))
taken = [slots.try_acquire() for _ in range(int(sys.argv[3]))]
print(" ".join(str(t) for t in taken), flush=True)
time.sleep(600)
"""


def _hold_in_other_process(directory: Path, capacity: int, count: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), str(capacity), str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()  # blocks until the other process holds its slots
    assert "None" not in line, line
    return proc


def test_slots_are_shared_between_processes_and_freed_when_one_dies(tmp_path: Path) -> None:
    other = _hold_in_other_process(tmp_path, 4, 3)
    try:
        mine = SlotFiles(tmp_path, 4)
        assert mine.try_acquire() is not None
        assert mine.try_acquire() is None  # 3 held elsewhere + 1 here = the cap of 4
        other.send_signal(signal.SIGKILL)
        other.wait(timeout=10)
        # The kernel released the dead process's locks: three more slots are free now.
        assert [mine.try_acquire() is not None for _ in range(3)] == [True, True, True]
        assert mine.try_acquire() is None
        mine.close()
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


async def test_waiters_get_slots_as_another_process_releases(tmp_path: Path) -> None:
    other = _hold_in_other_process(tmp_path, 2, 2)
    limiter = AdaptiveLimiter(2, tmp_path)
    try:
        acquired = asyncio.Event()

        async def take() -> None:
            async with limiter.slot():
                acquired.set()

        task = asyncio.create_task(take())
        await asyncio.sleep(0)  # let it find every slot taken
        assert not acquired.is_set()
        other.kill()
        other.wait(timeout=10)
        await asyncio.wait_for(acquired.wait(), timeout=5)
        await task
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
        limiter.close()


async def test_never_more_than_capacity_at_once(tmp_path: Path) -> None:
    limiter = AdaptiveLimiter(3, tmp_path)
    inside = 0
    peak = 0

    async def use() -> None:
        nonlocal inside, peak
        async with limiter.slot():
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            inside -= 1

    await asyncio.gather(*(use() for _ in range(50)))
    assert peak == 3
    assert limiter.slots.held == 0
    limiter.close()


async def test_429_halves_target_once_per_round_then_recovers(tmp_path: Path) -> None:
    limiter = AdaptiveLimiter(8, tmp_path, backoff_base_s=0.001, backoff_cap_s=0.002)
    epoch = limiter._epoch
    await limiter.on_rate_limited(epoch, None)
    assert limiter.target == 4
    # Other requests of the same round answer 429 too: not a new signal.
    await limiter.on_rate_limited(epoch, None)
    assert limiter.target == 4
    await limiter.on_rate_limited(limiter._epoch, None)
    assert limiter.target == 2
    for _ in range(2):
        await limiter.on_accepted()
    assert limiter.target == 3  # +1 after `target` accepted submits
    for _ in range(3 + 4 + 5 + 6 + 7 + 20):
        await limiter.on_accepted()
    assert limiter.target == 8  # never above the configured cap
    limiter.close()


async def test_retry_after_holds_every_submit_of_the_process(tmp_path: Path) -> None:
    limiter = AdaptiveLimiter(4, tmp_path)
    hold = await limiter.on_rate_limited(limiter._epoch, 0.3)
    assert hold == pytest.approx(0.3)
    started = time.monotonic()
    async with limiter.slot():
        waited = time.monotonic() - started
    assert waited >= 0.25
    limiter.close()


def test_capacity_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SlotFiles(tmp_path, 0)


def test_slot_files_live_where_asked(tmp_path: Path) -> None:
    slots = SlotFiles(tmp_path / "slots", 2)
    assert slots.try_acquire() is not None
    assert len(os.listdir(tmp_path / "slots")) == 1
    slots.close()


async def test_429_settles_at_the_level_fal_accepted_and_probes_past_it_rarely(
    tmp_path: Path,
) -> None:
    """fal refusing a request while 10 of ours run there means it takes 10: run 10, not 5."""
    limiter = AdaptiveLimiter(16, tmp_path, backoff_base_s=0.001, backoff_cap_s=0.002)
    release = asyncio.Event()
    running = 0

    async def accepted_request() -> None:
        nonlocal running
        async with limiter.slot():
            await limiter.on_accepted()
            running += 1
            await release.wait()

    holders = [asyncio.create_task(accepted_request()) for _ in range(10)]
    while running < 10:
        await asyncio.sleep(0)
    async with limiter.slot() as epoch:
        await limiter.on_rate_limited(epoch, None)
    release.set()
    await asyncio.gather(*holders)
    assert limiter.target == 10
    for _ in range(10 * PROBE_FACTOR - 1):
        await limiter.on_accepted()
    assert limiter.target == 10  # the refused level is probed only after PROBE_FACTOR rounds
    await limiter.on_accepted()
    assert limiter.target == 11
    for _ in range(11):
        await limiter.on_accepted()
    assert limiter.target == 12  # past it, the usual climb of +1 per `target` accepted
    limiter.close()


async def test_a_burst_of_429s_is_one_signal_for_the_back_off(tmp_path: Path) -> None:
    """Six submits refused together must not hold the process for 0.5 + 1 + ... + 16 s."""
    limiter = AdaptiveLimiter(16, tmp_path, backoff_base_s=1.0, backoff_cap_s=60.0)
    epoch = limiter._epoch
    holds = [await limiter.on_rate_limited(epoch, None) for _ in range(6)]
    assert max(holds) <= 1.0  # the first step's ceiling (base), however many came back
    fresh = await limiter.on_rate_limited(limiter._epoch, None)
    assert fresh >= 1.0  # a refusal after we adapted is news: the back-off grows
    limiter.close()


LEASER = """
import sys, time
from pathlib import Path
from falassets.engine.limiter import RequestLeases
leases = RequestLeases(Path(sys.argv[1]))
print(leases.try_take(sys.argv[2]), flush=True)
time.sleep(600)
"""


def test_request_leases_are_exclusive_across_processes_and_die_with_them(tmp_path: Path) -> None:
    """One process accounts for a request at fal: while it lives nobody else can take its
    lease, and the kernel frees the lease the moment it dies (issue 11)."""
    other = subprocess.Popen(
        [sys.executable, "-c", LEASER, str(tmp_path), "req-1"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "True"
        mine = RequestLeases(tmp_path)
        assert not mine.try_take("req-1")  # the other process counts it
        assert mine.try_take("req-2")
        assert not mine.try_take("req-2")  # once per process too
        assert not RequestLeases(tmp_path).try_take("req-2")
        other.send_signal(signal.SIGKILL)
        other.wait(timeout=10)
        assert mine.try_take("req-1")  # its process died: the request counts for nobody
        mine.close()
        assert list(tmp_path.iterdir()) == []  # released leases leave no files behind
        assert RequestLeases(tmp_path).try_take("req-2")
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


async def test_an_accepted_request_is_leased_until_its_slot_is_released(tmp_path: Path) -> None:
    """The submitter takes its request's lease while it holds the slot, so another process
    never mistakes a live request for a dead run's."""
    limiter = AdaptiveLimiter(2, tmp_path)
    other = RequestLeases(tmp_path / "requests")
    async with limiter.slot():
        await limiter.on_accepted("req-9")
        assert not other.try_take("req-9")
    assert other.try_take("req-9")
    limiter.close()
