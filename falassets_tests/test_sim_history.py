"""fal's request history (``GET /v1/models/requests/by-endpoint``): how a client finds a
request whose submit answer it never got."""

from __future__ import annotations

from falassets_tests.test_sim_support import EDIT, T2I, client, request_input, submit, wait_done

HISTORY = "/v1/models/requests/by-endpoint"


async def test_history_lists_accepted_requests_newest_first_with_inputs(sim) -> None:
    async with client() as http:
        accepted = [await submit(http, request_input(f"h{i}")) for i in range(3)]
        for a in accepted:
            await wait_done(http, a["status_url"])
        plain = (await http.get(HISTORY, params={"endpoint_id": T2I})).json()
        expanded = (
            await http.get(HISTORY, params={"endpoint_id": T2I, "expand": "payloads"})
        ).json()
    ids = [a["request_id"] for a in reversed(accepted)]
    assert [i["request_id"] for i in plain["items"]] == ids
    assert plain["has_more"] is False and plain["next_cursor"] is None
    first = plain["items"][-1]
    assert first["json_input"] == request_input("h0")
    assert first["status_code"] == 200 and first["endpoint_id"] == T2I
    assert first["sent_at"] <= first["started_at"] <= first["ended_at"]
    assert "json_output" not in first
    assert expanded["items"][-1]["json_output"]["images"][0]["width"] == 512


async def test_history_filters_by_endpoint_and_request_id_and_pages(sim) -> None:
    async with client() as http:
        ids = [(await submit(http, request_input(f"p{i}")))["request_id"] for i in range(5)]
        await submit(
            http, {"prompt": "e", "image_urls": ["https://example.com/x.png"]}, endpoint=EDIT
        )
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
    assert seen == list(reversed(ids))
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
