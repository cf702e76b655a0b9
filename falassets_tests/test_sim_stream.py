"""The status stream (SSE): one event per state change, closed at COMPLETED, many at once."""

from __future__ import annotations

import asyncio

import httpx

from falassets_tests.test_sim_support import client, request_input, stream_events, submit


async def test_stream_gives_one_event_per_state_change_and_closes_at_completed(sim) -> None:
    # One slot and a first request that takes ~1 s: the second one is seen queued first.
    sim.configure(concurrency=1, latency_high=100.0)
    async with client() as http:
        await submit(http, request_input("ahead", quality="high"))
        second = await submit(http, request_input("behind", quality="high"))
        events = await stream_events(http, second["status_url"])
    assert [e["status"] for e in events] == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert events[0]["queue_position"] == 0
    assert events[-1]["metrics"]["inference_time"] > 0
    assert events[-1]["request_id"] == second["request_id"]
    assert "error" not in events[-1]


async def test_stream_of_a_finished_request_is_one_completed_event(sim) -> None:
    async with client() as http:
        accepted = await submit(http, request_input("quick"))
        await stream_events(http, accepted["status_url"])
        again = await stream_events(http, accepted["status_url"])
    assert [e["status"] for e in again] == ["COMPLETED"]


async def test_queue_positions_count_down_in_the_stream(sim) -> None:
    sim.configure(concurrency=1, latency_low=20.0)
    async with client() as http:
        for i in range(3):
            last = await submit(http, request_input(f"slot {i}"))
        events = await stream_events(http, last["status_url"])
    positions = [e["queue_position"] for e in events if e["status"] == "IN_QUEUE"]
    assert positions == [1, 0]
    assert [e["status"] for e in events][-2:] == ["IN_PROGRESS", "COMPLETED"]


async def test_hundreds_of_open_streams_are_served_and_all_close(sim) -> None:
    sim.configure(concurrency=5, latency_low=30.0)
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    async with client(limits=limits) as http:
        accepted = [await submit(http, request_input(f"crowd {i}")) for i in range(15)]
        urls = [a["status_url"] for a in accepted for _ in range(8)]
        streams = await asyncio.gather(*(stream_events(http, url) for url in urls))
    assert len(streams) == 120
    assert all(events[-1]["status"] == "COMPLETED" for events in streams)
    assert sim.ledger()["http"]["stream"] == 120


async def test_stream_of_an_unknown_request_is_404(sim) -> None:
    async with client() as http:
        response = await http.get("/openai/gpt-image-2/requests/unknown/status/stream")
    assert response.status_code == 404
