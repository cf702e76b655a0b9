"""Who may talk to the review page, and how it answers.

The page runs on a reviewer's machine next to a fal key and a budget, so neither a web page
from elsewhere nor another machine on the network may record decisions or start paid renders
through it:

* **Host check** (DNS rebinding), always on: a request must name this server by a loopback
  name, an IP address (remote mode only) or a name the person allowed (``--allowed-host``).
  A hostile site rebinding its own name to our address still sends that name in ``Host``.
  IP literals are safe to accept: a browser sends one only for a page loaded from that address.
* **Access secret** (remote mode only): bound beyond loopback, the server answers nothing but
  its static files until the browser shows the secret the person was given at start
  (``/?token=...``, exchanged at once for an HttpOnly cookie). ``GET /`` never hands it out.
* **Same origin**: every state-changing request (POST/PUT/PATCH/DELETE) carries an ``Origin``
  (or failing that a ``Referer``) equal to the page's own origin.
* **Page token**: and it carries a per-server random token in a header that only the page's
  own script can read (a cross-origin form post can set neither this header nor ``Origin``).
  On loopback the page embeds it for anyone who loads ``/`` with a checked loopback ``Host``:
  only this machine can connect there, and no other site can read the page.

Responses carry a strict Content-Security-Policy (no inline script, no external asset) and
``nosniff``; the page is never framed.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOKEN_HEADER = "x-falassets-token"
ACCESS_PARAM = "token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")
PUBLIC_PREFIX = "/static/"  # the page's own script and style: no data, no secret
_HOST_NAME = re.compile(
    r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)

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

NEED_LINK = (
    "This review page is shared beyond its machine and opens only with its secret link: the "
    "address `falassets review` printed when it started (it ends with ?token=...)."
)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """True for an address (or ``localhost``) that only this machine can reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name_error(name: str) -> str | None:
    """Why ``name`` cannot be an ``--allowed-host`` value, or None when it can."""
    bare = name.strip().lower()
    if is_ip(bare) or _HOST_NAME.fullmatch(bare):
        return None
    return (
        f"--allowed-host {name!r} is not a host name. Fix: give the bare name or IP address "
        "people type in the address bar, without scheme or port (e.g. review.example.lan)"
    )


@dataclass(frozen=True)
class HostRule:
    """The ``Host`` header values the page answers to (the port is not part of the check:
    a rebinding attack is about the name, and a proxy may change the port)."""

    names: frozenset[str] = LOOPBACK_NAMES
    any_ip: bool = False

    def allows(self, host_header: str) -> bool:
        name = host_only(host_header)
        return bool(name) and (name in self.names or (self.any_ip and is_ip(name)))


def allowed_hosts(
    bind_host: str = "127.0.0.1", *, remote: bool = False, extra: Iterable[str] = ()
) -> HostRule:
    """Loopback names, the bound address, ``extra`` names, and any IP address when remote."""
    names = set(LOOPBACK_NAMES) | {n.strip().lower().strip("[]") for n in extra}
    if bind_host not in WILDCARD_ADDRESSES:
        names.add(bind_host.lower().strip("[]"))
    return HostRule(frozenset(names), any_ip=remote)


def host_only(host_header: str) -> str:
    """``Host`` without its port or IPv6 brackets, lowercased (``[::1]:80`` -> ``::1``);
    empty when it is not a well-formed host."""
    host = host_header.strip().lower()
    if host.startswith("["):
        name, bracket, rest = host[1:].partition("]")
        well_formed = bracket and (not rest or (rest[:1] == ":" and rest[1:].isdigit()))
        return name if well_formed else ""
    name, colon, port = host.partition(":")
    return "" if colon and not port.isdigit() else name


def access_cookie_name(access: str) -> str:
    """Per-server cookie name: two review servers on one host never overwrite each other's
    cookie (cookies ignore ports), and the name reveals nothing of the secret."""
    return "falassets_review_" + hashlib.sha256(access.encode()).hexdigest()[:10]


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


def _matches(sent: str, secret: bytes) -> bool:
    return hmac.compare_digest(sent.encode("latin-1", "replace"), secret)


class GuardMiddleware:
    """Enforces the host, access, origin and token rules above and adds the security headers.

    ``access``: the remote-mode secret (None on loopback, where no secret is asked for).
    """

    def __init__(
        self, app: ASGIApp, *, token: str, hosts: HostRule, access: str | None = None
    ) -> None:
        self.app = app
        self.token = token.encode()
        self.hosts = hosts
        self.access = None if access is None else access.encode()
        self.cookie = None if access is None else access_cookie_name(access)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "").lower()
        if not self.hosts.allows(host):
            await _refuse(send, 403, f"unknown Host {host!r}: open the address the server printed")
            return
        public = scope["path"].startswith(PUBLIC_PREFIX)
        if self.access is not None and not public and not await self._check(scope, headers, send):
            return
        if scope["method"] not in SAFE_METHODS:
            own = f"{scope.get('scheme', 'http')}://{host}"
            if not same_origin(headers, own):
                await _refuse(send, 403, "cross-origin request refused")
                return
            if not _matches(headers.get(TOKEN_HEADER, ""), self.token):
                await _refuse(send, 403, "missing or wrong page token: reload the page")
                return
        await self.app(scope, receive, _with_security_headers(send))

    async def _check(self, scope: Scope, headers: dict[str, str], send: Send) -> bool:
        """Remote mode: True when the request may go on; otherwise it has been answered."""
        assert self.access is not None and self.cookie is not None
        offered = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(ACCESS_PARAM)
        if offered and scope["method"] == "GET":
            if not _matches(offered[-1], self.access):
                await _refuse(send, 403, "That link's secret is wrong. " + NEED_LINK, as_html=True)
                return False
            # Trade the link for a cookie and drop the secret from the address bar and history
            # (the browser keeps the #/c/... part across the redirect).
            cookie = f"{self.cookie}={self.access.decode()}; Path=/; HttpOnly; SameSite=Lax"
            await _redirect(send, "/", cookie)
            return False
        if any(_matches(value, self.access) for value in cookies(headers, self.cookie)):
            return True
        await _refuse(send, 401, NEED_LINK, as_html=scope["path"] == "/")
        return False


def cookies(headers: dict[str, str], name: str) -> list[str]:
    """Values of cookie ``name``. Parsed by hand: other sites on this host name (cookies
    ignore ports) may send values ``http.cookies`` gives up on, losing ours with them."""
    found = []
    for pair in headers.get("cookie", "").split(";"):
        key, equals, value = pair.strip().partition("=")
        if equals and key == name:
            found.append(value.strip().strip('"'))
    return found


def _with_security_headers(send: Send) -> Send:
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

    return send_with_headers


async def _redirect(send: Send, location: str, cookie: str) -> None:
    headers = [
        (b"location", location.encode("latin-1", "replace")),
        (b"set-cookie", cookie.encode("latin-1")),
        (b"cache-control", b"no-store"),
        (b"content-length", b"0"),
    ]
    await _answer(send, 303, headers, b"")


async def _refuse(send: Send, status: int, reason: str, *, as_html: bool = False) -> None:
    if as_html:
        body = (
            "<!doctype html><meta charset='utf-8'><title>falassets review</title>"
            "<link rel='stylesheet' href='/static/review.css'>"
            f"<main id='home'><h1>falassets review</h1><p>{html.escape(reason)}</p></main>"
        ).encode()
        content_type = b"text/html; charset=utf-8"
    else:
        body = json.dumps({"error": reason}).encode()
        content_type = b"application/json"
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await _answer(send, status, headers, body)


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = headers + [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})
