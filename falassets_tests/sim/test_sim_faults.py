"""Each fault knob, as a prompt trigger and as a seeded rate, seen through fal_client or raw
HTTPS the way a client meets it at fal."""

from __future__ import annotations

import asyncio
import json

import fal_client
import httpx
import pytest

from falassets_tests.sim.test_sim_support import KEY, T2I, client, request_input, submit, wait_done


def _entry(sim, request_id: str) -> dict:
    return {r["request_id"]: r for r in sim.ledger()["requests"]}[request_id]


async def test_runner_5xx_at_completion_is_a_500_with_request_id_and_is_not_billed(sim) -> None:
    fal = fal_client.AsyncClient(key=KEY)
    handle = await fal.submit(T2I, request_input("a cup SIM_5XX"))
    async with client() as http:
        final = await wait_done(http, handle.status_url)
    assert final["error_type"] == "runner_server_error" and final["error"]
    with pytest.raises(fal_client.FalClientHTTPError) as error:
        await handle.get()
    assert error.value.status_code == 500
    assert error.value.error_type == "runner_server_error"
    assert error.value.response_headers["x-fal-request-id"] == handle.request_id
    assert error.value.response_headers["x-fal-error-type"] == "runner_server_error"
    entry = _entry(sim, handle.request_id)
    assert entry["outcome"] == "runner_server_error" and entry["billed"] is False


async def test_once_triggers_fire_on_the_first_submit_of_an_input_only(sim) -> None:
    payload = request_input("a mug SIM_5XX_ONCE")
    async with client() as http:
        outcomes = []
        for _ in range(2):
            accepted = await submit(http, payload)
            outcomes.append((await wait_done(http, accepted["status_url"])).get("error_type"))
    assert outcomes == ["runner_server_error", None]


async def test_5xx_rate_is_reproducible_for_a_seed_and_roughly_the_rate(sim) -> None:
    sim.configure(error_5xx_rate=0.5, seed=7)
    inputs = [request_input(f"item {i}") for i in range(40)]

    async def failed_prompts() -> set[str]:
        async with client() as http:
            accepted = [await submit(http, p) for p in inputs]
            finals = [await wait_done(http, a["status_url"]) for a in accepted]
        return {p["prompt"] for p, f in zip(inputs, finals, strict=True) if f.get("error_type")}

    first = await failed_prompts()
    sim.reset()
    sim.configure(error_5xx_rate=0.5, seed=7)
    assert await failed_prompts() == first
    assert 8 <= len(first) <= 32
    sim.reset()
    sim.configure(error_5xx_rate=0.5, seed=8)
    assert await failed_prompts() != first


async def test_ingress_503_has_an_nginx_body_and_no_request_id(sim) -> None:
    async with client() as http:
        accepted = await submit(http, request_input("a boat SIM_503"))
        polls = [await http.get(accepted["status_url"]) for _ in range(4)]
    assert [p.status_code for p in polls[:3]] == [503, 503, 503]
    assert all("nginx" in p.text and "x-fal-request-id" not in p.headers for p in polls[:3])
    assert polls[3].status_code in (200, 202)
    assert sim.ledger()["ingress_503"] == 3


async def test_fal_client_rides_through_ingress_503s(sim) -> None:
    fal = fal_client.AsyncClient(key=KEY)
    result = await fal.subscribe(T2I, request_input("a kite SIM_503"))
    assert result["images"]
    ledger = sim.ledger()
    assert ledger["ingress_503"] == 3 and ledger["totals"]["billed"] == 1


async def test_ingress_503_rate_hits_polls_of_healthy_requests(sim) -> None:
    sim.configure(ingress_503_rate=0.5)
    async with client() as http:
        accepted = await submit(http, request_input("a lamp"))
        codes = [(await http.get(accepted["status_url"])).status_code for _ in range(20)]
    assert 3 <= codes.count(503) <= 17
    assert sim.ledger()["ingress_503"] == codes.count(503)


async def test_content_policy_violation_is_a_422_with_its_type(sim) -> None:
    sim.configure(policy_word="zebra")
    fal = fal_client.AsyncClient(key=KEY)
    with pytest.raises(fal_client.FalClientHTTPError) as error:
        await fal.subscribe(T2I, request_input("a Zebra crossing"))
    assert error.value.status_code == 422
    (detail,) = error.value.response.json()["detail"]
    assert detail["type"] == "content_policy_violation"
    assert detail["loc"] == ["body", "prompt"]
    (entry,) = sim.ledger()["requests"]
    assert entry["outcome"] == "content_policy_violation" and entry["billed"] is False
    assert await fal.subscribe(T2I, request_input("a forbidden fruit")), "default word replaced"


async def test_lost_submit_breaks_the_answer_but_the_request_runs_and_is_billed(sim) -> None:
    payload = request_input("a vase SIM_LOSE_SUBMIT")
    async with client() as http:
        with pytest.raises(httpx.TransportError):
            await http.post(f"/{T2I}", json=payload)
        (entry,) = sim.ledger()["requests"]
        assert entry["submit_lost"] is True
        found = await http.get(
            "/v1/models/requests/by-endpoint",
            params={"endpoint_id": T2I, "expand": "payloads"},
        )
        (item,) = found.json()["items"]
        assert item["json_input"] == payload
        status_url = f"/openai/gpt-image-2/requests/{item['request_id']}/status"
        final = await wait_done(http, status_url)
    assert "error" not in final
    assert _entry(sim, item["request_id"])["billed"] is True


async def test_fal_client_resubmits_after_a_lost_answer_and_pays_twice(sim) -> None:
    """Why the engine never lets fal_client retry a submit: the first request ran too."""
    fal = fal_client.AsyncClient(key=KEY)
    result = await fal.subscribe(T2I, request_input("a chair SIM_LOSE_SUBMIT_ONCE"))
    assert result["images"]
    async with client() as http:
        for entry in sim.ledger()["requests"]:
            await wait_done(http, f"/openai/gpt-image-2/requests/{entry['request_id']}/status")
    ledger = sim.ledger()
    assert ledger["totals"]["accepted"] == 2
    assert ledger["totals"]["billed"] == 2 and ledger["totals"]["submit_lost"] == 1


async def _events_within(http: httpx.AsyncClient, status_url: str, seconds: float) -> list[str]:
    """Statuses a stream sends within ``seconds`` (a deadline, not a sleep; keep-alive
    comments arrive meanwhile, so a read timeout would never fire)."""
    seen: list[str] = []
    try:
        async with asyncio.timeout(seconds), http.stream("GET", f"{status_url}/stream") as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:])["status"])
    except TimeoutError:
        pass
    return seen


async def test_a_hung_request_stays_in_progress_until_cancelled(sim) -> None:
    async with client() as http:
        hung = await submit(http, request_input("a clock SIM_HANG"))
        # A low-quality render here takes at most ~0.02 s: 25x that brings no change.
        assert await _events_within(http, hung["status_url"], 0.5) == ["IN_PROGRESS"]
        cancelled = await http.put(hung["cancel_url"])
        assert cancelled.status_code == 202
        assert cancelled.json()["status"] == "CANCELLATION_REQUESTED"
        final = await wait_done(http, hung["status_url"])
        result = await http.get(hung["response_url"])
    assert final["error_type"] == "client_cancelled"
    assert result.status_code == 499
    assert _entry(sim, hung["request_id"])["billed"] is False


async def test_hang_rate_one_hangs_everything(sim) -> None:
    sim.configure(hang_rate=1.0)
    async with client() as http:
        accepted = await submit(http, request_input("a bell"))
        assert await _events_within(http, accepted["status_url"], 0.5) == ["IN_PROGRESS"]


async def test_expired_result_is_404_result_expired_but_was_billed(sim) -> None:
    async with client() as http:
        accepted = await submit(http, request_input("a rose SIM_EXPIRE"))
        final = await wait_done(http, accepted["status_url"])
        result = await http.get(accepted["response_url"])
    assert "error" not in final, "the request itself succeeded"
    assert result.status_code == 404
    assert result.json()["error_type"] == "result_expired"
    assert _entry(sim, accepted["request_id"])["billed"] is True


async def test_result_ttl_zero_expires_every_result_and_default_keeps_them(sim) -> None:
    async with client() as http:
        kept = await submit(http, request_input("kept"))
        await wait_done(http, kept["status_url"])
        assert (await http.get(kept["response_url"])).status_code == 200
        sim.configure(result_ttl=0)
        gone = await submit(http, request_input("gone"))
        await wait_done(http, gone["status_url"])
        assert (await http.get(gone["response_url"])).status_code == 404


async def test_start_timeout_header_ends_a_request_still_queued(sim) -> None:
    sim.configure(concurrency=1, time_scale=1.0)
    async with client() as http:
        await submit(http, request_input("blocker", quality="high"))
        response = await http.post(
            f"/{T2I}", json=request_input("impatient"), headers={"X-Fal-Request-Timeout": "0.2"}
        )
        waited = await wait_done(http, response.json()["status_url"])
        result = await http.get(response.json()["response_url"])
    assert waited["error_type"] == "request_timeout"
    assert result.status_code == 504
    assert result.headers["x-fal-request-timeout-type"] == "user"
