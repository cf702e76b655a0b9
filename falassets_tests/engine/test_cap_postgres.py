"""Issue 13: one fal cap across all hosts, held in the deployment's Postgres.

Capacity is held by requests, not processes: a dead host's requests keep their places until
fal finishes them or their deadline passes, and a host that loses the database stops
submitting (and says so) instead of exceeding the cap. Real PostgreSQL (fixture
``postgres``), real processes killed with SIGKILL, the emulator's ledger as the judge.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from falassets.engine.cap_postgres import CapTable, PostgresSlots, open_cap_table
from falassets.engine.limiter import AdaptiveLimiter, CapUnavailable
from falassets.engine.session import open_engine
from falassets_tests.engine.cap_support import (
    Holder,
    Host,
    host_env,
    rows_of,
    slot_rows,
    terminate_cap_sessions,
    wait_cap_sessions_gone,
)
from falassets_tests.engine.engine_support import (
    FAST,
    billed_inputs,
    lineage_rows,
    make_jobs,
    post_to_emulator,
    wait_for,
)
from falassets_tests.services import PostgresServer

GRACE = 60.0  # a place's grace/deadline when a test does not look at it


@pytest.fixture
def url(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    return postgres.new_database("cap_" + request.node.name[:40].lower().replace("[", "_"))


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.stop()


@pytest.fixture
async def tables() -> AsyncIterator[list[CapTable]]:
    opened: list[CapTable] = []
    yield opened
    for table in opened:
        table.close()


async def _open(tables: list[CapTable], url: str, n: int) -> CapTable:
    table = await open_cap_table(url, n)
    tables.append(table)
    return table


async def _acquire(table: CapTable, n: int, grace: float = GRACE) -> int | None:
    return await table.run(table.try_acquire, n, grace)


async def _all(table: CapTable, n: int) -> list[int]:
    """Every place this holder can take now."""
    taken = []
    while (slot := await _acquire(table, n)) is not None:
        taken.append(slot)
    return taken


async def test_places_are_shared_by_every_holder_and_grow_to_the_largest_n(
    url: str, tables: list[CapTable]
) -> None:
    a, b = await _open(tables, url, 3), await _open(tables, url, 3)
    assert await _acquire(a, 3) is not None and await _acquire(a, 3) is not None
    first = await _acquire(b, 3)
    assert first is not None
    assert await _acquire(b, 3) is None  # 2 + 1 = the cap of 3, whoever holds them
    await a.run(a.release, first, False)  # not a's place: nothing happens
    assert await _acquire(b, 3) is None
    await b.run(b.release, first, False)
    assert await _acquire(a, 3) == first  # given back: anyone may take it

    c = await _open(tables, url, 5)  # a holder with a larger N grows the table
    assert [row[0] for row in slot_rows(url)] == [0, 1, 2, 3, 4]
    assert len(await _all(c, 5)) == 2  # a holds the first 3; the 2 new rows are free
    assert await _acquire(b, 3) is None  # a holder of N=3 never takes a place beyond its N


async def test_a_live_holders_places_are_never_taken_even_past_their_deadline(
    url: str, tables: list[CapTable]
) -> None:
    a, b = await _open(tables, url, 2), await _open(tables, url, 2)
    unnamed = await _acquire(a, 2, grace=0.0)
    named = await _acquire(a, 2, grace=0.0)
    assert unnamed is not None and named is not None
    assert await a.run(a.name, named, "req-live", "https://fal/s", 0.0)
    assert await _acquire(b, 2) is None
    assert await b.run(b.claim_orphans) == []  # alive: not an orphan
    assert await b.run(b.take_over, "req-live") is None


async def test_a_dead_hosts_request_keeps_its_place_until_a_watcher_frees_it(
    url: str, postgres: PostgresServer, holders: list[Holder], tables: list[CapTable]
) -> None:
    """SIGKILL: the host's lock goes, its rows do not. The named one is an orphan (claimed
    and watched), the unnamed one (died mid-submit) waits out its grace."""
    dead = Holder(url, 2, [{"request_id": "req-dead", "status_url": "https://fal/s"}, {}])
    holders.append(dead)
    dead.kill(postgres.admin_url)

    survivor = await _open(tables, url, 2)
    assert await _acquire(survivor, 2) is None  # neither place is free
    orphans = await survivor.run(survivor.claim_orphans)
    assert [(o.slot, o.request_id, o.status_url) for o in orphans] == [
        (dead.slots[0], "req-dead", "https://fal/s")
    ]
    assert 0 < orphans[0].remaining_s <= GRACE
    other = await _open(tables, url, 2)
    assert await other.run(other.claim_orphans) == []  # claimed once, by one live process
    assert await _acquire(survivor, 2) is None  # still held: fal runs it

    await survivor.run(survivor.free_request, orphans[0].slot, "req-dead")  # fal finished it
    assert await _acquire(other, 2) == dead.slots[0]
    assert await _acquire(survivor, 2) is None  # the unnamed one is still in its grace


async def test_past_the_deadline_or_grace_a_dead_hosts_place_is_free(
    url: str, postgres: PostgresServer, holders: list[Holder], tables: list[CapTable]
) -> None:
    grace = 4.0
    dead = Holder(
        url,
        2,
        [{"grace": grace}, {"request_id": "req-old", "status_url": "https://fal/s", "ttl": grace}],
    )
    holders.append(dead)
    started = time.monotonic()
    dead.kill(postgres.admin_url)
    survivor = await _open(tables, url, 2)
    if time.monotonic() - started < grace - 0.5:  # (a loaded machine may take that long)
        assert await _acquire(survivor, 2) is None
    taken: list[int] = []

    async def both_taken() -> bool:
        slot = await _acquire(survivor, 2)
        if slot is not None:
            taken.append(slot)
        return len(taken) == 2

    deadline = time.monotonic() + 30
    while not await both_taken():
        assert time.monotonic() < deadline, "a dead host's places never came free"
        await asyncio.sleep(0.1)
    assert sorted(taken) == sorted(dead.slots)
    assert time.monotonic() - started >= grace - 0.5  # not before (clocks: the database's)


async def test_naming_a_request_another_live_process_counts_waits_and_takes_over_dead_rows(
    url: str, postgres: PostgresServer, holders: list[Holder], tables: list[CapTable]
) -> None:
    dead = Holder(url, 3, [{"request_id": "req-x", "status_url": "https://fal/x"}])
    holders.append(dead)
    dead.kill(postgres.admin_url)

    a, b = await _open(tables, url, 3), await _open(tables, url, 3)
    assert await a.run(a.take_over, "req-x") == dead.slots[0]  # the orphan row, not a second
    assert await b.run(b.take_over, "req-x") is None  # a lives: its row is no orphan
    slot = await _acquire(b, 3)
    assert slot is not None
    assert not await b.run(b.name, slot, "req-x", None, GRACE)  # a counts it
    await a.run(a.free_request, dead.slots[0], "req-x")
    assert await b.run(b.name, slot, "req-x", None, GRACE)
    assert [r[2] for r in slot_rows(url) if r[0] == slot] == ["req-x"]


async def test_closing_gives_back_unnamed_places_and_leaves_named_ones_to_be_watched(
    url: str, postgres: PostgresServer, tables: list[CapTable]
) -> None:
    a = await _open(tables, url, 3)
    slots = PostgresSlots(a, 3, render_timeout_s=GRACE, submit_timeout_s=1.0)
    limiter = AdaptiveLimiter(3, None, slots=slots)

    async def submit_then_crash() -> None:
        async with limiter.slot():
            await limiter.on_accepted("req-crash", "https://fal/c")
            raise RuntimeError("the engine broke with its request at fal")

    with pytest.raises(RuntimeError):
        await submit_then_crash()
    async with limiter.slot():
        await limiter.on_accepted("req-done", "https://fal/d")
    async with limiter.slot():
        pass  # a submit that was refused: nothing named
    unnamed = await slots.acquire()  # held when the engine closes
    limiter.close()  # waits for the queued releases
    rows = slot_rows(url)
    assert [r[2] for r in rows if r[1] is not None] == ["req-crash"]  # still at fal: kept
    assert all(r[1] is None for r in rows if r[0] == unnamed)

    wait_cap_sessions_gone(postgres.admin_url, url.rsplit("/", 1)[1])  # a's lock is gone
    b = await _open(tables, url, 3)
    assert [o.request_id for o in await b.run(b.claim_orphans)] == ["req-crash"]


async def test_a_lost_database_stops_acquiring_and_names_the_host_not_the_password(
    url: str, postgres: PostgresServer, tables: list[CapTable]
) -> None:
    secret_url = url.replace("postgres@", "postgres:sekrit-pw@")  # trust auth ignores it
    a = await _open(tables, secret_url, 2)
    slot = await _acquire(a, 2)
    assert slot is not None and await a.run(a.name, slot, "req-at-fal", "https://fal/s", GRACE)
    database = url.rsplit("/", 1)[1]
    assert terminate_cap_sessions(postgres.admin_url, database) == 1

    with pytest.raises(CapUnavailable) as lost:
        await _acquire(a, 2)
    message = str(lost.value)
    assert f"lost the fal cap database at 127.0.0.1:{postgres.port}; not submitting" in message
    assert "sekrit" not in message
    with pytest.raises(CapUnavailable):  # for good: no reconnect with half-known places
        await _acquire(a, 2)
    # Its session is gone, so its request is an orphan for the others: still counted.
    wait_cap_sessions_gone(postgres.admin_url, database)  # terminated is not yet exited
    b = await _open(tables, url, 2)
    wait_for(lambda: len(slot_rows(url)) == 2, what="rows")
    assert [o.request_id for o in await b.run(b.claim_orphans)] == ["req-at-fal"]


async def test_an_unreachable_database_refuses_to_open(postgres: PostgresServer) -> None:
    from falassets_tests.services import free_port

    port = free_port()
    with pytest.raises(CapUnavailable) as refused:
        await open_cap_table(f"postgresql://user:sekrit-pw@127.0.0.1:{port}/x", 2)
    assert f"cannot reach the fal cap database at 127.0.0.1:{port}" in str(refused.value)
    assert "sekrit" not in str(refused.value)


# -- hosts rendering through the engine -----------------------------------------------------------

CAP = 3
ENGINE = {"backoff_base_s": 0.02, "backoff_cap_s": 0.2, "submit_timeout_s": 5.0}


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    started: list[Host] = []
    yield started
    for host in started:
        host.stop()


def _of(entry: dict[str, Any], tag: str) -> bool:
    return f"study {tag}" in entry["input"]["prompt"]


def _ts(value: str | None) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else math.inf


def _ran_together(ledger: dict[str, Any], one: str, other: str) -> bool:
    """Some request of each host was running at fal at the same moment."""
    spans = {
        tag: [
            (_ts(r["started_at"]), _ts(r["completed_at"]))
            for r in ledger["requests"]
            if _of(r, tag) and r["started_at"]
        ]
        for tag in (one, other)
    }
    return any(a0 < b1 and b0 < a1 for a0, a1 in spans[one] for b0, b1 in spans[other])


def test_two_hosts_never_run_more_than_one_cap_at_fal_together(
    sim, url: str, tmp_path: Path, hosts: list[Host]
) -> None:
    """Each "host" has its own machine-local state (data dir, slot files, TMPDIR); only the
    database and fal are shared. Flock files cannot see the other machine: without the
    shared table each host holds its own CAP places and fal runs 2 x CAP of ours."""
    sim.configure(mode="queue", concurrency=4 * CAP, time_scale=0.2, latency_low=2.0)
    batches = {tag: make_jobs(10, tag=tag) for tag in ("east", "west")}
    for tag, jobs in batches.items():
        env = host_env(tmp_path / tag, url)
        hosts.append(Host(jobs, f"run-{tag}", env, concurrency=CAP, **ENGINE))
    for host in hosts:  # both released before either is read back
        host.go()
    for host in hosts:
        host.started()
    results = [host.finish() for host in hosts]

    ledger = sim.ledger()
    assert _ran_together(ledger, "east", "west")  # else there was nothing to share
    assert ledger["peak_running"] <= CAP, ledger["peak_running"]
    for (outcomes, _), jobs in zip(results, batches.values(), strict=True):
        assert {p: o["status"] for p, o in outcomes.items()} == {
            j.prompt_id: "completed" for j in jobs
        }
    assert ledger["totals"]["accepted"] == 20 and max(billed_inputs(ledger).values()) == 1
    recorded = {rid for tag in batches for rid in rows_of(tmp_path / tag / "data")}
    assert recorded == {r["request_id"] for r in ledger["requests"]}


def test_a_killed_hosts_requests_keep_their_places_while_the_survivor_runs(
    sim, url: str, data_dir: Path, tmp_path: Path, hosts: list[Host]
) -> None:
    """SIGKILL one host (its process group) mid-batch: its requests run on at fal, so they
    hold their places until they finish, while the other host keeps submitting. (Slot files
    on one machine free a killed process's places at once: its orphans came on top.)"""
    cap = 4
    sim.configure(mode="queue", concurrency=4 * cap, time_scale=1.0, latency_low=3.0)
    doomed_jobs, survivor_jobs = make_jobs(8, tag="doomed"), make_jobs(8, tag="survivor")
    doomed = Host(
        doomed_jobs,
        "doomed",
        host_env(tmp_path / "doomed", url, data_dir=data_dir),
        concurrency=cap,
        **ENGINE,
    )
    survivor = Host(
        survivor_jobs,
        "survivor",
        host_env(tmp_path / "survivor", url, data_dir=data_dir),
        concurrency=cap,
        **ENGINE,
    )
    hosts.extend([doomed, survivor])
    doomed.go()
    survivor.go()
    doomed.started(), survivor.started()

    def doomed_running() -> list[str]:
        return [
            r["request_id"]
            for r in sim.ledger()["requests"]
            if _of(r, "doomed") and r["status"] == "IN_PROGRESS"
        ]

    orphans = wait_for(doomed_running, timeout=60, what="the doomed host's requests at fal")
    killed_at = time.time()
    doomed.kill()
    outcomes, _ = survivor.finish()

    ledger = sim.ledger()
    by_id = {r["request_id"]: r for r in ledger["requests"]}
    # What makes the test mean something: its requests ran on after the kill, while the
    # survivor still had renders to submit.
    assert min(_ts(by_id[rid]["completed_at"]) for rid in orphans) > killed_at
    assert any(_of(r, "survivor") and _ts(r["submitted_at"]) > killed_at for r in by_id.values())
    assert ledger["peak_running"] <= cap, ledger["peak_running"]
    assert {p: o["status"] for p, o in outcomes.items()} == {
        j.prompt_id: "completed" for j in survivor_jobs
    }
    assert max(billed_inputs(ledger).values()) == 1

    # The killed batch again: its requests are followed (their places taken over or taken
    # anew once nobody counts them), never submitted twice.
    accepted = {rid for rid, r in by_id.items() if _of(r, "doomed")}
    rerun = Host(
        doomed_jobs,
        "rerun",
        host_env(tmp_path / "rerun", url, data_dir=data_dir),
        concurrency=cap,
        **ENGINE,
    )
    hosts.append(rerun)
    rerun.go()
    done, _ = rerun.finish()
    assert {p: o["status"] for p, o in done.items()} == {
        j.prompt_id: "completed" for j in doomed_jobs
    }
    ledger = sim.ledger()
    assert ledger["peak_running"] <= cap and max(billed_inputs(ledger).values()) == 1
    again = {r["request_id"] for r in ledger["requests"] if _of(r, "doomed")}
    assert accepted <= again and len(again) == len(doomed_jobs)


async def test_a_host_that_loses_the_database_stops_submitting_and_says_so(
    sim,
    url: str,
    postgres: PostgresServer,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The database goes away mid-batch (its session terminated, as an outage or a failover
    would): no request beyond the cap, the requests already at fal are followed to the end,
    every other job fails unsubmitted (a rerun renders it), and the message names the
    database's host, never its password."""
    cap = 2
    sim.configure(mode="queue", concurrency=4 * cap, time_scale=1.0, latency_low=1.5)
    monkeypatch.setenv("FALASSETS_POSTGRES_URL", url.replace("postgres@", "postgres:sekrit-pw@"))
    jobs = make_jobs(8, tag="lost")

    async def cut_once_submitting() -> tuple[int, int]:
        await asyncio.to_thread(
            wait_for, lambda: sim.ledger()["totals"]["accepted"] >= cap, timeout=60
        )
        ended = await asyncio.to_thread(
            terminate_cap_sessions, postgres.admin_url, url.rsplit("/", 1)[1]
        )
        return ended, sim.ledger()["totals"]["accepted"]

    async with open_engine(run_id="lost-db", concurrency=cap, **FAST) as engine:
        cutter = asyncio.create_task(cut_once_submitting())
        outcomes = [outcome async for outcome in engine.render(jobs)]
    ended, accepted_at_cut = await cutter

    assert ended == 1
    ledger = sim.ledger()
    accepted = ledger["totals"]["accepted"]
    assert accepted <= accepted_at_cut + cap  # at most the submits already holding a place
    assert ledger["peak_running"] <= cap
    completed = [o for o in outcomes if o.status == "completed"]
    refused = [o for o in outcomes if o.status != "completed"]
    assert len(completed) == accepted and len(outcomes) == len(jobs)
    assert refused and {(o.status, o.error_type) for o in refused} == {
        ("failed", "cap_unavailable")
    }
    said = f"lost the fal cap database at 127.0.0.1:{postgres.port}; not submitting"
    assert all(said in (o.error_message or "") for o in refused)
    assert said in caplog.text
    assert "sekrit" not in caplog.text + "".join(o.error_message or "" for o in refused)
    rows = lineage_rows()  # the requests at fal were followed and recorded
    assert {rid for rid, row in rows.items() if row["status"] == "completed"} == {
        r["request_id"] for r in ledger["requests"]
    }


async def test_an_engine_watches_a_dead_hosts_request_until_fal_finishes_it(
    sim,
    url: str,
    postgres: PostgresServer,
    holders: list[Holder],
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The claimed orphan's place comes free once fal says COMPLETED (not before), also when
    the engine's first batch ended while the request still ran."""
    sim.configure(mode="queue", time_scale=1.0, latency_low=8.0)  # 5.6-12 s: outlives set-up
    job = make_jobs(1, tag="orphan")[0]
    request_id = post_to_emulator(sim, job.input)
    status_url = f"{sim.url}/openai/gpt-image-2/requests/{request_id}/status"
    dead = Holder(url, 1, [{"request_id": request_id, "status_url": status_url}])
    holders.append(dead)
    dead.kill(postgres.admin_url)
    monkeypatch.setenv("FALASSETS_POSTGRES_URL", url)

    def running() -> bool:
        return any(
            r["request_id"] == request_id and r["status"] == "IN_PROGRESS"
            for r in sim.ledger()["requests"]
        )

    async with open_engine(run_id="watcher", concurrency=1, **FAST) as engine:
        assert await engine.orphans.start({}) == 1
        await engine.orphans.aclose()  # a batch ended while fal still runs it
        assert running() and [r[2] for r in slot_rows(url)] == [request_id]
        assert await engine.orphans.start({}) == 1  # the next batch watches it again
        await asyncio.to_thread(
            wait_for, lambda: slot_rows(url)[0][1] is None, timeout=60, what="the place freed"
        )
        assert not running()  # freed because fal finished it, not before
        await engine.orphans.aclose()
