"""Helpers shared by the emulator tests (no tests here): raw HTTPS calls to the session
emulator, SSE reading, image decoding, a free loopback port."""

from __future__ import annotations

import io
import json
import os
import socket
from typing import Any

import httpx
from PIL import Image

KEY = "test-key"
T2I = "openai/gpt-image-2"
EDIT = "openai/gpt-image-2/edit"


def free_port() -> int:
    """A loopback port nothing listens on right now (for an emulator or dagster dev)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def base_url() -> str:
    return f"https://{os.environ['FAL_QUEUE_RUN_HOST']}"


def client(key: str | None = KEY, **kwargs: Any) -> httpx.AsyncClient:
    """An httpx client that trusts the emulator (SSL_CERT_FILE) and sends ``key``."""
    headers = {"Authorization": f"Key {key}"} if key else {}
    return httpx.AsyncClient(base_url=base_url(), headers=headers, timeout=30.0, **kwargs)


def request_input(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "quality": "low", "image_size": "square", **extra}


async def submit(http: httpx.AsyncClient, payload: dict[str, Any], endpoint: str = T2I) -> dict:
    response = await http.post(f"/{endpoint}", json=payload)
    assert response.status_code == 200, response.text
    return response.json()


async def stream_events(http: httpx.AsyncClient, status_url: str) -> list[dict[str, Any]]:
    """Every ``data:`` event of a status stream, until the server closes it."""
    events = []
    async with http.stream("GET", f"{status_url}/stream", params={"logs": "1"}) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    return events


async def wait_done(http: httpx.AsyncClient, status_url: str) -> dict[str, Any]:
    """The COMPLETED status, waited for on the status stream (no polling)."""
    events = await stream_events(http, status_url)
    assert events and events[-1]["status"] == "COMPLETED", events
    return events[-1]


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
