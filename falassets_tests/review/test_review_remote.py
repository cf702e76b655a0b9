"""The review page beyond loopback: refused unless asked for, and then only with the secret
link the person was given at start. ``GET /`` never hands the page token to someone who
merely reached the port, and the Host check (DNS rebinding) stays on.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from falassets.lineage import decisions
from falassets.review.security import TOKEN_HEADER, access_cookie_name, allowed_hosts, host_only
from falassets_tests.review.test_review_support import (
    Reply,
    ReviewServer,
    http_request,
    seed_drafts,
)

SECRET = "secret-link-token-0123456789"
START_TIMEOUT = 60  # seconds for `python -m falassets.review` to import and listen


@pytest.fixture
def seeded(data_dir: Path) -> Path:
    seed_drafts(data_dir, "spring", {"p1": "a red bicycle", "p2": "a blue mug"})
    return data_dir


def review_command(data_dir: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "falassets.review", "--data-dir", str(data_dir), *options]


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_listening_beyond_loopback_needs_allow_remote(seeded: Path, host: str) -> None:
    """The reproduction of issue 10.5: `--host 0.0.0.0` used to serve with no Host check and
    hand the write token to anyone who loaded `/`. Now it refuses to start."""
    started = subprocess.run(
        review_command(seeded, "--host", host, "--port", "0"),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    assert started.returncode == 2, started.stdout
    assert "--allow-remote" in started.stderr
    assert "ssh -L" in started.stderr  # the safe alternative, spelled out
    assert "http://" not in started.stdout  # nothing was served


class RemoteReview:
    """``falassets review --host 0.0.0.0 --allow-remote`` in a child process."""

    def __init__(self, data_dir: Path) -> None:
        self.process = subprocess.Popen(
            review_command(data_dir, "--host", "0.0.0.0", "--port", "0", "--allow-remote"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.stdout = self._read_until(rb"open http://127\.0\.0\.1:(\d+)/\?token=([\w-]+)")
        found = re.search(rb"open http://127\.0\.0\.1:(\d+)/\?token=([\w-]+)", self.stdout)
        assert found is not None
        self.port, self.secret = int(found[1]), found[2].decode()

    def _read_until(self, pattern: bytes) -> bytes:
        """stdout up to a line matching ``pattern``; fails if the process exits first."""
        assert self.process.stdout is not None
        seen = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + START_TIMEOUT
            while not re.search(pattern, seen):
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise AssertionError(f"no start-up link after {START_TIMEOUT}s: {seen!r}")
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    err = self.process.stderr.read() if self.process.stderr else b""
                    raise AssertionError(f"the review server exited: {seen!r} {err!r}")
                seen += chunk
        return seen

    def stop(self) -> bytes:
        self.process.terminate()
        _, err = self.process.communicate(timeout=30)
        return err


@pytest.fixture
def remote(seeded: Path) -> Iterator[RemoteReview]:
    review = RemoteReview(seeded)
    try:
        yield review
    finally:
        review.stop()


def test_remote_mode_asks_everyone_for_the_secret_link(remote: RemoteReview) -> None:
    port = remote.port
    local = {"Host": f"127.0.0.1:{port}"}

    def get(path: str, headers: dict[str, str]) -> Reply:
        return http_request(port, "GET", path, headers=headers)

    # DNS rebinding: refused whatever else the request carries.
    rebound = get("/", {"Host": f"rebind.attacker.example:{port}"})
    assert rebound.status == 403
    # Someone who merely reached the port: no page, no token, no data.
    for path in ("/", "/api/campaigns", "/api/campaigns/spring/decisions.csv"):
        stranger = get(path, local)
        assert stranger.status == 401, path
        assert b"falassets-token" not in stranger.body and b"spring" not in stranger.body
        assert b"?token=" in stranger.body  # says which link to open
    assert get("/?token=guessed", local).status == 403

    # The printed link: traded for an HttpOnly cookie, the secret dropped from the address.
    link = get(f"/?token={remote.secret}", local)
    assert link.status == 303 and link.headers["location"] == "/"
    cookie = link.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    jar = cookie.split(";")[0]
    assert jar == f"{access_cookie_name(remote.secret)}={remote.secret}"

    page = get("/", {**local, "Cookie": jar})
    assert page.status == 200
    token = re.search(rb'name="falassets-token" content="([^"]+)"', page.body)
    assert token is not None and token[1] != remote.secret.encode()
    listed = get("/api/campaigns", {**local, "Cookie": jar})
    assert [c["name"] for c in listed.json()["campaigns"]] == ["spring"]

    # Reached by IP address from another machine: accepted with the cookie.
    lan = {"Host": f"192.0.2.7:{port}", "Cookie": jar}
    assert get("/api/campaigns", lan).status == 200
    pick = {"prompt_ids": ["p1"], "decision": "pick"}
    post_headers = {"Origin": f"http://192.0.2.7:{port}", TOKEN_HEADER: token[1].decode()}
    saved = http_request(
        port, "POST", "/api/campaigns/spring/decisions", pick, headers={**lan, **post_headers}
    )
    assert saved.status == 200, saved.body
    assert decisions.current_decisions("spring") == {("spring", "p1"): "pick"}

    warning = remote.stop().decode()
    assert "secret link" in warning and "still need the page's token" not in warning


def test_remote_mode_rules_in_process(seeded: Path) -> None:
    """The same rules without a child process: cookie or link on every route but /static/."""
    with ReviewServer(access=SECRET, budget_usd=None) as server:
        jar = f"{access_cookie_name(SECRET)}={SECRET}"
        assert server.request("GET", "/static/review.js").status == 200  # no data in it
        assert server.request("GET", "/api/campaigns/spring").status == 401
        wrong = {"Cookie": f"{access_cookie_name(SECRET)}=nope"}
        assert server.request("GET", "/api/campaigns/spring", headers=wrong).status == 401
        assert server.request("GET", "/api/campaigns/spring", headers={"Cookie": jar}).status == 200
        # Beside another local app's cookie that Python's http.cookies cannot parse.
        crowded = {"Cookie": f'_xsrf=2|ab"c|[x]; {jar}; other=1'}
        assert server.request("GET", "/api/campaigns/spring", headers=crowded).status == 200
        # The link works from any path and always lands on the page itself.
        landed = server.request("GET", f"//evil.example/?token={SECRET}")
        assert landed.status == 303 and landed.headers["location"] == "/"
        body = {"prompt_ids": ["p1"], "decision": "pick"}
        # The page token alone (say, leaked) does not open the door without the cookie.
        refused = server.request("POST", "/api/campaigns/spring/decisions", body)
        assert refused.status == 401
        saved = server.request(
            "POST", "/api/campaigns/spring/decisions", body, headers={"Cookie": jar}
        )
        assert saved.status == 200
    assert decisions.current_decisions("spring") == {("spring", "p1"): "pick"}


def test_loopback_pages_refuse_ip_addresses_and_foreign_names(seeded: Path) -> None:
    with ReviewServer(budget_usd=None) as server:
        for host in ("192.0.2.7", "rebind.attacker.example", "localhost.attacker.example"):
            reply = server.request("GET", "/", headers={"Host": f"{host}:{server.port}"})
            assert reply.status == 403, host
            assert server.token.encode() not in reply.body
        for host in ("localhost", "127.0.0.1", "[::1]"):
            reply = server.request("GET", "/", headers={"Host": f"{host}:{server.port}"})
            assert reply.status == 200, host


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:47620", "127.0.0.1"),
        ("[::1]:47620", "::1"),
        ("LocalHost", "localhost"),
        ("[::1]x", ""),
        ("evil.example:80:80", ""),
        ("evil.example:http", ""),
        ("", ""),
    ],
)
def test_host_header_parsing(header: str, name: str) -> None:
    assert host_only(header) == name


def test_allowed_host_names_are_added_not_substituted() -> None:
    rule = allowed_hosts("0.0.0.0", remote=True, extra=["Review.Example.Lan"])
    assert rule.allows("review.example.lan:47620")
    assert rule.allows("localhost:47620") and rule.allows("10.1.2.3:47620")
    assert not rule.allows("rebind.attacker.example:47620")
    assert not allowed_hosts("127.0.0.1").allows("10.1.2.3:47620")


def test_bad_allowed_host_is_refused(seeded: Path) -> None:
    started = subprocess.run(
        review_command(seeded, "--allowed-host", "http://x.example/", "--port", "0"),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    assert started.returncode == 2
    assert "--allowed-host" in started.stderr and "without scheme" in started.stderr
