"""Where fal's documentation is silent (cancel codes, early and expired results) the emulator
has a default and a knob per alternative; admin input is checked; reset protects live work."""

from __future__ import annotations

import math

import httpx
import pytest

from falassets_tests.sim.test_sim_support import client, request_input, submit, wait_done


async def _queued_and_running(http: httpx.AsyncClient) -> tuple[dict, dict]:
    running = await submit(http, request_input("first in line", quality="high"))
    queued = await submit(http, request_input("second in line", quality="high"))
    return running, queued


async def test_cancel_answers_fals_documented_statuses_with_reported_codes(sim) -> None:
    sim.configure(concurrency=1, time_scale=1.0)
    async with client() as http:
        running, queued = await _queued_and_running(http)
        removed = await http.put(queued["cancel_url"])
        requested = await http.put(running["cancel_url"])
        done = await http.put(queued["cancel_url"])  # it ended when removed
        unknown = await http.put("/openai/gpt-image-2/requests/nope/cancel")
    answers = [(r.status_code, r.json()["status"]) for r in (removed, requested, done, unknown)]
    assert answers == [
        (200, "OK"),
        (202, "CANCELLATION_REQUESTED"),
        (400, "ALREADY_COMPLETED"),
        (404, "NOT_FOUND"),
    ]


async def test_cancel_codes_all_200_knob_keeps_only_the_body(sim) -> None:
    sim.configure(concurrency=1, time_scale=1.0, cancel_codes="all_200")
    async with client() as http:
        _running, queued = await _queued_and_running(http)
        await http.put(queued["cancel_url"])
        done = await http.put(queued["cancel_url"])
        unknown = await http.put("/openai/gpt-image-2/requests/nope/cancel")
    assert (done.status_code, done.json()["status"]) == (200, "ALREADY_COMPLETED")
    assert (unknown.status_code, unknown.json()["status"]) == (200, "NOT_FOUND")


@pytest.mark.parametrize(
    ("knob", "code"), [(None, 400), ("404_not_found", 404), ("202_status", 202)]
)
async def test_early_result_knob(sim, knob: str | None, code: int) -> None:
    sim.configure(latency_low=1000.0, **({"early_result": knob} if knob else {}))
    async with client() as http:
        accepted = await submit(http, request_input("not yet"))
        early = await http.get(accepted["response_url"])
    assert early.status_code == code
    if code == 202:
        assert early.json()["status"] == "IN_PROGRESS"


@pytest.mark.parametrize(
    ("knob", "code", "error_type"),
    [
        (None, 404, "result_expired"),
        ("410_gone", 410, "result_expired"),
        ("404_not_found", 404, None),
    ],
)
async def test_expired_result_knob(sim, knob: str | None, code: int, error_type) -> None:
    sim.configure(result_ttl=0, **({"expired_result": knob} if knob else {}))
    async with client() as http:
        accepted = await submit(http, request_input("gone"))
        await wait_done(http, accepted["status_url"])
        expired = await http.get(accepted["response_url"])
    assert expired.status_code == code
    assert expired.json().get("error_type") == error_type


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"time_scale": 1e400}', "time_scale must be a finite number"),
        ('{"latency_low": NaN}', "latency_low must be a finite number"),
        ('{"result_ttl": -Infinity}', "result_ttl must be a finite number"),
        ('{"time_scale": 1e9}', "time_scale must be a finite number in (0, 1000]"),
        ('{"concurrency": 1e400}', "concurrency must be an integer"),
        ('{"stream": "sometimes"}', "stream must be one of on, absent_404"),
        ('{"retry_after": NaN}', "retry_after must be a finite number"),
    ],
)
async def test_admin_refuses_non_finite_and_out_of_range_knobs(sim, body, message) -> None:
    async with client() as http:
        response = await http.post(
            "/_sim/config", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert message in response.json()["detail"]
    config = sim.config()
    assert all(not isinstance(v, float) or math.isfinite(v) for v in config.values())


async def test_reset_refuses_while_requests_are_live_unless_forced(sim) -> None:
    sim.configure(latency_low=1000.0)
    async with client() as http:
        live = await submit(http, request_input("mid-run"))
        refused = await http.post("/_sim/reset")
        still = await http.get(live["status_url"])
        with pytest.raises(RuntimeError, match="still queued or running"):
            sim.reset(force=False)
        forced = await http.post("/_sim/reset", params={"force": "true"})
        gone = await http.get(live["status_url"])
    assert refused.status_code == 409 and refused.json()["live"] == 1
    assert still.status_code == 202  # the live request was kept
    assert forced.status_code == 200 and gone.status_code == 404
    assert sim.ledger()["totals"]["accepted"] == 0


async def test_reset_without_live_requests_needs_no_force(sim) -> None:
    async with client() as http:
        done = await submit(http, request_input("finished"))
        await wait_done(http, done["status_url"])
        reset = await http.post("/_sim/reset")
    assert reset.status_code == 200 and sim.ledger()["totals"]["accepted"] == 0
