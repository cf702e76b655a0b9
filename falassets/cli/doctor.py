"""`falassets doctor`: is this machine ready to render through fal? One line per check.

A new key, a proxy, a corporate CA bundle or a fal-compatible stand-in each fail in their own
way, and the first render of a 1,000-prompt campaign is the worst place to find out. Every
check here costs nothing (no request is billed) except ``--render``, which asks first.
Without ``FAL_KEY`` the same checks run against the built-in emulator.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import httpx

from falassets import settings
from falassets.engine.jobs import TEXT_TO_IMAGE, RenderJob
from falassets.engine.queue_client import endpoint_app
from falassets.engine.retry import classify_exception
from falassets.engine.session import PLACEHOLDER_KEY, api_host, open_engine, queue_host
from falassets.lineage.passes import DRAFT
from falassets.pipeline.fal_environment import prepare_fal

Verdict = Literal["ok", "warn", "fail"]
#: One low-quality square draft: fal's cheapest GPT Image 2 render ($0.01).
CHECK_INPUT: dict[str, Any] = {
    "prompt": "falassets doctor: a single red apple on a white table, studio light",
    "image_size": "square_hd",
    "quality": DRAFT.quality,
    "num_images": 1,
    "output_format": "png",
}
CHECK_PRICE_USD = 0.01


@dataclass(frozen=True)
class Check:
    """The answer to one question about the setup; ``detail`` says the fix when it fails."""

    name: str
    verdict: Verdict
    detail: str

    def line(self) -> str:
        return f"{self.verdict.upper():4}  {self.name:<16} {self.detail}"


def _client(key: str | None) -> httpx.AsyncClient:
    """fal's auth header, the environment's trust (``SSL_CERT_FILE``) and proxies, as the
    engine uses them, so a check passes exactly when a render would get through."""
    return httpx.AsyncClient(
        headers={"Authorization": f"Key {key or PLACEHOLDER_KEY}", "User-Agent": "falassets/0.1"},
        timeout=httpx.Timeout(20.0, connect=10.0),
        trust_env=True,
    )


def _transport_problem(name: str, host: str, error: Exception) -> Check:
    failure = classify_exception(error)
    if failure.error_type == "tls_untrusted" or isinstance(error, ssl.SSLError):
        return Check(
            name,
            "fail",
            f"{host}'s TLS certificate is not trusted here. Fix: point SSL_CERT_FILE at a CA "
            "bundle that trusts it, or unset SSL_CERT_FILE.",
        )
    return Check(
        name,
        "fail",
        f"cannot reach {host} ({type(error).__name__}). Fix: check the network, proxy "
        "variables and FAL_QUEUE_RUN_HOST.",
    )


async def check_queue_host(http: httpx.AsyncClient, host: str) -> Check:
    """TLS and reachability of the host every submit goes to."""
    try:
        await http.get(f"https://{host}/")
    except httpx.HTTPError as error:
        return _transport_problem("queue host", host, error)
    return Check("queue host", "ok", f"https://{host} answers over trusted TLS")


async def check_key(http: httpx.AsyncClient, host: str, endpoint: str) -> Check:
    """Ask the status of a request that cannot exist: authenticated, billed nothing."""
    url = f"https://{host}/{endpoint_app(endpoint)}/requests/{uuid.uuid4()}/status"
    try:
        response = await http.get(url)
    except httpx.HTTPError as error:
        return _transport_problem("key", host, error)
    if response.status_code in (401, 403):
        return Check(
            "key",
            "fail",
            f"fal refused the key (HTTP {response.status_code}). Fix: export FAL_KEY with a "
            "key from fal's dashboard (Settings > API keys), or unset it for the emulator.",
        )
    if response.status_code >= 500:
        return Check("key", "warn", f"fal answered HTTP {response.status_code}; try again")
    return Check("key", "ok", f"accepted (an unknown request answered {response.status_code})")


async def check_history(http: httpx.AsyncClient, host: str, endpoint: str) -> Check:
    """Whether fal's request history answers for this key: what makes a lost submit answer
    recoverable without paying twice."""
    url = f"https://{host}/v1/models/requests/by-endpoint"
    try:
        response = await http.get(url, params={"endpoint_id": endpoint, "limit": 1})
    except httpx.HTTPError as error:
        return _transport_problem("request history", host, error)
    consequence = (
        "a submit whose answer is lost cannot be looked up; falassets then waits and asks "
        "you (`falassets reconcile`) instead of submitting again"
    )
    if response.status_code == 200:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("items"), list):
            return Check("request history", "ok", f"answers for this key ({url})")
        return Check("request history", "warn", f"answered 200 without an item list; {consequence}")
    if response.status_code in (401, 403):
        return Check(
            "request history",
            "warn",
            f"forbidden for this key (HTTP {response.status_code}); {consequence}. Fix: use a "
            "key with API scope, or accept the slower recovery.",
        )
    return Check(
        "request history", "warn", f"not available (HTTP {response.status_code}); {consequence}"
    )


def check_observed_limit(days: int = 7) -> Check:
    """The most requests of ours fal held at once, and the 429s it answered, from lineage.

    fal publishes no API for an account's running limit; what it took is the best evidence.
    """
    from falassets.lineage import catalog

    simulated = settings.is_simulated()
    try:
        _, rows = catalog.query(
            "select submitted_at, completed_at, http_status from requests "
            "where simulated = ? and submitted_at is not null "
            f"and submitted_at > now() - interval {int(days)} day",
            [simulated],
        )
    except Exception as error:  # a broken catalog is a finding, not a crash
        return Check("observed limit", "warn", f"lineage unreadable: {error}")
    if not rows:
        return Check("observed limit", "ok", "no requests in lineage yet (nothing to go on)")
    edges: list[tuple[datetime, int]] = []
    rejected = 0
    for submitted, completed, status in rows:
        edges.append((_instant(submitted), 1))
        edges.append((_instant(completed) if completed else datetime.max, -1))
        rejected += status == 429
    level = peak = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        level += step
        peak = max(peak, level)
    detail = f"up to {peak} of ours in flight at once in the last {days} days"
    if rejected:
        detail += f"; fal answered 429 {rejected} times (falassets backs off to what fal takes)"
    return Check("observed limit", "ok", detail)


def _instant(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).replace(tzinfo=None)


async def check_render() -> Check:
    """One draft end to end: submit, wait, download, verify, and the row in lineage."""
    from falassets.lineage import catalog

    job = RenderJob(
        partition_key="doctor-check",
        campaign="doctor",
        prompt_id="check",
        pass_name="draft",
        input=dict(CHECK_INPUT),
        force=True,  # a reused answer would prove nothing about today's setup
    )
    run_id = f"doctor-{uuid.uuid4().hex[:12]}"
    async with open_engine(run_id=run_id, fal_key=settings.fal_key(), concurrency=1) as engine:
        outcomes = [outcome async for outcome in engine.render([job])]
    outcome = outcomes[0]
    if not outcome.ok:
        return Check(
            "render",
            "fail",
            f"request {outcome.request_id or '-'} {outcome.status}: "
            f"{outcome.error_type} {outcome.error_message or ''}".strip(),
        )
    _, rows = catalog.query(
        "select status from requests where request_id = ?", [outcome.request_id]
    )
    if not rows or rows[0][0] != "completed":
        return Check("render", "fail", f"request {outcome.request_id} is missing from lineage")
    return Check(
        "render",
        "ok",
        f"request {outcome.request_id}: {outcome.width}x{outcome.height} image verified at "
        f"{outcome.image_location} in {outcome.latency_s or 0:.1f}s, ${outcome.cost_usd:.2f}, "
        "recorded in lineage (campaign 'doctor')",
    )


async def run_checks(*, render: bool) -> list[Check]:
    key = settings.fal_key()
    host = queue_host()
    prepare_fal(key)
    mode = (
        Check("mode", "ok", f"fal.ai with FAL_KEY (queue host {host})")
        if key
        else Check("mode", "ok", f"no FAL_KEY: the emulator at {host}, everything simulated")
    )
    checks = [mode]
    async with _client(key) as http:
        checks.append(await check_queue_host(http, host))
        if checks[-1].verdict != "fail":
            checks.append(await check_key(http, host, TEXT_TO_IMAGE))
            checks.append(await check_history(http, api_host(host), TEXT_TO_IMAGE))
    checks.append(check_observed_limit())
    if render and all(check.verdict != "fail" for check in checks):
        checks.append(await check_render())
    return checks


def _confirm_render(assume_yes: bool) -> bool:
    if assume_yes or settings.is_simulated():
        return True
    if not sys.stdin.isatty():
        print(
            "doctor --render bills one draft (about $0.01): pass --yes to allow it here.",
            file=sys.stderr,
        )
        return False
    answer = input(
        f"Render one low-quality 1024x1024 draft on fal (about ${CHECK_PRICE_USD}) [y/N] "
    )
    return answer.strip().lower() in ("y", "yes")


def exit_code(checks: list[Check]) -> int:
    """0 all fine; 2 the setup is wrong (key, TLS, host: nothing would render); 1 otherwise."""
    if any(check.verdict == "fail" and check.name != "render" for check in checks):
        return 2
    if any(check.verdict != "ok" for check in checks):
        return 1
    return 0


def command_doctor(args: argparse.Namespace) -> int:
    render = bool(args.render) and _confirm_render(args.yes)
    checks = asyncio.run(run_checks(render=render))
    for check in checks:
        print(check.line())
    if args.render and not render:
        print("SKIP  render           not confirmed; nothing was billed")
        return max(exit_code(checks), 1)
    return exit_code(checks)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    doctor = subparsers.add_parser(
        "doctor",
        help="check the key, the queue host's TLS, fal's history and (--render) one draft",
        description=(
            "Check that this machine can render through fal: the queue host's TLS, the key "
            "(a free authenticated call), whether fal's request history answers for this key, "
            "the most requests fal took at once (from lineage), and with --render one "
            "low-quality 1024x1024 draft end to end through lineage (about $0.01 on fal; it "
            "asks first). Without FAL_KEY the same checks run on the built-in emulator. "
            "Exit 0 all ok, 1 a warning or the render failed, 2 the setup is wrong."
        ),
    )
    doctor.add_argument("--render", action="store_true", help="also render one draft (asks)")
    doctor.add_argument("--yes", action="store_true", help="do not ask before --render")
    doctor.set_defaults(handler=command_doctor)
