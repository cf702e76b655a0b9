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
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from fal_client import FalClientHTTPError
from fal_client.client import AsyncRequestHandle, Completed, Queued

from falassets.engine.jobs import canonical_json
from falassets.engine.retry import Action, classify_exception, is_ingress_error

#: A request whose streams break this many times is followed by polling status instead.
MAX_STREAM_BREAKS = 3
#: Streams of one client that fail in a row before it stops opening them for a while.
STREAM_FAILURES_TO_PAUSE = 3
#: How long a client polls instead of streaming once streams proved absent (404/405, not an
#: event stream) or kept failing: long enough that a batch does not probe per request.
STREAM_PAUSE_S = 300.0
#: A stream that delivered no status event for this long is checked with one status GET.
STREAM_IDLE_S = 60.0
#: fal sends a keep-alive comment every 15 s *between* status events; this many comments
#: before the first event mean the stream carries no status at all (``stream=idle``).
IDLE_COMMENTS = 2
#: Polling while nothing is known about latency: 0.5, 0.75, 1.1, 1.7 ... s, at most 8 s
#: apart (the first completion teaches the latency; later polls are timed from it).
POLL_FIRST_S = 0.5
POLL_GROWTH = 1.5
POLL_MAX_S = 8.0
#: Once a request is overdue, polls follow at this share of the mean latency, growing.
POLL_OVERDUE_SHARE = 0.2
#: Completions kept to estimate how many requests fal runs for us at once.
FINISHES_KEPT = 30
#: Weight of the newest observation in the client's running mean of inference time.
LATENCY_WEIGHT = 0.2
#: Status codes of a stream endpoint that is not there (the host serves no streams).
STREAM_ABSENT_CODES = frozenset({404, 405, 406, 415, 501})
#: How far fal's clock and ours may disagree when history times are compared with ours.
CLOCK_SKEW = timedelta(seconds=5)
#: fal's documented cancel answers (body ``status``) and what each means here.
CANCEL_ANSWERS = {
    "OK": "cancelled",  # left the queue before it ran: never billed
    "CANCELLATION_REQUESTED": "requested",  # running: it may still finish and be billed
    "ALREADY_COMPLETED": "already_completed",
    "NOT_FOUND": "not_found",
}
#: Only when the body names no answer: the codes third-party pages report.
CANCEL_CODES = {200: "cancelled", 202: "requested", 400: "already_completed", 404: "not_found"}


class AmbiguousSubmit(Exception):
    """The submit was (maybe) sent but its answer was lost: fal may have accepted it."""


class StreamBroken(Exception):
    """The status stream ended, failed or went silent before the request completed."""


class StreamAbsent(StreamBroken):
    """The host answered the stream URL with something that is not a status stream
    (404/405, another content type): it serves none, for any request."""


@dataclass
class _Watch:
    """What one waiter knows of its request: the last state seen and when."""

    submitted: float
    state: str = "SUBMITTED"  # until fal says IN_QUEUE or IN_PROGRESS
    position: int | None = None
    queue_seen: float | None = None  # last time it was seen IN_QUEUE
    progress_seen: float | None = None  # first time it was seen IN_PROGRESS
    polls: int = 0


@dataclass(frozen=True)
class QueuedRequest:
    """A request fal accepted, with the URLs fal returned for it."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    queue_position: int | None = None


@dataclass(frozen=True)
class HistoryAnswer:
    """A history look-up: the request found, or whether its absence is proven."""

    request: QueuedRequest | None
    caught_up: bool


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
        stream_idle_s: float = STREAM_IDLE_S,
    ) -> None:
        self.http = http
        self.queue_host = queue_host
        self.api_host = api_host
        self.submit_timeout_s = submit_timeout_s
        self.stream_idle_s = stream_idle_s
        self.calls: Counter[str] = Counter()  # what we asked fal, by kind (diagnostics)
        #: Running mean of fal's ``inference_time`` (s); None until a request completed.
        self.latency_s: float | None = None
        self._watches: dict[str, _Watch] = {}
        #: When our last requests were seen finishing: their pace is fal's running level.
        self._finishes: deque[float] = deque(maxlen=FINISHES_KEPT)
        self._stream_failures = 0  # streams failed in a row (any request)
        self._stream_paused_until = 0.0  # monotonic time before which waits only poll
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

    @property
    def waiting_at_fal(self) -> int:
        """Our requests last seen ``IN_QUEUE`` (waiting for the account's running level)."""
        return sum(1 for w in self._watches.values() if w.state == "IN_QUEUE")

    @property
    def running_at_fal(self) -> int:
        """Our requests last seen ``IN_PROGRESS``: the running level fal grants us."""
        return sum(1 for w in self._watches.values() if w.state == "IN_PROGRESS")

    @property
    def streaming(self) -> bool:
        """Whether new waits open a status stream (False while streams are paused)."""
        return time.monotonic() >= self._stream_paused_until

    async def wait_until_done(
        self, request: QueuedRequest, *, on_update: Callable[[str], None] | None = None
    ) -> FinalStatus:
        """Wait on the status stream (one request), polling ``…/status`` with backoff when the
        stream is absent, broken or silent. Only the status (and result) endpoint decides a
        request's fate: a stream's 404 is no proof fal lost the request.

        Transient failures here are retried without limit: the caller's deadline bounds the
        wait. A 401/403 or a request fal does not know (status 404) is raised.
        """
        watch = _Watch(time.monotonic(), position=request.queue_position)
        self._watches[request.request_id] = watch
        try:
            return await self._wait(request, watch, on_update)
        finally:
            del self._watches[request.request_id]

    async def _wait(
        self, request: QueuedRequest, watch: _Watch, on_update: Callable[[str], None] | None
    ) -> FinalStatus:
        def note(state: str, position: int | None = None) -> None:
            now = time.monotonic()
            if state == "IN_QUEUE":
                watch.queue_seen, watch.position = now, position
            elif state == "IN_PROGRESS" and watch.progress_seen is None:
                watch.progress_seen = now
            watch.state = state
            if on_update is not None:
                on_update(state)

        breaks = 0
        if not self.streaming:  # polling only: the first poll at the expected end, not now
            await asyncio.sleep(self._poll_delay(watch) * random.uniform(0.9, 1.1))
        while True:
            streamed = self.streaming and breaks < MAX_STREAM_BREAKS
            absent = False
            if streamed:
                try:
                    final = await self._stream_until_done(request, note)
                    self._stream_failures = 0
                    return self._completed(final)
                except StreamAbsent:
                    breaks, absent = MAX_STREAM_BREAKS, True
                except (StreamBroken, FalClientHTTPError, httpx.HTTPError):
                    breaks += 1
                    self._stream_failed(absent=False)
            final = await self._poll(request, watch, note)  # raises when fal lost the request
            if absent:  # the status endpoint knows the request: the stream is what is missing
                self._stream_failed(absent=True)
            if final is not None:
                return self._completed(final)
            if streamed and self.streaming and breaks < MAX_STREAM_BREAKS:
                continue  # the request lives on and the stream may recover: reopen it
            await asyncio.sleep(self._poll_delay(watch) * random.uniform(0.9, 1.1))

    def _stream_failed(self, absent: bool) -> None:
        """Remember, for this client, a stream that is absent or keeps failing: a batch then
        polls instead of probing the stream once per request."""
        self._stream_failures += 1
        if absent or self._stream_failures >= STREAM_FAILURES_TO_PAUSE:
            self._stream_paused_until = time.monotonic() + STREAM_PAUSE_S
            self._stream_failures = 0

    async def _poll(
        self, request: QueuedRequest, watch: _Watch, note: Callable[..., None]
    ) -> FinalStatus | None:
        """One status GET: the final status, or None while it is queued or running (or the
        poll failed transiently). A 404 here means fal does not know the request: raised."""
        self.calls["status"] += 1
        watch.polls += 1
        try:
            status = await self._handle(request).status(with_logs=False)
        except (FalClientHTTPError, httpx.TransportError, httpx.TimeoutException) as err:
            if classify_exception(err).action is not Action.RETRY:
                raise
            return None
        if isinstance(status, Completed):
            return FinalStatus(status.error, status.error_type, status.metrics or {})
        if isinstance(status, Queued):
            note("IN_QUEUE", status.position)
        else:
            note("IN_PROGRESS")
        return None

    def _completed(self, final: FinalStatus) -> FinalStatus:
        """Learn the model's latency from fal's own ``metrics.inference_time``."""
        self._finishes.append(time.monotonic())
        seconds = final.metrics.get("inference_time") if final.error is None else None
        if isinstance(seconds, int | float) and 0 < seconds < 86_400:
            mean = self.latency_s
            self.latency_s = (
                float(seconds) if mean is None else mean + LATENCY_WEIGHT * (seconds - mean)
            )
        return final

    def _poll_delay(self, watch: _Watch) -> float:
        """When to ask again. Unknown latency: exponential backoff. Known: at the expected end
        of the queue wait plus the run, then at a growing share of the latency once overdue."""
        latency = self.latency_s
        if latency is None:
            return min(POLL_MAX_S, POLL_FIRST_S * POLL_GROWTH ** max(0, watch.polls - 1))
        return poll_delay(
            state=watch.state,
            position=watch.position,
            running=self._running_level(latency),
            latency_s=latency,
            in_progress_s=self._in_progress_s(watch),
        )

    def _running_level(self, latency_s: float) -> float:
        """How many requests fal runs at once for us, from how often ours finish (one every
        ``latency / level`` s). Stale sightings make a count of IN_PROGRESS far too low, and
        a queued request would then be polled far too late."""
        done = self._finishes
        if len(done) >= 2 and done[-1] > done[0]:
            return max(1.0, latency_s * (len(done) - 1) / (done[-1] - done[0]))
        return float(max(1, len(self._watches) - self.waiting_at_fal))

    @staticmethod
    def _in_progress_s(watch: _Watch) -> float | None:
        """How long it has probably run: from between the last IN_QUEUE and the first
        IN_PROGRESS sighting (the start lies somewhere in that gap)."""
        if watch.progress_seen is None:
            return None
        queued = watch.queue_seen if watch.queue_seen is not None else watch.submitted
        started = (min(queued, watch.progress_seen) + watch.progress_seen) / 2
        return time.monotonic() - started

    async def _stream_until_done(
        self, request: QueuedRequest, note: Callable[..., None]
    ) -> FinalStatus:
        """Follow the SSE status stream to COMPLETED. Raises :class:`StreamAbsent` when the
        host serves no stream, :class:`StreamBroken` when it ends early or carries no status
        (only keep-alive comments, or no event for ``STREAM_IDLE_S``)."""
        self.calls["stream"] += 1
        loop = asyncio.get_running_loop()
        stack = contextlib.AsyncExitStack()
        handed_off = False
        try:
            response = await stack.enter_async_context(
                self.http.stream(
                    "GET",
                    f"{request.status_url}/stream",
                    params={"logs": "0"},
                    headers={"accept": "text/event-stream", "cache-control": "no-store"},
                    timeout=httpx.Timeout(30.0, read=self.stream_idle_s),
                )
            )
            await _check_stream(response)
            lines = response.aiter_lines()
            events = comments = 0
            async with asyncio.timeout(loop.time() + self.stream_idle_s) as deadline:
                async for data in _sse_data(lines):
                    if data is None:  # a comment: fal's keep-alive between events
                        comments += 1
                        if not events and comments >= IDLE_COMMENTS:
                            raise StreamBroken("status stream sends keep-alives only")
                        continue
                    status = _status_of(data)
                    if status is None:
                        continue
                    events += 1
                    deadline.reschedule(loop.time() + self.stream_idle_s)
                    if status.get("status") == "COMPLETED":
                        # Answer now (the caller frees its slot); read the end meanwhile.
                        task = asyncio.create_task(_drain(lines, stack))
                        self._background.add(task)
                        task.add_done_callback(self._background.discard)
                        handed_off = True
                        return FinalStatus(
                            status.get("error"),
                            status.get("error_type"),
                            status.get("metrics") or {},
                        )
                    if status.get("status") in ("IN_QUEUE", "IN_PROGRESS"):
                        note(status["status"], status.get("queue_position"))
        except TimeoutError:
            raise StreamBroken(f"no status event for {self.stream_idle_s:.0f}s") from None
        finally:
            if not handed_off:
                await stack.aclose()
        raise StreamBroken("status stream closed before COMPLETED")

    # -- result, cancel -----------------------------------------------------------------------

    async def result(self, request: QueuedRequest, *, attempts: int = 4) -> Result:
        """GET the output. Ingress errors and transport failures of this idempotent GET are
        retried here; anything else (the model's own error, 401, expiry) is raised."""
        self.calls["result"] += 1
        response = await self._idempotent("GET", request.response_url, attempts, timeout=120.0)
        raise_for_status(response)
        return Result(response.json(), dict(response.headers))

    async def cancel(self, request: QueuedRequest, *, attempts: int = 4) -> str:
        """What fal answered: ``cancelled`` (left the queue, never billed), ``requested``
        (running: it may still finish and be billed), ``already_completed`` or ``not_found``.

        fal documents the answer in the body's ``status``; the codes (202/400/404) only on
        third-party pages, so they decide only when the body names nothing."""
        self.calls["cancel"] += 1
        response = await self._idempotent("PUT", request.cancel_url, attempts, timeout=30.0)
        try:
            body = response.json()
        except ValueError:
            body = None
        named = body.get("status") if isinstance(body, dict) else None
        if isinstance(named, str) and named.upper() in CANCEL_ANSWERS:
            return CANCEL_ANSWERS[named.upper()]
        if response.status_code in CANCEL_CODES:
            return CANCEL_CODES[response.status_code]
        raise_for_status(response)
        return "requested"  # a 2xx that names nothing: fal took the cancel

    async def _idempotent(
        self, method: str, url: str, attempts: int, *, timeout: float
    ) -> httpx.Response:
        """One idempotent call, retried on transport failures and ingress errors (fal's proxy
        answering instead of fal); the last answer, whatever it is, is returned."""
        for attempt in range(1, attempts + 1):
            try:
                response = await self.http.request(method, url, timeout=timeout)
            except (httpx.TransportError, httpx.TimeoutException):
                if attempt == attempts:
                    raise
            else:
                ingress = is_ingress_error(response.status_code, response.headers, response.text)
                if not ingress or attempt == attempts:
                    return response
            await asyncio.sleep(min(5.0, 0.2 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    # -- history ------------------------------------------------------------------------------

    async def find_in_history(
        self,
        endpoint: str,
        payload: dict[str, Any],
        since: datetime,
        *,
        exclude: frozenset[str] = frozenset(),
        pages: int = 5,
    ) -> HistoryAnswer:
        """The request with exactly this input submitted since ``since``, if fal lists one,
        and whether the history proves fal has none (``caught_up``).

        fal's history lists requests per endpoint with their ``json_input``; a submit whose
        answer was lost is adopted from here instead of being sent (and billed) again.
        Requests in ``exclude`` (already journalled for other jobs) are never adopted. Not
        finding it proves nothing by itself (the history may lag, or list finished requests
        only); an unfinished request sent clearly after ``since`` does: the history lists
        live requests and has caught up past our submit. Raises fal_client's error when the
        history does not answer (absent, forbidden, down).
        """
        caught_up = False
        wanted = canonical_json(payload)
        params: dict[str, Any] = {
            "endpoint_id": endpoint,
            "start": (since - CLOCK_SKEW).isoformat(),
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
                caught_up = caught_up or _live_and_sent_after(item, since)
                if request_id in exclude or _submitted_before(item, since):
                    continue
                if candidate is not None and canonical_json(candidate) == wanted:
                    return HistoryAnswer(self.request_for(endpoint, request_id), True)
            cursor = data.get("next_cursor") if isinstance(data, dict) else None
            if not cursor or not data.get("has_more", True):
                break
            params["cursor"] = cursor
        return HistoryAnswer(None, caught_up)


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


async def _check_stream(response: httpx.Response) -> None:
    """Raise unless ``response`` is a status stream: :class:`StreamAbsent` when the host has
    none (404/405, another content type), fal_client's error for any other failure."""
    if not response.is_success:
        await response.aread()
        if response.status_code in STREAM_ABSENT_CODES:
            raise StreamAbsent(f"status stream answered {response.status_code}")
        raise_for_status(response)
    kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "text/event-stream":
        raise StreamAbsent(f"status stream answered {kind or 'no content type'}")


async def _sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str | None]:
    """The ``data`` of each server-sent event, and None for each comment line (keep-alives
    count: a stream of comments only carries no status)."""
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith(":"):
            yield None
        elif line.startswith("data"):
            field, _, value = line.partition(":")
            if field == "data":
                data.append(value[1:] if value.startswith(" ") else value)


def _status_of(data: str) -> dict[str, Any] | None:
    try:
        status = json.loads(data)
    except ValueError:
        return None
    return status if isinstance(status, dict) and isinstance(status.get("status"), str) else None


def poll_delay(
    *,
    state: str,
    position: int | None,
    running: float,
    latency_s: float,
    in_progress_s: float | None,
) -> float:
    """Seconds until the next status poll of a request, from what fal last said of it.

    Queued at ``position``: it starts after ``position + 1`` of the ``running`` requests ahead
    finish (one every ``latency / running`` s), then runs ``latency``; ask at that expected
    end. Running for ``in_progress_s``: ask at its expected end; once overdue, every
    ``POLL_OVERDUE_SHARE`` of the latency, growing with how overdue it is, so a slow render
    costs a few polls, not one per second. A late answer costs a render's latency, not the
    account's throughput, when fal holds a short queue of ours (see the engine's limiter).
    """
    step = POLL_OVERDUE_SHARE * latency_s
    if state != "IN_PROGRESS":  # queued, or just submitted
        ahead = (position or 0) + 1
        return max(step, ahead * latency_s / max(1, running) + latency_s)
    ran = in_progress_s or 0.0
    remaining = latency_s - ran
    if remaining > step:
        return remaining
    overdue = max(0.0, -remaining) / latency_s
    return step * (1.0 + overdue)


def _submitted_before(item: dict[str, Any], since: datetime) -> bool:
    """True when the item says it was sent before ``since`` (a server may ignore ``start``)."""
    when = _sent_at(item, since)
    return when is not None and when < since - CLOCK_SKEW


def _live_and_sent_after(item: dict[str, Any], since: datetime) -> bool:
    """An unfinished request (no ``ended_at``) sent clearly after ``since``, by fal's clock."""
    when = _sent_at(item, since)
    return item.get("ended_at") is None and when is not None and when > since + CLOCK_SKEW


def _sent_at(item: dict[str, Any], since: datetime) -> datetime | None:
    for name in ("sent_at", "submitted_at", "created_at", "started_at"):
        value = item.get(name)
        if isinstance(value, str):
            try:
                when = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return when.replace(tzinfo=since.tzinfo) if when.tzinfo is None else when
    return None


__all__ = [
    "AmbiguousSubmit",
    "FinalStatus",
    "HistoryAnswer",
    "QueueClient",
    "QueuedRequest",
    "Result",
    "StreamAbsent",
    "StreamBroken",
    "endpoint_app",
    "poll_delay",
    "raise_for_status",
]
