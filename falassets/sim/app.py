"""The emulator's HTTP surface: fal's queue wire format, request history, output files, admin.

Shapes and status codes follow ``fal-queue-api.md`` so the unmodified fal_client works.
Handlers do constant work per call (no scans, no rendering except for file downloads, which
run in a worker thread) so one core serves hundreds of polls a second.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from falassets.fal.model import DEFAULT_QUALITY, resolve_size, validation_errors
from falassets.sim.config import SimConfig
from falassets.sim.faults import ingress_503_now
from falassets.sim.images import CONTENT_TYPES, ImageSpec, encode
from falassets.sim.ledger import JsonlAppender, ledger_view, load_state, request_entry
from falassets.sim.scheduler import (
    ENDPOINTS,
    LimitReached,
    QueueFull,
    Scheduler,
    SimRequest,
    iso,
)

log = logging.getLogger("falassets.sim")

NGINX_503 = (
    "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
    "<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n"
    "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
#: A silent status stream sends an SSE comment this often, so proxies keep it open.
STREAM_KEEPALIVE_S = 15.0
HISTORY_MAX_LIMIT = 100
ERROR_STATUS = {
    "content_policy_violation": 422,
    "runner_server_error": 500,
    "client_cancelled": 499,
    "request_timeout": 504,
}


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(data), status, headers, media_type="application/json")


class LostResponse(Response):
    """Headers promise a body that never fully arrives: the connection drops midway, so the
    client cannot know its submit was accepted (httpx raises RemoteProtocolError)."""

    def __init__(self, body: bytes, request_id: str) -> None:
        super().__init__(body, 200, {"x-fal-request-id": request_id}, "application/json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[:8], "more_body": True})
        # Returning now makes uvicorn close the connection with the body incomplete.


class _DropIncompleteNotice(logging.Filter):
    """uvicorn logs an error for the lost-submit fault, which is on purpose: drop it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


class SimApp:
    """Routes plus the state they share. ``app`` is the ASGI application."""

    def __init__(
        self,
        config: SimConfig,
        *,
        ledger_file: Path | None = None,
        state_file: Path | None = None,
    ) -> None:
        self.startup_config = config
        self.ledger = JsonlAppender(ledger_file) if ledger_file else None
        self.state_file = state_file
        self.state = JsonlAppender(state_file) if state_file else None
        self._ledgered: set[str] = set()
        self.scheduler = Scheduler(config, on_change=self._persist)
        self.started_at = time.time()
        logging.getLogger("uvicorn.error").addFilter(_DropIncompleteNotice())
        self.app = Starlette(
            lifespan=self._lifespan,
            routes=[
                Route("/_sim/health", self.health, methods=["GET"]),
                Route("/_sim/ledger", self.ledger_json, methods=["GET"]),
                Route("/_sim/config", self.config_json, methods=["GET", "POST"]),
                Route("/_sim/reset", self.reset, methods=["POST"]),
                Route("/v1/models/requests/by-endpoint", self.history, methods=["GET"]),
                Route("/files/{request_id}/{name}", self.file, methods=["GET"]),
                Route(
                    "/{owner}/{alias}/requests/{request_id}/status/stream",
                    self.status_stream,
                    methods=["GET"],
                ),
                Route(
                    "/{owner}/{alias}/requests/{request_id}/status", self.status, methods=["GET"]
                ),
                Route(
                    "/{owner}/{alias}/requests/{request_id}/cancel", self.cancel, methods=["PUT"]
                ),
                Route("/{owner}/{alias}/requests/{request_id}", self.result, methods=["GET"]),
                Route("/{endpoint:path}", self.submit, methods=["POST"]),
            ],
        )

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Reload requests from the state file once the event loop runs (timers need it)."""
        if self.state_file is not None:
            snapshots = load_state(self.state_file)
            self.scheduler.restore(snapshots)
            if snapshots:
                log.info("restored %d requests from the state file", len(snapshots))
        yield
        for handle in (self.state, self.ledger):
            if handle is not None:
                handle.close()

    # -- bookkeeping -----------------------------------------------------------------------------

    def _persist(self, request: SimRequest) -> None:
        if self.state is not None:
            self.state.write(request.snapshot())
        if self.ledger is None:
            return
        if request.status == "COMPLETED":
            self.ledger.write({"event": "completed", **request_entry(request)})
        elif request.request_id not in self._ledgered:
            self._ledgered.add(request.request_id)
            self.ledger.write({"event": "accepted", **request_entry(request)})

    def _authorised(self, request: Request) -> Response | None:
        """None when the key is acceptable; else fal's 401. The key is never echoed."""
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "key" or not key.strip():
            return json_response({"detail": "Missing or malformed Authorization header"}, 401)
        valid = self.scheduler.config.valid_key
        if valid is not None and key.strip() != valid:
            return json_response({"detail": "No user found for Key ID and Secret"}, 401)
        return None

    def _lookup(self, request: Request) -> SimRequest | None:
        found = self.scheduler.requests.get(request.path_params["request_id"])
        app = f"{request.path_params['owner']}/{request.path_params['alias']}"
        return found if found is not None and found.app == app else None

    def _ingress_fault(self, sim: SimRequest) -> Response | None:
        """nginx 503 (no x-fal-request-id) on this poll, if the fault plan says so."""
        index = sim.polls
        sim.polls += 1
        if ingress_503_now(self.scheduler.config, sim.plan, sim.draw_key, index):
            self.scheduler.ingress_503 += 1
            return Response(NGINX_503, 503, media_type="text/html")
        return None

    @staticmethod
    def _base(request: Request) -> str:
        return f"https://{request.headers.get('host') or request.url.netloc}"

    def _urls(self, request: Request, sim: SimRequest) -> dict[str, str]:
        base = f"{self._base(request)}/{sim.app}/requests/{sim.request_id}"
        return {
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
        }

    def _status_body(self, request: Request, sim: SimRequest, logs: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": sim.status,
            "request_id": sim.request_id,
            **self._urls(request, sim),
            "logs": None,
            "metrics": {},
        }
        if sim.status == "IN_QUEUE":
            body["queue_position"] = self.scheduler.queue_position(sim)
            return body
        if logs:
            body["logs"] = self._logs(sim)
        if sim.status == "COMPLETED":
            if sim.started_at is not None and sim.completed_at is not None:
                body["metrics"] = {"inference_time": round(sim.completed_at - sim.started_at, 4)}
            if sim.outcome != "ok":
                body["error"] = sim.error
                body["error_type"] = sim.outcome
        return body

    @staticmethod
    def _logs(sim: SimRequest) -> list[dict[str, Any]]:
        entries = []
        if sim.started_at is not None:
            entries.append(("Generating image (simulated)", sim.started_at))
        if sim.completed_at is not None:
            entries.append((f"Finished: {sim.outcome}", sim.completed_at))
        return [
            {"message": message, "level": "INFO", "source": "stdout", "timestamp": iso(ts)}
            for message, ts in entries
        ]

    # -- queue API -------------------------------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        self.scheduler.http["submit"] += 1
        if (denied := self._authorised(request)) is not None:
            return denied
        endpoint = request.path_params["endpoint"].strip("/")
        if endpoint not in ENDPOINTS:
            known = ", ".join(ENDPOINTS)
            detail = f"Application {endpoint!r} not found (emulated: {known})"
            return json_response({"detail": detail}, 404)
        raw = await request.body()
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError as error:
            detail = [{"loc": ["body"], "msg": f"Invalid JSON: {error}", "type": "json_invalid"}]
            return json_response({"detail": detail}, 422)
        errors = validation_errors(payload, edit=endpoint.endswith("/edit"))
        if errors:
            return json_response({"detail": errors}, 422)
        start_timeout = _float_or_none(request.headers.get("x-fal-request-timeout"))
        max_queue = _int_or_none(request.query_params.get("fal_max_queue_length"))
        try:
            sim = self.scheduler.submit(
                endpoint, payload, start_timeout=start_timeout, max_queue_length=max_queue
            )
        except LimitReached:
            return self._too_many(
                f"Concurrent requests limit reached: {self.scheduler.config.concurrency} "
                "requests are already in flight for this account.",
                "concurrent_requests_limit",
            )
        except QueueFull:
            return self._too_many("The queue is longer than fal_max_queue_length.", "queue_full")
        body = {
            "status": "IN_QUEUE",
            "request_id": sim.request_id,
            **self._urls(request, sim),
            "queue_position": self.scheduler.queue_position(sim) if sim.status == "IN_QUEUE" else 0,
            "gateway_request_id": sim.gateway_request_id,
        }
        if sim.submit_lost:
            log.info("request %s accepted; its submit answer is lost (fault)", sim.request_id)
            return LostResponse(dumps(body), sim.request_id)
        return json_response(body, 200, {"x-fal-request-id": sim.request_id})

    def _too_many(self, detail: str, error_type: str) -> Response:
        headers = {"x-fal-error-type": error_type}
        if self.scheduler.config.retry_after is not None:
            headers["retry-after"] = f"{self.scheduler.config.retry_after:g}"
        return json_response({"detail": detail, "error_type": error_type}, 429, headers)

    def _polled_request(self, request: Request) -> SimRequest | Response:
        """The request a status/stream/result call names, or the answer that refuses it
        (no key, unknown id, or an ingress 503 drawn for this poll)."""
        if (denied := self._authorised(request)) is not None:
            return denied
        sim = self._lookup(request)
        if sim is None:
            return json_response({"detail": "Request not found"}, 404)
        if (fault := self._ingress_fault(sim)) is not None:
            return fault
        return sim

    async def status(self, request: Request) -> Response:
        self.scheduler.http["status"] += 1
        sim = self._polled_request(request)
        if isinstance(sim, Response):
            return sim
        logs = request.query_params.get("logs", "").lower() in ("1", "true")
        body = self._status_body(request, sim, logs)
        code = 200 if sim.status == "COMPLETED" else 202
        return json_response(body, code, {"x-fal-request-id": sim.request_id})

    async def status_stream(self, request: Request) -> Response:
        self.scheduler.http["stream"] += 1
        sim = self._polled_request(request)
        if isinstance(sim, Response):
            return sim
        logs = request.query_params.get("logs", "").lower() in ("1", "true")
        return StreamingResponse(
            self._events(request, sim, logs),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-fal-request-id": sim.request_id},
        )

    async def _events(self, request: Request, sim: SimRequest, logs: bool) -> AsyncIterator[bytes]:
        """One ``data:`` event per state change (queue position included), from the current
        state, ending after COMPLETED. Waits on the request's change future: no polling."""
        last = b""
        while True:
            if sim.status == "FORGOTTEN":
                return
            data = dumps(self._status_body(request, sim, logs))
            if data != last:
                last = data
                yield b"data: " + data + b"\n\n"
            if sim.status == "COMPLETED":
                return
            if not await self.scheduler.wait_for_change(sim, STREAM_KEEPALIVE_S):
                yield b": keep-alive\n\n"

    async def result(self, request: Request) -> Response:
        self.scheduler.http["result"] += 1
        sim = self._polled_request(request)
        if isinstance(sim, Response):
            return sim
        headers = {"x-fal-request-id": sim.request_id}
        if sim.status != "COMPLETED":
            return json_response({"detail": "Request is still in progress"}, 400, headers)
        if sim.expires_at is not None and time.time() >= sim.expires_at:
            headers["x-fal-error-type"] = "result_expired"
            detail = "The result of this request has expired and is no longer stored."
            return json_response({"detail": detail, "error_type": "result_expired"}, 404, headers)
        status, body, extra = self._outcome_response(request, sim)
        return json_response(body, status, {**headers, **extra})

    def _outcome_response(
        self, request: Request, sim: SimRequest
    ) -> tuple[int, Any, dict[str, str]]:
        """(status code, body, headers) of a finished request's result."""
        if sim.outcome == "ok":
            units = str(int(sim.input.get("num_images", 1)))
            return 200, self._output(request, sim), {"x-fal-billable-units": units}
        if sim.outcome == "content_policy_violation":
            detail = [
                {
                    "loc": ["body", "prompt"],
                    "msg": sim.error,
                    "type": "content_policy_violation",
                    "url": "https://docs.fal.ai/errors#content_policy_violation",
                    "input": sim.input.get("prompt"),
                }
            ]
            return 422, {"detail": detail}, {"x-fal-retryable": "false"}
        error_type = sim.outcome or "internal_error"
        headers = {"x-fal-error-type": error_type}
        if error_type == "request_timeout":
            headers["x-fal-request-timeout-type"] = "user"
        body = {"detail": sim.error, "error_type": error_type}
        return ERROR_STATUS.get(error_type, 500), body, headers

    def _output(self, request: Request, sim: SimRequest) -> dict[str, Any]:
        fmt = sim.input.get("output_format", "png")
        spec = self.image_spec(sim, 0)
        images = []
        for index in range(int(sim.input.get("num_images", 1))):
            name = f"{sim.request_id}-{index}.{fmt}"
            images.append(
                {
                    "url": f"{self._base(request)}/files/{sim.request_id}/{name}",
                    "file_name": name,
                    "content_type": CONTENT_TYPES[fmt],
                    "width": spec.width,
                    "height": spec.height,
                }
            )
        return {"images": images}

    async def cancel(self, request: Request) -> Response:
        self.scheduler.http["cancel"] += 1
        if (denied := self._authorised(request)) is not None:
            return denied
        sim = self._lookup(request)
        if sim is None:
            return json_response({"status": "NOT_FOUND", "detail": "Request not found"}, 404)
        if self.scheduler.cancel(sim) == "already_completed":
            body = {"status": "ALREADY_COMPLETED", "detail": "Request already completed"}
            return json_response(body, 400, {"x-fal-request-id": sim.request_id})
        body = {"status": "CANCELLATION_REQUESTED"}
        return json_response(body, 202, {"x-fal-request-id": sim.request_id})

    # -- files -----------------------------------------------------------------------------------

    def image_spec(self, sim: SimRequest, index: int) -> ImageSpec:
        """What output ``index`` of ``sim`` looks like; an edit of one of our files starts from
        that file's picture."""
        source = self._source_spec(sim) if sim.is_edit else None
        size_value = sim.input.get("image_size", "auto" if sim.is_edit else None)
        if sim.is_edit and size_value == "auto" and source is not None:
            width, height = source.width, source.height
        else:
            width, height = resolve_size(size_value)
        return ImageSpec(
            prompt=str(sim.input.get("prompt", "")),
            width=width,
            height=height,
            quality=sim.input.get("quality", DEFAULT_QUALITY),
            output_format=sim.input.get("output_format", "png"),
            index=index,
            source=source,
        )

    def _source_spec(self, sim: SimRequest, depth: int = 0) -> ImageSpec | None:
        urls = sim.input.get("image_urls") or []
        if not urls or depth > 8:
            return None
        parts = urlsplit(urls[0])
        segments = parts.path.strip("/").split("/")
        if parts.hostname not in ("127.0.0.1", "localhost", "::1") or len(segments) != 3:
            return None
        if segments[0] != "files":
            return None
        source = self.scheduler.requests.get(segments[1])
        if source is None or source.outcome != "ok":
            return None
        index = _index_from_name(segments[2])
        if index is None:
            return None
        return self.image_spec(source, index)

    async def file(self, request: Request) -> Response:
        self.scheduler.http["files"] += 1
        sim = self.scheduler.requests.get(request.path_params["request_id"])
        name = request.path_params["name"]
        index = _index_from_name(name)
        fmt = sim.input.get("output_format", "png") if sim is not None else None
        if (
            sim is None
            or sim.outcome != "ok"
            or index is None
            or index >= int(sim.input.get("num_images", 1))
            or name != f"{sim.request_id}-{index}.{fmt}"
        ):
            return Response("Not Found", 404, media_type="text/plain")
        spec = self.image_spec(sim, index)
        data = await anyio.to_thread.run_sync(encode, spec)
        return Response(
            data,
            200,
            {"cache-control": "public, max-age=3600"},
            media_type=CONTENT_TYPES[spec.output_format],
        )

    # -- history ---------------------------------------------------------------------------------

    async def history(self, request: Request) -> Response:
        """fal's ``GET /v1/models/requests/by-endpoint``: newest first, cursor-paged."""
        self.scheduler.http["history"] += 1
        if (denied := self._authorised(request)) is not None:
            return denied
        query = request.query_params
        endpoint = query.get("endpoint_id")
        if not endpoint:
            return json_response({"detail": "endpoint_id is required"}, 422)
        expand = {p for value in query.getlist("expand") for p in value.split(",")}
        try:
            limit = min(HISTORY_MAX_LIMIT, max(1, int(query.get("limit", 50))))
            offset = int(query.get("cursor") or 0)
        except ValueError:
            return json_response({"detail": "limit and cursor must be integers"}, 422)
        start = _parse_time(query.get("start"))
        end = _parse_time(query.get("end"))
        wanted_id = query.get("request_id")
        matches = [
            sim
            for sim in sorted(
                self.scheduler.requests.values(), key=lambda s: s.ticket, reverse=True
            )
            if sim.endpoint == endpoint.strip("/")
            and (wanted_id is None or sim.request_id == wanted_id)
            and (start is None or sim.submitted_at >= start)
            and (end is None or sim.submitted_at <= end)
            and not (sim.behind_history and self.scheduler.config.history_paused)
        ]
        page = matches[offset : offset + limit]
        items = [self._history_item(request, sim, "payloads" in expand) for sim in page]
        more = offset + limit < len(matches)
        return json_response(
            {"items": items, "next_cursor": str(offset + limit) if more else None, "has_more": more}
        )

    def _history_item(self, request: Request, sim: SimRequest, payloads: bool) -> dict[str, Any]:
        status_code = None
        output: Any = None
        if sim.status == "COMPLETED":
            status_code, output, _ = self._outcome_response(request, sim)
        item: dict[str, Any] = {
            "request_id": sim.request_id,
            "endpoint_id": sim.endpoint,
            "status": sim.status,
            "sent_at": iso(sim.submitted_at),
            "started_at": iso(sim.started_at),
            "ended_at": iso(sim.completed_at),
            "status_code": status_code,
            "duration": (
                round(sim.completed_at - sim.started_at, 4)
                if sim.completed_at and sim.started_at
                else None
            ),
            "json_input": sim.input,
        }
        if payloads:
            item["json_output"] = output
        return item

    # -- admin -----------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return json_response(
            {
                "ok": True,
                "simulated": True,
                "uptime_s": round(time.time() - self.started_at, 3),
                "requests": len(self.scheduler.requests),
            }
        )

    async def ledger_json(self, request: Request) -> Response:
        self.scheduler.http["admin"] += 1
        return json_response(ledger_view(self.scheduler))

    async def config_json(self, request: Request) -> Response:
        self.scheduler.http["admin"] += 1
        if request.method == "POST":
            try:
                changes = json.loads(await request.body() or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("send a JSON object of knob: value")
                config = self.scheduler.config.updated(changes)
            except ValueError as error:
                return json_response({"detail": str(error)}, 400)
            self.scheduler.reconfigure(config)
            log.info("config changed: %s", sorted(changes))
        return json_response(self.scheduler.config.public())

    async def reset(self, request: Request) -> Response:
        """Forget every request and count; knobs go back to the start-up flags."""
        self.scheduler.reset(self.startup_config)
        if self.state is not None and self.state_file is not None:
            self.state.close()
            self.state_file.write_text("")
            self.state = JsonlAppender(self.state_file)
        log.info("reset: requests and ledger forgotten")
        return json_response({"ok": True, "config": self.startup_config.public()})


def _index_from_name(name: str) -> int | None:
    stem = name.rsplit(".", 1)[0]
    tail = stem.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
