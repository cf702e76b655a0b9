"""The real fal_client (async and sync) against the emulator: what a user's code sees."""

from __future__ import annotations

import asyncio

import fal_client
import httpx
import pytest
from PIL import ImageChops, ImageStat

from falassets.engine.pricing import price_usd
from falassets_tests.sim.test_sim_support import (
    EDIT,
    KEY,
    T2I,
    client,
    decode,
    request_input,
    submit,
    wait_done,
)

SIZES = [
    ("square_hd", (1024, 1024)),
    ("square", (512, 512)),
    ("portrait_16_9", (576, 1024)),
    ("landscape_4_3", (1024, 768)),
    ({"width": 1280, "height": 720}, (1280, 720)),
]


@pytest.mark.parametrize(("image_size", "expected"), SIZES)
async def test_async_subscribe_returns_images_that_decode_at_the_requested_size(
    sim, image_size, expected
) -> None:
    fal = fal_client.AsyncClient(key=KEY)
    payload = {"prompt": "a red sun over blue mountains", "quality": "medium"}
    result = await fal.subscribe(T2I, {**payload, "image_size": image_size})
    (image,) = result["images"]
    async with httpx.AsyncClient() as http:
        data = (await http.get(image["url"])).content
    decoded = decode(data)
    assert decoded.size == expected
    assert (image["width"], image["height"]) == expected
    assert decoded.format == "PNG" and image["content_type"] == "image/png"


@pytest.mark.parametrize(
    ("fmt", "pil_format"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")]
)
def test_sync_subscribe_honours_each_output_format(sim, fmt, pil_format) -> None:
    fal = fal_client.SyncClient(key=KEY)
    updates: list[object] = []
    result = fal.subscribe(
        T2I,
        request_input("a teal robot", output_format=fmt, num_images=2),
        with_logs=True,
        on_queue_update=updates.append,
    )
    assert len(result["images"]) == 2
    assert isinstance(updates[-1], fal_client.Completed)
    with httpx.Client() as http:
        files = [http.get(image["url"]).content for image in result["images"]]
    for image, data in zip(result["images"], files, strict=True):
        decoded = decode(data)
        assert decoded.format == pil_format
        assert decoded.size == (512, 512)
        assert image["file_name"].endswith(f".{fmt}")
        assert image["content_type"] == f"image/{fmt}"
    assert files[0] != files[1], "the images of one request must differ from each other"


async def test_submit_status_result_with_the_handle(sim) -> None:
    fal = fal_client.AsyncClient(key=KEY)
    handle = await fal.submit(T2I, request_input("a yellow house"))
    statuses = [status async for status in handle.iter_events(with_logs=True, interval=0.01)]
    final = statuses[-1]
    assert isinstance(final, fal_client.Completed)
    assert final.metrics["inference_time"] > 0
    assert final.logs and all("message" in entry for entry in final.logs)
    result = await handle.get()
    assert result["images"][0]["width"] == 512
    ledger = sim.ledger()
    assert [r["request_id"] for r in ledger["requests"]] == [handle.request_id]
    assert ledger["http"]["submit"] == 1 and ledger["http"]["result"] == 1
    assert ledger["http"]["status"] == len(statuses) + 1  # get() asks for the status once more


async def test_cancel_of_a_queued_request_removes_it_and_it_is_not_billed(sim) -> None:
    sim.configure(concurrency=1, time_scale=1.0)
    fal = fal_client.AsyncClient(key=KEY)
    running = await fal.submit(T2I, request_input("first in line", quality="high"))
    queued = await fal.submit(T2I, request_input("second in line", quality="high"))
    assert isinstance(await queued.status(), fal_client.Queued)
    await queued.cancel()
    final = await queued.status()
    assert isinstance(final, fal_client.Completed)
    assert final.error_type == "client_cancelled"
    with pytest.raises(fal_client.FalClientHTTPError) as error:
        await queued.get()
    assert error.value.status_code == 499
    entry = {r["request_id"]: r for r in sim.ledger()["requests"]}[queued.request_id]
    assert entry["billed"] is False and entry["cost_usd"] == 0
    # A running request may still finish: cancelling it is accepted but it runs on.
    await running.cancel()
    assert isinstance(await running.status(), fal_client.InProgress)


async def test_cancel_answers_already_completed_and_not_found(sim) -> None:
    fal = fal_client.AsyncClient(key=KEY)
    handle = await fal.submit(T2I, request_input("done soon"))
    await handle.get()
    with pytest.raises(fal_client.FalClientHTTPError) as done:
        await handle.cancel()
    assert done.value.status_code == 400
    async with client() as http:
        response = await http.put(f"/openai/gpt-image-2/requests/{'0' * 8}-nope/cancel")
    assert response.status_code == 404 and response.json()["status"] == "NOT_FOUND"


async def test_same_input_gives_the_same_bytes_and_other_prompts_differ(sim) -> None:
    async with client() as http:
        results = []
        for prompt in ("a green forest", "a green forest", "a purple city at night"):
            accepted = await submit(http, request_input(prompt))
            await wait_done(http, accepted["status_url"])
            output = (await http.get(accepted["response_url"])).json()
            results.append((await http.get(output["images"][0]["url"])).content)
    assert results[0] == results[1]
    assert results[0] != results[2]
    difference = ImageChops.difference(decode(results[0]).convert("RGB"), decode(results[2]))
    assert max(ImageStat.Stat(difference).mean) > 10, "different prompts must look different"


def _thumb(data: bytes):
    return decode(data).convert("L").resize((32, 32))


async def test_edit_of_an_emulator_image_keeps_its_composition(sim) -> None:
    """Refine starts from the picked draft: the refined image resembles it far more than an
    unrelated render does, and comes back at the draft's size (image_size auto)."""
    fal = fal_client.AsyncClient(key=KEY)
    draft = await fal.subscribe(T2I, request_input("a red sun over blue mountains"))
    other = await fal.subscribe(T2I, request_input("a pink cat in a yellow hat"))
    refined = await fal.subscribe(
        EDIT,
        {
            "prompt": "same scene, crisp",
            "image_urls": [draft["images"][0]["url"]],
            "quality": "high",
        },
    )
    assert (refined["images"][0]["width"], refined["images"][0]["height"]) == (512, 512)
    async with httpx.AsyncClient() as http:
        draft_px, other_px, refined_px = [
            _thumb((await http.get(r["images"][0]["url"])).content) for r in (draft, other, refined)
        ]
    near = ImageStat.Stat(ImageChops.difference(refined_px, draft_px)).mean[0]
    far = ImageStat.Stat(ImageChops.difference(other_px, draft_px)).mean[0]
    assert near < far / 2


async def test_many_clients_at_once_all_complete_and_the_ledger_bills_each(sim) -> None:
    sim.configure(concurrency=3)
    fal = fal_client.AsyncClient(key=KEY)
    inputs = [request_input(f"poster number {i}", quality="medium") for i in range(12)]
    results = await asyncio.gather(*(fal.subscribe(T2I, payload) for payload in inputs))
    assert all(len(r["images"]) == 1 for r in results)
    ledger = sim.ledger()
    assert ledger["peak_running"] == 3
    assert ledger["totals"]["billed"] == 12
    assert ledger["totals"]["billed_usd"] == pytest.approx(sum(price_usd(p) for p in inputs))
    by_submit = sorted(ledger["requests"], key=lambda r: r["submitted_at"])
    starts = [r["started_at"] for r in by_submit]
    assert starts == sorted(starts), "queued requests start first in, first out"
