"""Following a request when fal's status stream is absent, broken or silent (issue 11): the
status endpoint decides a request's fate, a host without streams is not probed once per
request, and cancel answers are read from the body fal documents."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from fal_client import FalClientHTTPError

from falassets.engine import queue_client as qc
from falassets.engine.queue_client import QueueClient, QueuedRequest
from falassets.pipeline.resources import FalRenderer
from falassets_tests.engine.engine_support import make_jobs, render_all, wait_for
from falassets_tests.sim.test_sim_support import T2I, client, request_input, submit


@asynccontextmanager
async def queue_client() -> AsyncIterator[QueueClient]:
    async with client() as http:
        host = http.base_url.netloc.decode()
        queue = QueueClient(http, queue_host=host, api_host=host)
        yield queue
        await queue.aclose()


async def _accepted(queue: QueueClient, prompt: str) -> QueuedRequest:
    body = await submit(queue.http, request_input(prompt))
    return QueuedRequest(
        body["request_id"], body["status_url"], body["response_url"], body["cancel_url"]
    )


@pytest.mark.parametrize("knob", ["absent_404", "absent_405"])
async def test_a_host_without_streams_is_polled_not_probed_per_request(
    sim, data_dir: Path, knob: str
) -> None:
    sim.configure(stream=knob)
    outcomes = await render_all(make_jobs(12, tag="nostream"), FalRenderer(concurrency=3))
    assert [o.status for o in outcomes] == ["completed"] * 12, [o.error_type for o in outcomes]
    http = sim.ledger()["http"]
    # one wave of stream attempts (the requests in flight when the first 404 came), no more
    assert http["stream"] <= 3, http
    assert http["status"] >= 12


async def test_a_request_unknown_to_the_status_endpoint_is_raised(sim) -> None:
    sim.configure(stream="absent_404")
    async with queue_client() as queue:
        unknown = queue.request_for(T2I, "no-such-request")
        with pytest.raises(FalClientHTTPError) as raised:
            await queue.wait_until_done(unknown)
    assert raised.value.status_code == 404
    assert sim.ledger()["http"]["status"] == 1  # the status endpoint's own 404 decided


async def test_a_silent_stream_falls_back_to_polling(sim) -> None:
    sim.configure(stream="idle", latency_low=50.0)  # ~0.5 s; keep-alive every 0.15 s
    async with queue_client() as queue:
        request = await _accepted(queue, "silent stream")
        final = await asyncio.wait_for(queue.wait_until_done(request), timeout=10)
    assert final.error is None
    assert sim.ledger()["http"]["status"] >= 1


@pytest.mark.parametrize("codes", ["reported", "all_200"])
async def test_cancel_reads_fals_answer_from_the_body(sim, codes: str) -> None:
    sim.configure(cancel_codes=codes, concurrency=1, latency_low=300.0)  # ~3 s each
    async with queue_client() as queue:
        running = await _accepted(queue, "cancel running")
        queued = await _accepted(queue, "cancel queued")
        wait_for(
            lambda: any(r["status"] == "IN_PROGRESS" for r in sim.ledger()["requests"]),
            what="the first request to start",
        )
        assert await queue.cancel(queued) == "cancelled"  # OK: left the queue, never billed
        assert await queue.cancel(running) == "requested"  # CANCELLATION_REQUESTED
        sim.configure(latency_low=1.0)
        done = await _accepted(queue, "cancel done")
        await queue.wait_until_done(done)
        assert await queue.cancel(done) == "already_completed"
        assert await queue.cancel(queue.request_for(T2I, "no-such-request")) == "not_found"


def test_poll_delay_waits_for_the_expected_end_then_a_share_of_the_latency() -> None:
    queued = qc.poll_delay(
        state="IN_QUEUE", position=4, running=10, latency_s=2.0, in_progress_s=None
    )
    assert queued == pytest.approx(5 * 2.0 / 10 + 2.0)
    fresh = qc.poll_delay(
        state="IN_PROGRESS", position=None, running=10, latency_s=2.0, in_progress_s=0.5
    )
    assert fresh == pytest.approx(1.5)
    due = qc.poll_delay(
        state="IN_PROGRESS", position=None, running=10, latency_s=2.0, in_progress_s=2.0
    )
    late = qc.poll_delay(
        state="IN_PROGRESS", position=None, running=10, latency_s=2.0, in_progress_s=4.0
    )
    assert due == pytest.approx(0.4) and late == pytest.approx(0.8)
