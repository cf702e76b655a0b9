"""What the emulator refuses at submit: fal's 422 ``detail`` list, 401 for keys, 404 apps."""

from __future__ import annotations

import fal_client
import pytest

from falassets_tests.sim.test_sim_support import EDIT, KEY, T2I, client, request_input

BAD_INPUTS = [
    ({"quality": "low"}, "prompt", "missing"),
    ({"prompt": "x", "image_size": "square_huge"}, "image_size", "enum"),
    ({"prompt": "x", "image_size": {"width": 1000, "height": 1000}}, "image_size", "value_error"),
    ({"prompt": "x", "image_size": {"width": 3840, "height": 1024}}, "image_size", "value_error"),
    ({"prompt": "x", "num_images": 5}, "num_images", "less_than_equal"),
    ({"prompt": "x", "num_images": 0}, "num_images", "greater_than_equal"),
    ({"prompt": "x", "output_format": "gif"}, "output_format", "enum"),
    ({"prompt": "x", "quality": "ultra"}, "quality", "enum"),
]


@pytest.mark.parametrize(("payload", "field", "kind"), BAD_INPUTS)
async def test_bad_input_is_a_422_detail_list_naming_the_field(sim, payload, field, kind) -> None:
    fal = fal_client.AsyncClient(key=KEY)
    with pytest.raises(fal_client.FalClientHTTPError) as error:
        await fal.submit(T2I, payload)
    assert error.value.status_code == 422
    detail = error.value.response.json()["detail"]
    assert [(d["loc"], d["type"]) for d in detail] == [(["body", field], kind)]
    assert detail[0]["msg"]
    assert sim.ledger()["totals"]["accepted"] == 0, "a refused input is never accepted"


async def test_edit_requires_image_urls(sim) -> None:
    async with client() as http:
        response = await http.post(f"/{EDIT}", json={"prompt": "refine"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "image_urls"]


async def test_body_that_is_not_json_is_a_422(sim) -> None:
    async with client() as http:
        response = await http.post(f"/{T2I}", content=b"{not json")
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


async def test_unknown_application_is_404(sim) -> None:
    async with client() as http:
        response = await http.post("/fal-ai/flux/dev", json={"prompt": "x"})
    assert response.status_code == 404


async def test_missing_key_is_401_everywhere(sim) -> None:
    async with client(key=None) as http:
        submit = await http.post(f"/{T2I}", json=request_input("x"))
        status = await http.get("/openai/gpt-image-2/requests/abc/status")
        history = await http.get("/v1/models/requests/by-endpoint", params={"endpoint_id": T2I})
    assert [submit.status_code, status.status_code, history.status_code] == [401, 401, 401]
    assert sim.ledger()["totals"]["accepted"] == 0


async def test_a_wrong_key_is_401_and_is_never_echoed(sim) -> None:
    sim.configure(valid_key="the-right-key")
    wrong = fal_client.AsyncClient(key="a-wrong-key-123")
    with pytest.raises(fal_client.FalClientHTTPError) as error:
        await wrong.submit(T2I, request_input("x"))
    assert error.value.status_code == 401
    assert "a-wrong-key-123" not in error.value.response.text
    right = fal_client.AsyncClient(key="the-right-key")
    result = await right.subscribe(T2I, request_input("x"))
    assert result["images"]
    everything = str(sim.ledger()) + str(sim.config())
    assert "the-right-key" not in everything and "a-wrong-key-123" not in everything


def test_an_unknown_knob_is_refused_with_the_known_ones_listed(sim) -> None:
    with pytest.raises(ValueError, match="unknown knob"):
        sim.configure(concurency=3)
    with pytest.raises(ValueError, match="mode"):
        sim.configure(mode="drop")
    assert sim.config()["mode"] == "queue"
