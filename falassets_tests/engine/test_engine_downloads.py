"""Outputs are kept only when they are the image we asked for, and never half-written.

A small HTTPS server of our own plays fal's CDN here (the emulator serves the happy path in
the engine tests); it can answer with whatever a broken CDN might send.
"""

from __future__ import annotations

import asyncio
import io
import ssl
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trustme
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from falassets.engine.downloads import (
    DownloadError,
    allowed_host,
    download_image,
    file_sha256,
)


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (width, height), (200, 40, 40, 128)).save(buffer, "PNG")
    return buffer.getvalue()


PNG_64x48 = _png(64, 48)


async def _route(request: Request) -> Response:
    name = request.path_params["name"]
    if name == "ok.png":
        return Response(PNG_64x48, media_type="image/png")
    if name == "truncated.png":
        return Response(PNG_64x48[: len(PNG_64x48) // 2], media_type="image/png")
    if name == "html.png":
        return Response("<html>login</html>", media_type="text/html")
    if name == "huge.png":

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(64):
                yield b"\0" * 65536

        return StreamingResponse(chunks(), media_type="image/png")
    if name == "flaky.png":
        return Response("busy", status_code=503)
    return Response(status_code=404)


@pytest.fixture(scope="module")
def cdn() -> Iterator[tuple[str, ssl.SSLContext]]:
    """``host:port`` of a local HTTPS server and an SSL context that trusts it."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx_dir = Path(tempfile.mkdtemp())
    cert_file = server_ctx_dir / "cert.pem"
    key_file = server_ctx_dir / "key.pem"
    cert.private_key_pem.write_to_path(key_file)
    cert.cert_chain_pems[0].write_to_path(cert_file)
    app = Starlette(routes=[Route("/files/{name}", _route)])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
        log_level="error",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:  # uvicorn offers no event; poll its flag with a deadline
        assert thread.is_alive() and time.monotonic() < deadline, "test CDN did not start"
        threading.Event().wait(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    yield f"127.0.0.1:{port}", client_ctx
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
async def http(cdn: tuple[str, ssl.SSLContext]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=cdn[1]) as client:
        yield client


async def test_download_is_verified_placed_and_thumbnailed(
    cdn: tuple[str, ssl.SSLContext], http: httpx.AsyncClient, tmp_path: Path
) -> None:
    host = cdn[0]
    stored = await download_image(
        http,
        f"https://{host}/files/ok.png",
        tmp_path,
        "p001",
        endpoint_host=host,
        expected_size=(64, 48),
    )
    assert stored.path == tmp_path / f"p001-{stored.sha256[:12]}.png"
    assert file_sha256(stored.path) == stored.sha256
    assert (stored.width, stored.height) == (64, 48)
    with Image.open(stored.thumbnail_path) as thumb:
        assert thumb.format == "JPEG"
        assert max(thumb.size) <= 256
    assert not [p for p in tmp_path.rglob(".part-*")]


@pytest.mark.parametrize(
    ("name", "kind", "expected"),
    [
        ("truncated.png", "output_not_decodable", None),
        ("html.png", "output_not_image", None),
        ("ok.png", "output_wrong_size", (1024, 768)),
        ("missing.png", "output_http_error", None),
    ],
)
async def test_bad_outputs_are_rejected_and_leave_nothing_behind(
    cdn: tuple[str, ssl.SSLContext],
    http: httpx.AsyncClient,
    tmp_path: Path,
    name: str,
    kind: str,
    expected: tuple[int, int] | None,
) -> None:
    host = cdn[0]
    with pytest.raises(DownloadError) as caught:
        await download_image(
            http,
            f"https://{host}/files/{name}",
            tmp_path,
            "p1",
            endpoint_host=host,
            expected_size=expected,
        )
    assert caught.value.kind == kind
    assert not caught.value.transient
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


async def test_size_cap_stops_a_stream_early(
    cdn: tuple[str, ssl.SSLContext], http: httpx.AsyncClient, tmp_path: Path
) -> None:
    host = cdn[0]
    with pytest.raises(DownloadError) as caught:
        await download_image(
            http,
            f"https://{host}/files/huge.png",
            tmp_path,
            "p1",
            endpoint_host=host,
            max_bytes=1_000_000,
        )
    assert caught.value.kind == "output_too_large"
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


async def test_server_errors_are_transient(
    cdn: tuple[str, ssl.SSLContext], http: httpx.AsyncClient, tmp_path: Path
) -> None:
    host = cdn[0]
    with pytest.raises(DownloadError) as caught:
        await download_image(
            http, f"https://{host}/files/flaky.png", tmp_path, "p1", endpoint_host=host
        )
    assert caught.value.transient


async def test_foreign_hosts_are_refused_before_any_request(tmp_path: Path) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(DownloadError) as caught:
            await asyncio.wait_for(
                download_image(
                    client, "https://evil.example.com/x.png", tmp_path, "p", endpoint_host="h:1"
                ),
                timeout=5,
            )
    assert caught.value.kind == "output_host_not_allowed"


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://v3.fal.media/files/a.png", True),
        ("https://fal.media/files/a.png", True),
        ("https://storage.fal.run/x.png", True),
        ("https://127.0.0.1:4443/files/x.png", True),
        ("http://v3.fal.media/files/a.png", False),  # not https
        ("https://fal.media.evil.com/a.png", False),
        ("https://evilfal.media/a.png", False),
        ("https://127.0.0.1:9999/files/x.png", False),  # same IP, another service
        ("file:///etc/passwd", False),
    ],
)
def test_allowed_hosts(url: str, ok: bool) -> None:
    assert allowed_host(url, "127.0.0.1:4443") is ok
