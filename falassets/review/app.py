"""The review page: a Starlette app over the campaign boards, and ``falassets review``.

Routes (all JSON under ``/api``; every request passes :class:`GuardMiddleware` first: Host
check always, the secret link's cookie in remote mode, Origin and page token on POSTs):

``GET /``                                   the page (page token in a meta tag)
``GET /?token=SECRET``                      remote mode: the printed link, traded for a cookie
``GET /api/campaigns``                      campaigns with their counts
``GET /api/campaigns/{c}[?version=V]``      the board; ``{"unchanged": true}`` when still V
``POST /api/campaigns/{c}/decisions``       ``{"prompt_ids": [...], "decision": "pick"[,
                                            "variant": N]}`` (a pick is of one draft variant)
``POST /api/campaigns/{c}/render-winners``  ``{"expected": [ids]}`` -> final pass, run id
``POST /api/campaigns/{c}/retry-failed``    ``{"expected": [ids]}`` -> draft pass, run id
``GET /api/campaigns/{c}/contact-sheet.png?filter=all|picked|...``
``GET /api/campaigns/{c}/decisions.csv``
``GET /api/requests/{id}``                  one request as lineage knows it (the panel's Show)
``GET /files/{path}``                       renders (``renders/<key>``, through the render
                                            store) and images under the data directory only

"Expected" lists make the confirm step honest: the server starts exactly what the reviewer
saw and confirmed, and answers 409 with the fresh numbers when the winners changed meanwhile
(another reviewer, `falassets pick`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import shlex
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from falassets import settings
from falassets.lineage import decisions
from falassets.lineage.request_record import find_request, unknown_request_message
from falassets.pipeline import fal_environment, launch
from falassets.pipeline.assets.final_jobs import Mode
from falassets.review import board as boards
from falassets.review.body import read_json_object
from falassets.review.exports import contact_sheet_png, decisions_csv
from falassets.review.files import Refused, resolve_image
from falassets.review.security import (
    ACCESS_PARAM,
    WILDCARD_ADDRESSES,
    GuardMiddleware,
    HostRule,
    allowed_hosts,
    host_name_error,
    is_loopback,
    new_token,
)
from falassets.storage.renders import RendersUriError, check_renders_uri

log = logging.getLogger("falassets.review")

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_PORT = 47620
DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"
FILTERS = ("all", "undecided", "picked", "rejected", "failed")

Submit = Callable[..., str]


@dataclass
class ReviewState:
    """What one server process knows beyond the files: its token, budget and launches."""

    root: Path
    token: str
    budget_usd: float | None
    dagster_url: str
    submit: Submit
    cache: boards.BoardCache
    final_mode: Mode = "rerun"  # how "Render winners" renders them (FALASSETS_AUTO_FINAL_MODE)
    launches: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def redact(text: str) -> str:
    """``text`` with the fal key (if any) blanked out: nothing the page shows may carry it."""
    key = settings.fal_key()
    return text.replace(key, "[redacted]") if key else text


class ApiResponse(JSONResponse):
    """JSON with the fal key redacted from every byte, whatever a message quoted."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"), default=str)
        return redact(text).encode("utf-8")


def api_error(status: int, message: str, **extra: Any) -> ApiResponse:
    return ApiResponse({"error": message, **extra}, status_code=status)


# --- handlers ---------------------------------------------------------------------------------


def _state(request: Request) -> ReviewState:
    return request.app.state.review


def _campaign(request: Request) -> str:
    name = request.path_params["campaign"]
    if not boards.is_campaign_name(name):
        raise HTTPException(404, f"'{name}' is not a campaign name")
    return name


def _board(request: Request) -> boards.Board:
    campaign = _campaign(request)
    board = _state(request).cache.get(campaign)
    if not board.items:
        raise HTTPException(
            404,
            f"campaign '{campaign}' has no prompts table and no drafts. Fix: run "
            f"`falassets run data/campaigns/{campaign}.csv` (or its .jsonl/.parquet) first",
        )
    return board


def index(request: Request) -> Response:
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    html = html.replace("{{TOKEN}}", _state(request).token)
    return HTMLResponse(html, headers={"cache-control": "no-store"})


def list_campaigns(request: Request) -> ApiResponse:
    state = _state(request)
    result = []
    for name in boards.campaign_names():
        try:
            board = state.cache.get(name)
        except Exception as exc:  # one broken campaign must not empty the home page
            log.error(redact(f"campaign {name}: skipped on the home page: {exc!r}"))
            continue
        if board.items:
            result.append({"name": name, "counts": boards.counts(board.items)})
    return ApiResponse({"campaigns": result, "budget_usd": state.budget_usd})


def get_board(request: Request) -> ApiResponse:
    state = _state(request)
    board = _board(request)
    if request.query_params.get("version") == board.version:
        return ApiResponse({"unchanged": True, "version": board.version})
    with state.lock:
        launches = [x for x in state.launches if x["campaign"] == board.campaign][-5:]
    return ApiResponse(
        {
            "campaign": board.campaign,
            "version": board.version,
            "source": board.source,
            "budget_usd": state.budget_usd,
            "final_mode": state.final_mode,
            "simulated": settings.is_simulated(),
            "items": board.items,
            "counts": boards.counts(board.items),
            "launches": launches,
        }
    )


async def post_decisions(request: Request) -> ApiResponse:
    data = await read_json_object(request)
    return await run_in_threadpool(_record, request, data)


def _record(request: Request, data: dict[str, Any]) -> ApiResponse:
    campaign = _campaign(request)
    known = _state(request).cache.prompt_variants(campaign)  # no board rebuild per key press
    if not known:
        raise HTTPException(404, f"campaign '{campaign}' has no prompts")
    ids, decision, variant = data.get("prompt_ids"), data.get("decision"), data.get("variant")
    if variant is not None and decision != "pick":
        return api_error(400, "a variant goes with a pick. Fix: send it with decision 'pick'")
    listed = ids if isinstance(ids, list) and variant is not None else []
    chosen = {pid: variant for pid in listed if isinstance(pid, str)}  # record_decisions checks
    try:
        decisions.record_decisions(
            campaign,
            ids,
            decision,
            source="review",
            known_prompt_ids=known,
            variants=chosen,
            known_variants=known,
        )
    except decisions.DecisionError as exc:
        return api_error(400, str(exc))
    saved = {"saved": list(dict.fromkeys(ids)), "decision": decision}
    if decision == "pick":
        saved["variant"] = 1 if variant is None else variant
    return ApiResponse(saved)


async def post_render_winners(request: Request) -> ApiResponse:
    data = await read_json_object(request)
    return await run_in_threadpool(_render_winners, request, data)


def _render_winners(request: Request, data: dict[str, Any]) -> ApiResponse:
    state = _state(request)
    board = _board(request)
    winners = board.winners(decisions.winners(board.campaign))
    tally = boards.counts(winners)
    now = {
        "winners": len(winners),
        "projected_final_usd": tally["projected_final_usd"],
        "remaining_final_usd": tally["remaining_final_usd"],
    }
    if not winners:
        return api_error(400, "no winners: pick some drafts (P) first", **now)
    if _expected(data) != {item["id"] for item in winners}:
        return api_error(
            409, "the winners changed since you confirmed; check the new numbers", **now
        )
    if state.budget_usd is not None and tally["remaining_final_usd"] > state.budget_usd + 1e-9:
        return api_error(
            400,
            f"the final pass would cost ${tally['remaining_final_usd']:.2f}, over the budget of "
            f"${state.budget_usd:.2f}. Fix: reject some winners, or restart the review page "
            "with a larger --budget-usd",
            **now,
        )
    keys = [item["key"] for item in winners]
    return _launch(state, board.campaign, "final", keys, now)


async def post_retry_failed(request: Request) -> ApiResponse:
    data = await read_json_object(request)
    return await run_in_threadpool(_retry_failed, request, data)


def _retry_failed(request: Request, data: dict[str, Any]) -> ApiResponse:
    state = _state(request)
    board = _board(request)
    failed = board.failed()
    now = {"failed": len(failed)}
    if not failed:
        return api_error(400, "no failed drafts to retry", **now)
    if _expected(data) != {item["id"] for item in failed}:
        return api_error(409, "the failed drafts changed; check the new list", **now)
    return _launch(state, board.campaign, "draft", [item["key"] for item in failed], now)


def _expected(data: dict[str, Any]) -> set[str]:
    expected = data.get("expected")
    if not isinstance(expected, list) or not all(isinstance(x, str) for x in expected):
        raise HTTPException(400, "'expected' must be the list of prompt ids you confirmed")
    return set(expected)


def _launch(
    state: ReviewState, campaign: str, pass_name: str, keys: list[str], now: dict[str, Any]
) -> ApiResponse:
    kwargs: dict[str, Any] = {"partition_keys": keys}
    if pass_name == "final":
        kwargs["mode"] = state.final_mode  # as the board priced and judged the winners
    if (
        state.budget_usd is not None
        and pass_name == "final"
        and _accepts(state.submit, "budget_usd")
    ):
        kwargs["budget_usd"] = state.budget_usd
    try:
        run_id = state.submit(campaign, pass_name, **kwargs)
    except launch_errors() as exc:
        return api_error(400, f"the {pass_name} pass could not start: {exc}", **now)
    except Exception as exc:
        log.error(redact("".join(traceback.format_exception(exc))))
        return api_error(
            500,
            f"the {pass_name} pass could not start ({type(exc).__name__}); the review "
            "server's console has the details",
            **now,
        )
    entry = {
        "campaign": campaign,
        "pass": pass_name,
        "run_id": run_id,
        "prompts": len(keys),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dagster_url": launch.launch_runs_url(state.dagster_url, run_id),
        "log": _launch_log(run_id),
        **now,
    }
    with state.lock:
        state.launches.append(entry)
    return ApiResponse(entry)


def launch_errors() -> tuple[type[Exception], ...]:
    error = getattr(launch, "LaunchError", None)
    return (error,) if isinstance(error, type) else ()


def _accepts(function: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _launch_log(run_id: str) -> str | None:
    """Where the pass's process writes its output, relative to the data dir when inside it."""
    path_of = getattr(launch, "launch_log_path", None)
    if not callable(path_of):
        return None
    path = Path(path_of(run_id))
    root = settings.data_dir()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def contact_sheet(request: Request) -> Response:
    board = _board(request)
    wanted = request.query_params.get("filter", "all")
    if wanted not in FILTERS:
        raise HTTPException(400, f"filter must be one of {', '.join(FILTERS)}")
    items = [item for item in board.items if _matches(item, wanted)]
    title = f"{board.campaign}: {wanted} ({len(items)} prompts)"
    png = contact_sheet_png(_state(request).root, title, items)
    name = f"{board.campaign}-{wanted}-contact-sheet.png"
    return Response(png, media_type="image/png", headers=_download(name))


def export_csv(request: Request) -> Response:
    board = _board(request)
    text = redact(decisions_csv(board.campaign, board.items))
    name = f"{board.campaign}-decisions.csv"
    return Response(text, media_type="text/csv; charset=utf-8", headers=_download(name))


def _matches(item: dict[str, Any], wanted: str) -> bool:
    if wanted == "all":
        return True
    if wanted == "failed":
        return item["draft"]["status"] in boards.FAILED_STATUSES
    decision = {"picked": "pick", "rejected": "reject", "undecided": "undecided"}[wanted]
    return item["decision"] == decision


def _download(name: str) -> dict[str, str]:
    return {"content-disposition": f'attachment; filename="{name}"', "cache-control": "no-store"}


def get_request(request: Request) -> ApiResponse:
    """One fal request as lineage knows it (`falassets show` without fal's side), for the
    detail panel's Show; its Replay hands over `falassets replay ID`, which prices the request
    and asks before fal bills it."""
    request_id = request.path_params["request_id"]
    record = find_request(request_id)
    if record is None:
        return api_error(404, unknown_request_message(request_id[:200]))
    brief = ("request_id", "attempt", "status", "error_type", "run_id")
    quoted = shlex.quote(request_id)
    return ApiResponse(
        {
            "request": record.row,
            "attempts": [{name: row.get(name) for name in brief} for row in record.attempts],
            "replays": [{name: row.get(name) for name in brief} for row in record.replays],
            "decision": record.decision,
            "commands": {name: f"falassets {name} {quoted}" for name in ("show", "replay")},
        }
    )


def serve_file(request: Request) -> Response:
    try:
        image = resolve_image(_state(request).root, request.path_params["path"])
    except Refused as refused:
        return api_error(refused.status, str(refused))
    headers = {"cache-control": "private, max-age=300"}
    if image.path is not None:  # a plain folder: the file as is
        return FileResponse(image.path, media_type=image.content_type, headers=headers)
    return StreamingResponse(image.chunks(), media_type=image.content_type, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = api_error(exc.status_code, redact(str(exc.detail)))
    response.headers.update(exc.headers or {})
    return response


async def server_error(request: Request, exc: Exception) -> Response:
    log.error(redact("".join(traceback.format_exception(exc))))
    return api_error(500, f"internal error ({type(exc).__name__}); see the review server's console")


# --- app and command --------------------------------------------------------------------------


def create_app(
    *,
    token: str | None = None,
    budget_usd: float | None = None,
    hosts: HostRule | None = None,
    access: str | None = None,
    dagster_url: str = DEFAULT_DAGSTER_URL,
    submit: Submit | None = None,
    final_mode: Mode | None = None,
) -> Starlette:
    """The review app over ``settings.data_dir()``.

    ``hosts``: the Host header values to answer (default: loopback names only; ``main``
    derives them from the bound address). ``access``: the secret every request must show
    (remote mode; None on loopback). ``submit``: how passes start, ``launch.submit_pass``
    (the pipeline's launch function, on a background thread of this process; it returns the
    launch id that tags the pass's runs) unless a caller (a test of the confirm logic) passes
    its own. ``final_mode``: how "Render winners" renders them, by default as the winners
    sensor does (``FALASSETS_AUTO_FINAL_MODE``; raises ValueError naming the fix).
    """
    root = settings.data_dir().resolve()
    final_mode = final_mode or cast(Mode, settings.auto_final_mode())
    state = ReviewState(
        root=root,
        token=token or new_token(),
        budget_usd=budget_usd,
        dagster_url=dagster_url,
        submit=submit or launch.submit_pass,
        cache=boards.BoardCache(root, final_mode),
        final_mode=final_mode,
    )
    routes = [
        Route("/", index),
        Route("/api/campaigns", list_campaigns),
        Route("/api/campaigns/{campaign}", get_board),
        Route("/api/campaigns/{campaign}/decisions", post_decisions, methods=["POST"]),
        Route("/api/campaigns/{campaign}/render-winners", post_render_winners, methods=["POST"]),
        Route("/api/campaigns/{campaign}/retry-failed", post_retry_failed, methods=["POST"]),
        Route("/api/campaigns/{campaign}/contact-sheet.png", contact_sheet),
        Route("/api/campaigns/{campaign}/decisions.csv", export_csv),
        Route("/api/requests/{request_id}", get_request),
        Route("/files/{path:path}", serve_file),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.review = state
    app.add_middleware(
        GuardMiddleware, token=state.token, hosts=hosts or allowed_hosts(), access=access
    )
    return app


def budget_from(value: float | None) -> float | None:
    """``--budget-usd``, else FALASSETS_BUDGET_USD, else None (shown as "not set")."""
    if value is not None:
        return value
    raw = os.environ.get("FALASSETS_BUDGET_USD", "").strip()
    if not raw:
        return None
    try:
        budget = float(raw)
    except ValueError:
        raise ValueError(
            f"FALASSETS_BUDGET_USD={raw!r} is not a number. Fix: set it to dollars, e.g. 25"
        ) from None
    if budget < 0:
        raise ValueError("FALASSETS_BUDGET_USD is negative. Fix: set it to 0 or more")
    return budget


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="falassets review", description="Pick winners from the draft renders in a browser."
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only); any other needs "
        "--allow-remote",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="let other machines connect (with --host 0.0.0.0 or an address of this machine): "
        "every visitor then needs the secret link printed at start",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another name people reach this server by (DNS, /etc/hosts, a proxy); repeatable. "
        "Loopback names, and with --allow-remote IP addresses, are always accepted",
    )
    parser.add_argument("--data-dir", type=Path, help="FALASSETS_DATA_DIR to review")
    parser.add_argument("--budget-usd", type=float, help="shown beside the projected final cost")
    parser.add_argument(
        "--dagster-url",
        default=os.environ.get("FALASSETS_DAGSTER_URL", DEFAULT_DAGSTER_URL),
        help="where `falassets dev` serves Dagster (for run links)",
    )
    args = parser.parse_args(argv)
    if args.budget_usd is not None and args.budget_usd < 0:
        parser.error("--budget-usd must be 0 or more")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    for name in args.allowed_host:
        if problem := host_name_error(name):
            parser.error(problem)
    args.host = args.host.strip().strip("[]")
    return args


def remote_refusal(host: str, port: int) -> str:
    """Why a non-loopback --host without --allow-remote is refused, and the two fixes."""
    tunnel_port = port or DEFAULT_PORT
    return (
        f"falassets review: --host {host} would let other machines reach the review page, "
        "which records decisions and starts paid renders. Fix: keep the default 127.0.0.1 "
        f"(from another machine: ssh -L {tunnel_port}:127.0.0.1:{tunnel_port} THIS_MACHINE, "
        f"then open http://127.0.0.1:{tunnel_port}/), or add --allow-remote so that every "
        "visitor needs the secret link printed at start"
    )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def start_messages(
    host: str, port: int, access: str | None, names: list[str]
) -> tuple[list[str], list[str]]:
    """(stdout lines, stderr lines) telling the person where the page is and who may use it."""
    data = f"  (data: {settings.data_dir()})"
    if access is None:
        return [f"falassets review: http://{_url_host(host)}:{port}/{data}"], []
    link = f":{port}/?{ACCESS_PARAM}={access}"
    wildcard = host in WILDCARD_ADDRESSES
    first = ("::1" if host == "::" else "127.0.0.1") if wildcard else host
    out = [f"falassets review: open http://{_url_host(first)}{link}{data}"]
    if wildcard:
        out.append(f"falassets review: from another machine: http://ADDRESS{link}")
    out += [f"falassets review: or http://{_url_host(name)}{link}" for name in names]
    if wildcard:
        reach = "every address of this machine (ADDRESS: any of its IP addresses)"
    elif is_loopback(host):
        reach = f"{host}, this machine only (--host 0.0.0.0 lets other machines connect)"
    else:
        reach = host
    err = [
        f"falassets review: WARNING: --allow-remote: listening on {reach}. Only the secret "
        "link below opens the page; whoever has it can record decisions and start paid "
        "renders, so give it only to reviewers. It is plain HTTP: on a network you do not "
        "trust, use an SSH tunnel or a TLS proxy instead. Host names other than IP addresses "
        "and localhost need --allowed-host NAME."
    ]
    return out, err


def main(argv: list[str]) -> int:
    """``falassets review``: serve the page until Ctrl-C. Exit 2 on bad options."""
    fal_environment.configure()  # launches from the page render on the same fal
    args = parse_args(argv)
    if args.data_dir is not None:
        if not args.data_dir.is_dir():
            print(
                f"falassets review: no data directory at {args.data_dir}. Fix: pass the folder "
                "FALASSETS_DATA_DIR points at (it holds lineage/ and renders/)",
                file=sys.stderr,
            )
            return 2
        os.environ["FALASSETS_DATA_DIR"] = str(args.data_dir.resolve())
    try:
        budget = budget_from(args.budget_usd)
    except ValueError as exc:
        print(f"falassets review: {exc}", file=sys.stderr)
        return 2
    try:
        check_renders_uri()  # the page serves renders through the store: fail now, not later
    except RendersUriError as exc:
        print(f"falassets review: error: {exc}", file=sys.stderr)
        return 2
    if not args.allow_remote and not is_loopback(args.host):
        print(remote_refusal(args.host, args.port), file=sys.stderr)
        return 2
    sock = _listen(args.host, args.port)
    if sock is None:
        return 2
    port = sock.getsockname()[1]
    access = new_token() if args.allow_remote else None
    hosts = allowed_hosts(args.host, remote=args.allow_remote, extra=args.allowed_host)
    try:
        app = create_app(
            budget_usd=budget, hosts=hosts, access=access, dagster_url=args.dagster_url
        )
    except ValueError as exc:  # FALASSETS_AUTO_FINAL_MODE: the message names the fix
        sock.close()
        print(f"falassets review: {exc}", file=sys.stderr)
        return 2
    out, err = start_messages(args.host, port, access, args.allowed_host)
    for line in err:
        print(line, file=sys.stderr)
    for line in out:
        print(line, flush=True)
    return serve(app, sock)


def _listen(host: str, port: int) -> socket.socket | None:
    """A socket bound to ``host:port``, or None after saying why (and the fix)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        print(
            f"falassets review: cannot listen on {host}:{port} ({exc.strerror}). "
            "Fix: pick another --port (0 = any free port)",
            file=sys.stderr,
        )
        return None
    sock.listen(128)  # connections queue from here on: the printed address works at once
    return sock


def serve(app: Starlette, sock: socket.socket) -> int:
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
