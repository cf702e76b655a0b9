"""The emulator's HTTP surface: fal's queue wire format, request history, output files, admin.

Shapes and status codes follow ``fal-queue-api.md`` so the unmodified fal_client works.
Handlers do constant work per call (no scans, no rendering except for file downloads, which
run in a worker thread) so one core serves hundreds of polls a second.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from falassets.sim.config import SimConfig
from falassets.sim.faults import ingress_503_now
from falassets.sim.images import CONTENT_TYPES, ImageSpec, encode
from falassets.sim.ledger import JsonlAppender, ledger_view, load_state, request_entry
from falassets.sim.rules import DEFAULT_QUALITY, resolve_size, validation_errors
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
#: A silent status stream sends an SSE comment this often (emulated seconds: times the time
#: scale), as fal documents, so proxies keep it open.
STREAM_KEEPALIVE_S = 15.0
HISTORY_MAX_LIMIT, HISTORY_DEFAULT_LIMIT = 100, 50
#: fal's default history window: 24 h, or 90 days when a request_id is given.
HISTORY_WINDOW_S, HISTORY_ID_WINDOW_S = 24 * 3600.0, 90 * 24 * 3600.0
#: fal's history ``status`` filter: which final status codes each value selects.
HISTORY_STATUS_FILTERS = {
    "success": range(200, 300),
    "user_error": range(400, 500),
    "error": range(500, 600),
}
#: Cancel answers' status codes as third-party pages report them (fal documents only bodies).
CANCEL_CODES = {
    "OK": 200,
    "CANCELLATION_REQUESTED": 202,
    "ALREADY_COMPLETED": 400,
    "NOT_FOUND": 404,
}
ERROR_STATUS = {
    "content_policy_violation": 422,
    "runner_server_error": 500,
    "client_cancelled": 499,
    "request_timeout": 504,
}


def outcome_status(sim: SimRequest) -> int:
    """The HTTP status of a finished request's result (and its history ``status_code``)."""
    if sim.outcome == "ok":
        return 200
    if sim.outcome == "content_policy_violation":
        return 422
    return ERROR_STATUS.get(sim.outcome or "internal_error", 500)


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


class BrokenStream(Response):
    """Knob stream=broken: the first event, then the connection drops mid-body (httpx raises
    RemoteProtocolError), as a proxy or a restarted ingress would do."""

    def __init__(self, first_event: bytes, headers: dict[str, str]) -> None:
        super().__init__(first_event, 200, headers, "text/event-stream")
        # Chunked, like a real stream: without a length the client cannot think it complete.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": True})
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
        self.scheduler.input_sizes = self._input_sizes
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
        mode = self.scheduler.config.stream
        if mode in ("absent_404", "absent_405"):
            if mode == "absent_404":
                return json_response({"detail": "Not Found"}, 404)
            return json_response({"detail": "Method Not Allowed"}, 405, {"allow": "PUT"})
        sim = self._polled_request(request)
        if isinstance(sim, Response):
            return sim
        logs = request.query_params.get("logs", "").lower() in ("1", "true")
        headers = {"cache-control": "no-cache", "x-fal-request-id": sim.request_id}
        mode = self.scheduler.config.stream
        if mode == "broken":
            first = b"data: " + dumps(self._status_body(request, sim, logs)) + b"\n\n"
            return BrokenStream(first, headers)
        events = self._idle(sim) if mode == "idle" else self._events(request, sim, logs)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)

    def _keepalive_s(self) -> float:
        return max(0.01, STREAM_KEEPALIVE_S * self.scheduler.config.time_scale)

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
            if not await self.scheduler.wait_for_change(sim, self._keepalive_s()):
                yield b": keep-alive\n\n"

    async def _idle(self, sim: SimRequest) -> AsyncIterator[bytes]:
        """Knob stream=idle: keep-alive comments only, never an event, never closed by us
        (a client that trusts the stream alone waits forever)."""
        while sim.status != "FORGOTTEN":
            if not await self.scheduler.wait_for_change(sim, self._keepalive_s()):
                yield b": keep-alive\n\n"

    async def result(self, request: Request) -> Response:
        self.scheduler.http["result"] += 1
        sim = self._polled_request(request)
        if isinstance(sim, Response):
            return sim
        headers = {"x-fal-request-id": sim.request_id}
        if sim.status != "COMPLETED":
            return self._early_result(request, sim, headers)
        if sim.expires_at is not None and time.time() >= sim.expires_at:
            return self._expired_result(headers)
        if sim.outcome == "ok" and sim.result_gets < self.scheduler.config.result_5xx:
            sim.result_gets += 1  # knob result_5xx: the GET fails, the request did not
            body = {"detail": "Internal server error", "error_type": "internal_error"}
            return json_response(body, 500, {**headers, "x-fal-error-type": "internal_error"})
        status, body, extra = self._outcome_response(request, sim)
        return json_response(body, status, {**headers, **extra})

    def _early_result(self, request: Request, sim: SimRequest, headers: dict[str, str]):
        """A result asked for before COMPLETED: fal documents no answer (knob early_result)."""
        mode = self.scheduler.config.early_result
        if mode == "404_not_found":
            return json_response({"detail": "Request not found"}, 404)
        if mode == "202_status":
            return json_response(self._status_body(request, sim, False), 202, headers)
        return json_response({"detail": "Request is still in progress"}, 400, headers)

    def _expired_result(self, headers: dict[str, str]) -> Response:
        """A result past its lifetime: fal documents no answer (knob expired_result)."""
        mode = self.scheduler.config.expired_result
        if mode == "404_not_found":
            return json_response({"detail": "Request not found"}, 404)
        headers = {**headers, "x-fal-error-type": "result_expired"}
        detail = "The result of this request has expired and is no longer stored."
        body = {"detail": detail, "error_type": "result_expired"}
        return json_response(body, 410 if mode == "410_gone" else 404, headers)

    def _outcome_response(
        self, request: Request, sim: SimRequest
    ) -> tuple[int, Any, dict[str, str]]:
        """(status code, body, headers) of a finished request's result."""
        if sim.outcome == "ok":
            units = str(int(sim.input.get("num_images", 1)))
            return outcome_status(sim), self._output(request, sim), {"x-fal-billable-units": units}
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
            return outcome_status(sim), {"detail": detail}, {"x-fal-retryable": "false"}
        error_type = sim.outcome or "internal_error"
        headers = {"x-fal-error-type": error_type}
        if error_type == "request_timeout":
            headers["x-fal-request-timeout-type"] = "user"
        body = {"detail": sim.error, "error_type": error_type}
        return outcome_status(sim), body, headers

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
            return self._cancel_answer("NOT_FOUND", {}, "Request not found")
        answer = self.scheduler.cancel(sim)
        detail = "Request already completed" if answer == "ALREADY_COMPLETED" else None
        return self._cancel_answer(answer, {"x-fal-request-id": sim.request_id}, detail)

    def _cancel_answer(self, answer: str, headers: dict[str, str], detail: str | None) -> Response:
        """fal's documented body ``{"status": answer}``; the code is knob cancel_codes (fal
        documents none)."""
        code = 200
        if self.scheduler.config.cancel_codes == "reported":
            code = CANCEL_CODES[answer]
        body = {"status": answer, **({"detail": detail} if detail else {})}
        return json_response(body, code, headers)

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

    def _input_sizes(self, sim: SimRequest) -> list[tuple[int, int]]:
        """Pixel size of an edit's first input image when it is one of our files."""
        source = self._source_spec(sim) if sim.is_edit else None
        return [(source.width, source.height)] if source is not None else []

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
        """fal's ``GET /v1/models/requests/by-endpoint``: by end time (newest first; requests
        not finished yet, when listed, come first), cursor-paged, 24 h window by default."""
        self.scheduler.http["history"] += 1
        if (denied := self._authorised(request)) is not None:
            return denied
        config = self.scheduler.config
        if config.history == "absent":
            return json_response({"detail": "Not Found"}, 404)
        if config.history == "forbidden":
            detail = "This key is not allowed to list requests (needs an admin key)."
            return json_response({"detail": detail}, 403)
        if config.history == "unavailable":
            return json_response({"detail": "Service Unavailable"}, 503)
        try:
            query = _history_query(request)
        except ValueError as error:
            return json_response({"detail": str(error)}, 422)
        matches = sorted(
            (sim for sim in self.scheduler.requests.values() if self._listed(sim, query)),
            key=_history_key,
            reverse=True,
        )
        if query.after is not None:
            matches = [sim for sim in matches if _history_key(sim) < query.after]
        page = matches[: query.limit]
        items = [self._history_item(request, sim, query.payloads) for sim in page]
        more = len(matches) > query.limit
        cursor = _encode_cursor(_history_key(page[-1])) if more else None
        return json_response({"items": items, "next_cursor": cursor, "has_more": more})

    def _listed(self, sim: SimRequest, query: HistoryQuery) -> bool:
        """Whether fal's history shows ``sim`` for this query (filters and lag knobs)."""
        config = self.scheduler.config
        if sim.endpoint != query.endpoint or sim.status == "FORGOTTEN":
            return False
        if query.request_id is not None and sim.request_id != query.request_id:
            return False
        if not query.start <= sim.submitted_at <= query.end:
            return False
        if sim.behind_history and config.history_paused:
            return False
        finished = sim.status == "COMPLETED"
        if config.history_finished_only and not finished:
            return False
        if query.status is not None:
            return finished and outcome_status(sim) in HISTORY_STATUS_FILTERS[query.status]
        return True

    def _history_item(self, request: Request, sim: SimRequest, payloads: bool) -> dict[str, Any]:
        """fal's documented item: no ``status`` field (derive it from ``status_code`` and
        ``ended_at``); ``json_input``/``json_output`` only with ``expand=payloads``."""
        status_code = None
        output: Any = None
        if sim.status == "COMPLETED":
            status_code, output, _ = self._outcome_response(request, sim)
        item: dict[str, Any] = {
            "request_id": sim.request_id,
            "endpoint_id": sim.endpoint,
            "sent_at": iso(sim.submitted_at),
            "started_at": iso(sim.started_at),
            "ended_at": iso(sim.completed_at),
            "status_code": status_code,
            "duration": (
                round(sim.completed_at - sim.started_at, 4)
                if sim.completed_at and sim.started_at
                else None
            ),
        }
        if payloads:
            item["json_input"] = sim.input
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
                "running": len(self.scheduler.running),
                "queued": len(self.scheduler.waiting),
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
        """Forget every request and count; knobs go back to the start-up flags.

        Refused (409) while requests are queued or running: forgetting them mid-run turns a
        client's live requests into 404s. ``?force=true`` forgets them anyway (a test
        harness between tests); their open status streams close."""
        live = self.scheduler.in_flight()
        force = request.query_params.get("force", "").lower() in ("1", "true")
        if live and not force:
            detail = (
                f"{live} request(s) are still queued or running; a reset would make them "
                "unknown (404) to their clients. Wait for them, or POST /_sim/reset?force=true."
            )
            return json_response({"detail": detail, "live": live}, 409)
        self.scheduler.reset(self.startup_config)
        if self.state is not None and self.state_file is not None:
            self.state.close()
            self.state_file.write_text("")
            self.state = JsonlAppender(self.state_file)
        log.info("reset: requests and ledger forgotten")
        return json_response({"ok": True, "config": self.startup_config.public()})


@dataclass(frozen=True)
class HistoryQuery:
    """A history call's parameters, checked."""

    endpoint: str
    request_id: str | None
    start: float
    end: float
    limit: int
    after: tuple[float, int] | None  # the cursor: list what sorts after this key
    payloads: bool
    status: str | None


def _history_query(request: Request) -> HistoryQuery:
    """Parse and check a history query; ValueError says which parameter is wrong."""
    query = request.query_params
    endpoint = (query.get("endpoint_id") or "").strip("/")
    if not endpoint:
        raise ValueError("endpoint_id is required")
    raw_limit = query.get("limit") or str(HISTORY_DEFAULT_LIMIT)
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= HISTORY_MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {HISTORY_MAX_LIMIT}")
    status = query.get("status") or None
    if status is not None and status not in HISTORY_STATUS_FILTERS:
        raise ValueError(f"status must be one of {', '.join(HISTORY_STATUS_FILTERS)}")
    request_id = query.get("request_id") or None
    now = time.time()
    window = HISTORY_ID_WINDOW_S if request_id else HISTORY_WINDOW_S
    start = _parse_time(query.get("start"), "start")
    end = _parse_time(query.get("end"), "end")
    expand = {p for value in query.getlist("expand") for p in value.split(",")}
    return HistoryQuery(
        endpoint=endpoint,
        request_id=request_id,
        start=now - window if start is None else start,
        end=float("inf") if end is None else end,
        limit=int(raw_limit),
        after=_decode_cursor(query.get("cursor")),
        payloads="payloads" in expand,
        status=status,
    )


def _history_key(sim: SimRequest) -> tuple[float, int]:
    """Sort key, descending: end time (not finished = newest), then submit order."""
    ended = sim.completed_at if sim.completed_at is not None else float("inf")
    return (ended, sim.ticket)


def _encode_cursor(key: tuple[float, int]) -> str:
    raw = json.dumps([None if key[0] == float("inf") else key[0], key[1]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(value: str | None) -> tuple[float, int] | None:
    """An opaque keyset cursor: robust to requests finishing (moving) between pages."""
    if not value:
        return None
    try:
        ended, ticket = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        return (float("inf") if ended is None else float(ended), int(ticket))
    except (ValueError, TypeError, binascii.Error):
        raise ValueError("cursor is not one this server gave (use next_cursor)") from None


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


def _parse_time(value: str | None, name: str) -> float | None:
    """ISO 8601 (a naive time is UTC); ValueError naming the parameter otherwise."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 time, not {value!r}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
