"""The status stream (SSE): one event per state change, closed at COMPLETED, many at once."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from falassets_tests.sim.test_sim_support import client, request_input, stream_events, submit


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


async def _stream_lines(http: httpx.AsyncClient, status_url: str, seconds: float) -> list[str]:
    """Every line a stream sends within ``seconds`` (a deadline, not a sleep)."""
    lines: list[str] = []
    try:
        async with asyncio.timeout(seconds), http.stream("GET", f"{status_url}/stream") as resp:
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                lines.append(line)
    except TimeoutError:
        pass
    return lines


async def test_keep_alive_comments_come_every_15_emulated_seconds(sim) -> None:
    # Time scale 0.01: 15 emulated seconds are 0.15 s; a 20 s render keeps the stream open.
    sim.configure(latency_low=2000.0)
    async with client() as http:
        accepted = await submit(http, request_input("slow"))
        lines = await _stream_lines(http, accepted["status_url"], 1.0)
    comments = [line for line in lines if line.startswith(":")]
    assert [line for line in lines if line.startswith("data: ")][:1]  # the current state
    assert 3 <= len(comments) <= 8  # ~6 in 1 s; a loaded machine may serve fewer


@pytest.mark.parametrize(("knob", "code"), [("absent_404", 404), ("absent_405", 405)])
async def test_stream_absent_knob(sim, knob: str, code: int) -> None:
    sim.configure(stream=knob)
    async with client() as http:
        accepted = await submit(http, request_input("no stream here"))
        response = await http.get(f"{accepted['status_url']}/stream")
        polled = await http.get(accepted["status_url"])
    assert response.status_code == code
    assert polled.status_code in (200, 202)  # polling still works


async def test_stream_broken_knob_drops_the_connection_after_one_event(sim) -> None:
    sim.configure(stream="broken")
    async with client() as http:
        accepted = await submit(http, request_input("cut"))
        events = []
        with pytest.raises(httpx.RemoteProtocolError):
            async with http.stream("GET", f"{accepted['status_url']}/stream") as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        events.append(json.loads(line[6:]))
    assert len(events) == 1 and events[0]["request_id"] == accepted["request_id"]


async def test_stream_idle_knob_sends_comments_but_never_an_event(sim) -> None:
    sim.configure(stream="idle")
    async with client() as http:
        accepted = await submit(http, request_input("quiet"))
        lines = await _stream_lines(http, accepted["status_url"], 0.6)
        done = await http.get(accepted["status_url"])
    assert done.json()["status"] == "COMPLETED"  # it finished meanwhile (~15 ms)
    assert lines and not [line for line in lines if line.startswith("data:")]
    assert any(line.startswith(":") for line in lines)
