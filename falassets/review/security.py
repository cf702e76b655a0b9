"""Who may talk to the review page, and how it answers.

The page runs on a reviewer's machine next to a fal key and a budget, so a web page from
anywhere else must not be able to record decisions or start paid renders through it:

* **Host check** (DNS rebinding): a request must name the address the page is bound to (or a
  loopback name for it); otherwise a hostile site rebinding its name to 127.0.0.1 would be
  "same origin" with us.
* **Same origin**: every state-changing request (POST/PUT/PATCH/DELETE) carries an ``Origin``
  (or failing that a ``Referer``) equal to the page's own origin.
* **Token**: and it carries a per-server random token in a header that only the page's own
  script can read (a cross-origin form post can set neither this header nor ``Origin``).

Responses carry a strict Content-Security-Policy (no inline script, no external asset) and
``nosniff``; the page is never framed.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOKEN_HEADER = "x-falassets-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")

SECURITY_HEADERS: dict[str, str] = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


def new_token() -> str:
    return secrets.token_urlsafe(32)


def allowed_hosts(bind_host: str, port: int) -> frozenset[str] | None:
    """``Host`` header values the page answers to; None (any) when bound to every address,
    where the names it is reached by cannot be known."""
    if bind_host in WILDCARD_ADDRESSES:
        return None
    host = f"[{bind_host}]" if ":" in bind_host and not bind_host.startswith("[") else bind_host
    names = {host}
    if host in LOOPBACK_NAMES:
        names.update(LOOPBACK_NAMES)
    return frozenset(f"{name}:{port}" for name in names)


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin(headers: dict[str, str], own_origin: str) -> bool:
    """True when the request's Origin (else Referer) is exactly the page's own origin."""
    origin = headers.get("origin")
    if origin is not None:
        return origin.lower() == own_origin
    referer = headers.get("referer")
    return referer is not None and _origin_of(referer) == own_origin


class GuardMiddleware:
    """Enforces the host, origin and token rules above and adds the security headers."""

    def __init__(self, app: ASGIApp, *, token: str, hosts: Iterable[str] | None) -> None:
        self.app = app
        self.token = token.encode()
        self.hosts = None if hosts is None else frozenset(h.lower() for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "").lower()
        if self.hosts is not None and host not in self.hosts:
            await _refuse(send, 403, f"unknown Host {host!r}: open the address the server printed")
            return
        if scope["method"] not in SAFE_METHODS:
            own = f"{scope.get('scheme', 'http')}://{host}"
            if not same_origin(headers, own):
                await _refuse(send, 403, "cross-origin request refused")
                return
            sent = headers.get(TOKEN_HEADER, "").encode("latin-1")
            if not hmac.compare_digest(sent, self.token):
                await _refuse(send, 403, "missing or wrong page token: reload the page")
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                existing = {k.lower() for k, _ in message.get("headers", [])}
                extra = [
                    (k.encode(), v.encode())
                    for k, v in SECURITY_HEADERS.items()
                    if k.encode() not in existing
                ]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _refuse(send: Send, status: int, reason: str) -> None:
    body = json.dumps({"error": reason}).encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})
