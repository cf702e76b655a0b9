"""fal's queue over HTTP, spoken the way a batch of thousands needs it.

Why not just ``fal_client.AsyncClient.subscribe``: its submit retries transport errors (a lost
answer becomes a second, billed request) and 429s with 0.1 s backoff (hidden from our
limiter), and it polls status every 0.1 s. Here a submit is ONE HTTP attempt whose ambiguous
failures are reported as such (the engine then looks in fal's request history), waiting is one
status *stream* per request (SSE) with polling only as the fallback, and the status, result
and cancel URLs are the ones fal returned, used verbatim. fal_client's handle does the status
polls and cancels (its retries on those idempotent calls are harmless), and its
``FalClientHTTPError`` is the error type everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from fal_client import FalClientHTTPError
from fal_client.client import AsyncRequestHandle, Completed, Queued
from httpx_sse import aconnect_sse

from falassets.fal.jobs import canonical_json
from falassets.fal.retry import Action, classify_exception, is_ingress_error

#: Streams that break this many times in a row make us fall back to polling status.
MAX_STREAM_BREAKS = 3
#: A silent stream is re-checked (one status GET, then a new stream) after this long.
STREAM_IDLE_S = 60.0
POLL_FIRST_S = 0.25
POLL_MAX_S = 5.0


class AmbiguousSubmit(Exception):
    """The submit was (maybe) sent but its answer was lost: fal may have accepted it."""


class StreamBroken(Exception):
    """The status stream ended or failed before the request completed."""


@dataclass(frozen=True)
class QueuedRequest:
    """A request fal accepted, with the URLs fal returned for it."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    queue_position: int | None = None


@dataclass(frozen=True)
class FinalStatus:
    """The COMPLETED status: ``error``/``error_type`` set when the request failed at fal."""

    error: str | None
    error_type: str | None
    metrics: dict[str, Any]


@dataclass(frozen=True)
class Result:
    body: Any
    headers: dict[str, str]


def raise_for_status(response: httpx.Response) -> None:
    """fal_client's error shape (``FalClientHTTPError``) for any non-2xx answer."""
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    message: Any = response.text
    error_type = None
    if isinstance(body, dict):
        message = body.get("detail", response.text)
        error_type = body.get("error_type")
    if error_type is None:
        error_type = response.headers.get("x-fal-error-type")
    raise FalClientHTTPError(
        message if isinstance(message, str) else json.dumps(message),
        response.status_code,
        dict(response.headers),
        response=response,
        error_type=error_type,
    )


def endpoint_app(endpoint: str) -> str:
    """``owner/alias`` of an endpoint id: status/result URLs never carry the sub-path."""
    parts = endpoint.strip("/").split("/")
    return "/".join(parts[:2])


class QueueClient:
    """One batch's conversation with fal's queue (or anything that speaks its wire format)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        queue_host: str,
        api_host: str,
        submit_timeout_s: float = 30.0,
    ) -> None:
        self.http = http
        self.queue_host = queue_host
        self.api_host = api_host
        self.submit_timeout_s = submit_timeout_s
        self.calls: Counter[str] = Counter()  # what we asked fal, by kind (diagnostics)
        self._background: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        """Finish reading streams that already delivered their answer."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # -- submit -------------------------------------------------------------------------------

    async def submit(
        self, endpoint: str, payload: dict[str, Any], *, headers: dict[str, str] | None = None
    ) -> QueuedRequest:
        """POST the input once. Raises ``FalClientHTTPError`` (fal answered no), an httpx
        ``ConnectError``/``ConnectTimeout``/``PoolTimeout`` (nothing was sent: safe to retry), or
        :class:`AmbiguousSubmit` (sent, answer lost: look in the history before retrying)."""
        self.calls["submit"] += 1
        url = f"https://{self.queue_host}/{endpoint.strip('/')}"
        try:
            response = await self.http.post(
                url,
                content=canonical_json(payload).encode("utf-8"),
                headers={"content-type": "application/json", **(headers or {})},
                timeout=self.submit_timeout_s,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
            raise
        except (httpx.TransportError, httpx.TimeoutException) as error:
            raise AmbiguousSubmit(f"submit answer lost: {type(error).__name__}") from error
        raise_for_status(response)
        try:
            data = response.json()
            return QueuedRequest(
                request_id=str(data["request_id"]),
                status_url=data["status_url"],
                response_url=data["response_url"],
                cancel_url=data["cancel_url"],
                queue_position=data.get("queue_position"),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise AmbiguousSubmit("submit answer unreadable") from error

    def request_for(self, endpoint: str, request_id: str) -> QueuedRequest:
        """URLs of a request known only by id (an adopted orphan), in fal's documented shape."""
        base = f"https://{self.queue_host}/{endpoint_app(endpoint)}/requests/{request_id}"
        return QueuedRequest(request_id, f"{base}/status", base, f"{base}/cancel")

    # -- waiting ------------------------------------------------------------------------------

    def _handle(self, request: QueuedRequest) -> AsyncRequestHandle:
        return AsyncRequestHandle(
            request_id=request.request_id,
            response_url=request.response_url,
            status_url=request.status_url,
            cancel_url=request.cancel_url,
            client=self.http,
        )

    async def wait_until_done(
        self, request: QueuedRequest, *, on_update: Callable[[str], None] | None = None
    ) -> FinalStatus:
        """Wait on the status stream (one request), polling with backoff when streams break.

        Transient failures here are retried without limit: the caller's deadline bounds the
        wait. A 401/403 or a request fal does not know (404) is raised.
        """
        breaks = 0
        polls = 0
        while True:
            if breaks < MAX_STREAM_BREAKS:
                try:
                    return await self._stream_until_done(request, on_update)
                except StreamBroken:
                    breaks += 1
                except (FalClientHTTPError, httpx.TransportError, httpx.TimeoutException) as err:
                    if classify_exception(err).action is not Action.RETRY:
                        raise
                    breaks += 1
            try:
                self.calls["status"] += 1
                status = await self._handle(request).status(with_logs=False)
            except (FalClientHTTPError, httpx.TransportError, httpx.TimeoutException) as err:
                if classify_exception(err).action is not Action.RETRY:
                    raise
                status = None
            if isinstance(status, Completed):
                return FinalStatus(status.error, status.error_type, status.metrics or {})
            if on_update is not None and status is not None:
                on_update("IN_QUEUE" if isinstance(status, Queued) else "IN_PROGRESS")
            if breaks < MAX_STREAM_BREAKS:
                continue  # the stream broke but the request is not done: open a new stream
            polls += 1
            delay = min(POLL_MAX_S, POLL_FIRST_S * 1.5 ** (polls - 1))
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))

    async def _stream_until_done(
        self, request: QueuedRequest, on_update: Callable[[str], None] | None
    ) -> FinalStatus:
        self.calls["stream"] += 1
        timeout = httpx.Timeout(30.0, read=STREAM_IDLE_S)
        stack = contextlib.AsyncExitStack()
        handed_off = False
        try:
            source = await stack.enter_async_context(
                aconnect_sse(
                    self.http,
                    "GET",
                    f"{request.status_url}/stream",
                    params={"logs": "0"},
                    timeout=timeout,
                )
            )
            if not source.response.is_success:
                await source.response.aread()
                raise_for_status(source.response)
            events = source.aiter_sse()
            async for event in events:
                if not event.data:
                    continue
                try:
                    data = json.loads(event.data)
                except ValueError:
                    continue
                status = data.get("status") if isinstance(data, dict) else None
                if status == "COMPLETED":
                    # Answer now (the caller frees its slot); read the stream's end meanwhile.
                    task = asyncio.create_task(_drain(events, stack))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
                    handed_off = True
                    return FinalStatus(
                        data.get("error"), data.get("error_type"), data.get("metrics") or {}
                    )
                if status and on_update is not None:
                    on_update(status)
        finally:
            if not handed_off:
                await stack.aclose()
        raise StreamBroken("status stream closed before COMPLETED")

    # -- result, cancel -----------------------------------------------------------------------

    async def result(self, request: QueuedRequest, *, attempts: int = 4) -> Result:
        """GET the output. Ingress errors and transport failures of this idempotent GET are
        retried here; anything else (the model's own error, 401, expiry) is raised."""
        for attempt in range(1, attempts + 1):
            self.calls["result"] += 1
            try:
                response = await self.http.get(request.response_url, timeout=120.0)
            except (httpx.TransportError, httpx.TimeoutException):
                if attempt == attempts:
                    raise
            else:
                if not (
                    is_ingress_error(response.status_code, response.headers, response.text)
                    and attempt < attempts
                ):
                    raise_for_status(response)
                    return Result(response.json(), dict(response.headers))
            await asyncio.sleep(min(5.0, 0.2 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    async def cancel(self, request: QueuedRequest) -> str:
        """``requested``, ``already_completed`` or ``not_found``: fal's three answers."""
        self.calls["cancel"] += 1
        try:
            await self._handle(request).cancel()
        except FalClientHTTPError as error:
            if error.status_code == 400:
                return "already_completed"
            if error.status_code == 404:
                return "not_found"
            raise
        return "requested"

    # -- history ------------------------------------------------------------------------------

    async def find_in_history(
        self,
        endpoint: str,
        payload: dict[str, Any],
        since: datetime,
        *,
        exclude: frozenset[str] = frozenset(),
        pages: int = 5,
    ) -> QueuedRequest | None:
        """The request with exactly this input submitted since ``since``, if fal has one.

        fal's history lists requests per endpoint with their ``json_input``; a submit whose
        answer was lost is adopted from here instead of being sent (and billed) again.
        Requests in ``exclude`` (already journalled for other jobs) are never adopted.
        """
        wanted = canonical_json(payload)
        params: dict[str, Any] = {
            "endpoint_id": endpoint,
            "start": (since - timedelta(seconds=5)).isoformat(),
            "expand": "payloads",
            "limit": 100,
        }
        url = f"https://{self.api_host}/v1/models/requests/by-endpoint"
        for _ in range(pages):
            self.calls["history"] += 1
            response = await self.http.get(url, params=params, timeout=30.0)
            raise_for_status(response)
            data = response.json()
            items = data.get("items", data.get("requests", [])) if isinstance(data, dict) else data
            for item in items or []:
                candidate = item.get("json_input")
                if isinstance(candidate, str):
                    try:
                        candidate = json.loads(candidate)
                    except ValueError:
                        continue
                request_id = str(item.get("request_id"))
                if request_id in exclude or _submitted_before(item, since):
                    continue
                if candidate is not None and canonical_json(candidate) == wanted:
                    return self.request_for(endpoint, str(item["request_id"]))
            cursor = data.get("next_cursor") if isinstance(data, dict) else None
            if not cursor or not data.get("has_more", True):
                return None
            params["cursor"] = cursor
        return None


async def _drain(events: AsyncIterator[Any], stack: contextlib.AsyncExitStack) -> None:
    """Read the stream's end (fal closes it after COMPLETED) so the connection is reused
    instead of torn down and re-handshaken; give up quickly if the server lingers."""
    try:
        with contextlib.suppress(httpx.HTTPError, TimeoutError):
            async with asyncio.timeout(2.0):
                async for _ in events:
                    pass
    finally:
        with contextlib.suppress(httpx.HTTPError, RuntimeError):
            await stack.aclose()


def _submitted_before(item: dict[str, Any], since: datetime) -> bool:
    """True when the item says it was sent before ``since`` (a server may ignore ``start``)."""
    for name in ("sent_at", "submitted_at", "created_at", "started_at"):
        value = item.get(name)
        if isinstance(value, str):
            try:
                when = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            if when.tzinfo is None:
                when = when.replace(tzinfo=since.tzinfo)
            return when < since - timedelta(seconds=5)
    return False


__all__ = [
    "AmbiguousSubmit",
    "FinalStatus",
    "QueueClient",
    "QueuedRequest",
    "Result",
    "StreamBroken",
    "endpoint_app",
    "raise_for_status",
]
