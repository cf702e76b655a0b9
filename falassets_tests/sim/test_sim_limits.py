"""The account concurrency limit: queue mode (real queue positions) and reject mode (429)."""

from __future__ import annotations

import fal_client
import pytest

from falassets.engine.pricing import price_usd
from falassets_tests.sim.test_sim_support import (
    EDIT,
    KEY,
    T2I,
    client,
    request_input,
    submit,
    wait_done,
)


async def test_queue_mode_reports_real_positions_and_moves_up_on_cancel(sim) -> None:
    sim.configure(concurrency=1, time_scale=1.0)
    fal = fal_client.AsyncClient(key=KEY)
    handles = [
        await fal.submit(T2I, request_input(f"poster {i}", quality="high")) for i in range(4)
    ]
    statuses = [await h.status() for h in handles]
    assert isinstance(statuses[0], fal_client.InProgress)
    assert [s.position for s in statuses[1:]] == [0, 1, 2]
    await handles[1].cancel()
    assert [(await h.status()).position for h in handles[2:]] == [0, 1]
    ledger = sim.ledger()
    assert ledger["peak_running"] == 1
    assert ledger["totals"]["running"] == 1 and ledger["totals"]["queued"] == 2


async def test_submit_answer_carries_the_queue_position(sim) -> None:
    sim.configure(concurrency=2, time_scale=1.0)
    async with client() as http:
        positions = [
            (await submit(http, request_input(f"p{i}", quality="high")))["queue_position"]
            for i in range(5)
        ]
    assert positions == [0, 0, 0, 1, 2]


async def test_reject_mode_answers_429_above_the_limit_and_counts_it(sim) -> None:
    sim.configure(mode="reject", concurrency=2, time_scale=1.0)
    async with client() as http:
        for i in range(2):
            await submit(http, request_input(f"ok {i}", quality="high"))
        refused = await http.post(f"/{T2I}", json=request_input("one too many", quality="high"))
    assert refused.status_code == 429
    body = refused.json()
    assert body["error_type"] == "concurrent_requests_limit" and body["detail"]
    assert refused.headers["x-fal-error-type"] == "concurrent_requests_limit"
    assert "retry-after" not in refused.headers  # fal sends none unless asked to
    ledger = sim.ledger()
    assert ledger["rejected_429"] == 1
    assert ledger["totals"]["accepted"] == 2
    assert ledger["http"]["submit"] == 3


async def test_reject_mode_frees_slots_when_requests_finish(sim) -> None:
    sim.configure(mode="reject", concurrency=1)
    async with client() as http:
        first = await submit(http, request_input("first"))
        await wait_done(http, first["status_url"])
        second = await http.post(f"/{T2I}", json=request_input("second"))
    assert second.status_code == 200


async def test_retry_after_is_sent_when_configured(sim) -> None:
    sim.configure(mode="reject", concurrency=1, time_scale=1.0, retry_after=2.5)
    async with client() as http:
        await submit(http, request_input("holder", quality="high"))
        refused = await http.post(f"/{T2I}", json=request_input("refused", quality="high"))
    assert refused.status_code == 429 and refused.headers["retry-after"] == "2.5"


async def test_raising_the_limit_starts_queued_requests_at_once(sim) -> None:
    sim.configure(concurrency=1, time_scale=1.0)
    async with client() as http:
        for i in range(3):
            await submit(http, request_input(f"q{i}", quality="high"))
        sim.configure(concurrency=3)
    totals = sim.ledger()["totals"]
    assert (totals["running"], totals["queued"]) == (3, 0)


async def test_ledger_bills_successes_at_fal_prices_and_not_failures(sim) -> None:
    inputs = [
        {"prompt": "a", "quality": "high", "image_size": "square_hd"},
        {"prompt": "b", "quality": "medium", "image_size": "landscape_4_3", "num_images": 3},
        {"prompt": "c", "quality": "low", "image_size": {"width": 3840, "height": 2160}},
        {"prompt": "a forbidden thing", "quality": "high"},
        {"prompt": "d SIM_5XX", "quality": "high"},
    ]
    async with client() as http:
        for payload in inputs:
            accepted = await submit(http, payload)
            await wait_done(http, accepted["status_url"])
    ledger = sim.ledger()
    billed = {r["input"]["prompt"]: r for r in ledger["requests"]}
    assert billed["a"]["cost_usd"] == 0.22
    assert billed["b"]["cost_usd"] == pytest.approx(3 * 0.04)
    assert billed["c"]["cost_usd"] == 0.02
    assert billed["a forbidden thing"]["billed"] is False
    assert billed["d SIM_5XX"]["billed"] is False
    assert ledger["totals"]["billed"] == 3
    assert ledger["totals"]["images_billed"] == 5
    assert ledger["totals"]["billed_usd"] == pytest.approx(sum(price_usd(p) for p in inputs[:3]))
    assert ledger["totals"]["outcomes"] == {
        "ok": 3,
        "content_policy_violation": 1,
        "runner_server_error": 1,
    }


async def test_edit_requests_pay_the_auto_size_and_their_input_tokens(sim) -> None:
    async with client() as http:
        accepted = await submit(
            http,
            {"prompt": "refine", "image_urls": ["https://example.com/a.png"], "quality": "high"},
            endpoint=EDIT,
        )
        await wait_done(http, accepted["status_url"])
    (entry,) = sim.ledger()["requests"]
    # auto = 1024x1024 at high ($0.22), plus fal's edit token rates for the inputs: a
    # 1024x1024 input image is 765 tokens at $8/1M, "refine" 2 text tokens at $5/1M.
    assert entry["endpoint"] == EDIT
    assert entry["cost_usd"] == pytest.approx(0.22 + 765 * 8e-6 + 2 * 5e-6)
