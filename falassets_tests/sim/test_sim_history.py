"""fal's request history (``GET /v1/models/requests/by-endpoint``): how a client finds a
request whose submit answer it never got."""

from __future__ import annotations

import json
import ssl
import time

import httpx

from falassets.sim.control import SimProcess
from falassets_tests.sim.test_sim_support import EDIT, T2I, client, request_input, submit, wait_done

HISTORY = "/v1/models/requests/by-endpoint"


ITEM_FIELDS = {"request_id", "endpoint_id", "sent_at", "started_at", "ended_at", "status_code"}


async def test_history_items_have_fals_documented_shape_newest_end_first(sim) -> None:
    async with client() as http:
        accepted = [await submit(http, request_input(f"h{i}")) for i in range(3)]
        for a in accepted:
            await wait_done(http, a["status_url"])
        plain = (await http.get(HISTORY, params={"endpoint_id": T2I})).json()
        expanded = (
            await http.get(HISTORY, params={"endpoint_id": T2I, "expand": "payloads"})
        ).json()
    ended = [i["ended_at"] for i in plain["items"]]
    assert ended == sorted(ended, reverse=True)  # fal sorts by end time
    assert {i["request_id"] for i in plain["items"]} == {a["request_id"] for a in accepted}
    assert plain["has_more"] is False and plain["next_cursor"] is None
    # No `status` field (derive it from status_code/ended_at); payloads only when expanded.
    assert all(set(i) == ITEM_FIELDS | {"duration"} for i in plain["items"])
    by_id = {i["request_id"]: i for i in expanded["items"]}
    first = by_id[accepted[0]["request_id"]]
    assert set(first) == ITEM_FIELDS | {"duration", "json_input", "json_output"}
    assert first["json_input"] == request_input("h0")
    assert first["status_code"] == 200 and first["endpoint_id"] == T2I
    assert first["sent_at"] <= first["started_at"] <= first["ended_at"]
    assert first["json_output"]["images"][0]["width"] == 512


async def test_history_filters_by_endpoint_and_request_id_and_pages(sim) -> None:
    async with client() as http:
        accepted = [await submit(http, request_input(f"p{i}")) for i in range(5)]
        ids = [a["request_id"] for a in accepted]
        await submit(
            http, {"prompt": "e", "image_urls": ["https://example.com/x.png"]}, endpoint=EDIT
        )
        # Sorted by end time (fal's documented order), a request that finishes between two
        # pages moves in the order and may be listed twice; page once all have finished.
        for request in accepted:
            await wait_done(http, request["status_url"])
        one = (await http.get(HISTORY, params={"endpoint_id": T2I, "request_id": ids[2]})).json()
        edits = (await http.get(HISTORY, params={"endpoint_id": EDIT})).json()
        seen: list[str] = []
        params = {"endpoint_id": T2I, "limit": 2}
        while True:
            page = (await http.get(HISTORY, params=params)).json()
            seen += [i["request_id"] for i in page["items"]]
            if not page["has_more"]:
                break
            params["cursor"] = page["next_cursor"]
    assert [i["request_id"] for i in one["items"]] == [ids[2]]
    assert [i["endpoint_id"] for i in edits["items"]] == [EDIT]
    assert sorted(seen) == sorted(ids) and len(seen) == len(ids)  # each once, over 3 pages
    assert sim.ledger()["http"]["history"] == 2 + 3


async def test_history_of_a_failed_request_carries_its_status_code(sim) -> None:
    async with client() as http:
        accepted = await submit(http, request_input("broken SIM_5XX"))
        await wait_done(http, accepted["status_url"])
        page = await http.get(HISTORY, params={"endpoint_id": T2I, "expand": "payloads"})
    (item,) = page.json()["items"]
    assert item["status_code"] == 500
    assert item["json_output"]["error_type"] == "runner_server_error"


async def test_history_needs_an_endpoint_id(sim) -> None:
    async with client() as http:
        response = await http.get(HISTORY)
    assert response.status_code == 422 and "endpoint_id" in response.json()["detail"]


async def test_paused_history_misses_new_requests_until_it_catches_up(sim) -> None:
    async with client() as http:
        before = (await submit(http, request_input("before the lag")))["request_id"]
        sim.configure(history_paused=True)
        during = (await submit(http, request_input("during the lag")))["request_id"]
        lagging = (await http.get(HISTORY, params={"endpoint_id": T2I})).json()
        by_id = (await http.get(HISTORY, params={"endpoint_id": T2I, "request_id": during})).json()
        sim.configure(history_paused=False)
        caught_up = (await http.get(HISTORY, params={"endpoint_id": T2I})).json()
    assert [i["request_id"] for i in lagging["items"]] == [before]
    assert by_id["items"] == []
    assert [i["request_id"] for i in caught_up["items"]] == [during, before]
    assert sim.ledger()["totals"]["accepted"] == 2  # it was accepted all along


async def test_history_limit_defaults_to_50_and_refuses_more_than_100(sim) -> None:
    async with client() as http:
        for i in range(51):
            await submit(http, request_input(f"many {i}"))
        default = (await http.get(HISTORY, params={"endpoint_id": T2I})).json()
        too_many = await http.get(HISTORY, params={"endpoint_id": T2I, "limit": 101})
        bad_cursor = await http.get(HISTORY, params={"endpoint_id": T2I, "cursor": "nope"})
    assert len(default["items"]) == 50 and default["has_more"] is True
    assert too_many.status_code == 422 and "limit" in too_many.json()["detail"]
    assert bad_cursor.status_code == 422 and "cursor" in bad_cursor.json()["detail"]


async def test_history_status_filter_selects_by_final_status_code(sim) -> None:
    async with client() as http:
        ok = await submit(http, request_input("fine"))
        refused = await submit(http, request_input("a forbidden thing"))
        broken = await submit(http, request_input("broken SIM_5XX"))
        for accepted in (ok, refused, broken):
            await wait_done(http, accepted["status_url"])
        found = {}
        for status in ("success", "user_error", "error"):
            page = await http.get(HISTORY, params={"endpoint_id": T2I, "status": status})
            found[status] = [i["request_id"] for i in page.json()["items"]]
    assert found == {
        "success": [ok["request_id"]],
        "user_error": [refused["request_id"]],
        "error": [broken["request_id"]],
    }


async def test_history_absent_forbidden_and_unavailable_knobs(sim) -> None:
    async with client() as http:
        sim.configure(history="absent")
        absent = await http.get(HISTORY, params={"endpoint_id": T2I})
        sim.configure(history="forbidden")
        forbidden = await http.get(HISTORY, params={"endpoint_id": T2I})
        sim.configure(history="unavailable")
        unavailable = await http.get(HISTORY, params={"endpoint_id": T2I})
        accepted = await submit(http, request_input("the queue still works"))
    assert absent.status_code == 404
    assert forbidden.status_code == 403 and "key" in forbidden.json()["detail"]
    assert unavailable.status_code == 503
    assert accepted["request_id"]


async def test_history_lists_live_requests_unless_finished_only(sim) -> None:
    sim.configure(latency_low=1000.0)  # ~10 s at the session's time scale: still running
    async with client() as http:
        running = await submit(http, request_input("still rendering"))
        listed = (await http.get(HISTORY, params={"endpoint_id": T2I})).json()["items"]
        sim.configure(history_finished_only=True)
        finished_only = (await http.get(HISTORY, params={"endpoint_id": T2I})).json()["items"]
    (item,) = listed
    assert item["request_id"] == running["request_id"]
    assert item["ended_at"] is None and item["status_code"] is None
    assert item["started_at"] is not None
    assert finished_only == []


def test_history_window_is_24_hours_by_default_and_90_days_by_request_id(tmp_path) -> None:
    """Requests from 25 h ago (restored from a state file) are outside the default window."""
    old = time.time() - 25 * 3600
    snapshot = {
        "request_id": "old-request",
        "endpoint": T2I,
        "input": request_input("yesterday"),
        "occurrence": 0,
        "ticket": 0,
        "plan": [],
        "duration": 1.0,
        "submitted_at": old,
        "status": "COMPLETED",
        "started_at": old + 1,
        "completed_at": old + 2,
        "outcome": "ok",
        "billed": True,
        "expires_at": old + 3600,
    }
    state = tmp_path / "state.jsonl"
    state.write_text(json.dumps(snapshot) + "\n")
    with SimProcess.start("--state-file", str(state), "--cert-dir", str(tmp_path)) as other:
        context = ssl.create_default_context(cafile=str(other.cert_file))
        with httpx.Client(verify=context, trust_env=False, headers={"Authorization": "Key k"}) as h:
            url = f"{other.url}{HISTORY}"
            default = h.get(url, params={"endpoint_id": T2I}).json()
            by_id = h.get(url, params={"endpoint_id": T2I, "request_id": "old-request"}).json()
            since = h.get(url, params={"endpoint_id": T2I, "start": "2000-01-01T00:00:00Z"})
    assert default["items"] == []
    assert [i["request_id"] for i in by_id["items"]] == ["old-request"]
    assert [i["request_id"] for i in since.json()["items"]] == ["old-request"]
