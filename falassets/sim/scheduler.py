"""The emulated account: accepted requests, the concurrency limit, timing and outcomes.

Everything runs on the server's event loop: completions are ``call_later`` timers and state
changes wake waiters (one future per open status stream), so hundreds of streams and
thousands of queued requests cost nothing while nothing changes. Times are wall-clock
(``time.time()``) so a restarted emulator can carry on from a state file.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from falassets.sim.config import SimConfig
from falassets.sim.faults import FaultPlan, draw, plan_faults
from falassets.sim.rules import DEFAULT_QUALITY, price_usd, resolve_size

ENDPOINTS = ("openai/gpt-image-2", "openai/gpt-image-2/edit")
#: How long a content-policy refusal takes, as a share of the normal latency (it is quick).
POLICY_LATENCY_SHARE = 0.15


class LimitReached(Exception):
    """``--mode reject`` and the account already has ``concurrency`` requests in flight."""


class QueueFull(Exception):
    """The submit's ``fal_max_queue_length`` is already exceeded."""


def canonical(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


@dataclass(eq=False)  # identity hash: requests live in sets of watched streams
class SimRequest:
    """One accepted request. ``outcome`` is None until COMPLETED, then ``ok`` or an error type."""

    request_id: str
    endpoint: str
    input: dict[str, Any]
    input_key: str
    occurrence: int
    ticket: int
    plan: FaultPlan
    duration: float  # seconds of (scaled) inference once running
    submitted_at: float
    gateway_request_id: str = ""
    status: str = "IN_QUEUE"
    started_at: float | None = None
    completed_at: float | None = None
    outcome: str | None = None
    error: str | None = None
    billed: bool = False
    cost_usd: float = 0.0
    cancel_requested: bool = False
    expires_at: float | None = None
    start_deadline: float | None = None
    submit_lost: bool = False
    polls: int = 0
    result_gets: int = 0  # of a successful result (knob result_5xx)
    behind_history: bool = False  # submitted while history was paused (config.history_paused)
    waiters: list[asyncio.Future[None]] = field(default_factory=list, repr=False)
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def app(self) -> str:
        """``owner/alias``: status, result and cancel URLs never carry the sub-path."""
        return "/".join(self.endpoint.split("/")[:2])

    @property
    def is_edit(self) -> bool:
        return self.endpoint.endswith("/edit")

    @property
    def draw_key(self) -> str:
        return f"{self.input_key}#{self.occurrence}"

    def snapshot(self) -> dict[str, Any]:
        """Persistable state (state file, ledger file)."""
        return {
            "request_id": self.request_id,
            "endpoint": self.endpoint,
            "input": self.input,
            "occurrence": self.occurrence,
            "ticket": self.ticket,
            "plan": self.plan.names(),
            "duration": self.duration,
            "submitted_at": self.submitted_at,
            "gateway_request_id": self.gateway_request_id,
            "status": self.status,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "outcome": self.outcome,
            "error": self.error,
            "billed": self.billed,
            "cost_usd": self.cost_usd,
            "cancel_requested": self.cancel_requested,
            "expires_at": self.expires_at,
            "start_deadline": self.start_deadline,
            "submit_lost": self.submit_lost,
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> SimRequest:
        plan = FaultPlan(**{name: True for name in data.get("plan", [])})
        fields = {k: v for k, v in data.items() if k not in ("plan",)}
        return cls(input_key=canonical(data["input"]), plan=plan, **fields)


class Scheduler:
    """Accepts, queues, runs and finishes requests under one :class:`SimConfig`."""

    def __init__(self, config: SimConfig, *, on_change: Any = None) -> None:
        self.on_change = on_change  # called with a request after each persistent change
        #: Pixel sizes of an edit's input images, when known (the app knows its own files).
        self.input_sizes: Callable[[SimRequest], list[tuple[int, int]]] = lambda _: []
        self._clear(config)

    def _clear(self, config: SimConfig) -> None:
        self.config = config
        self.requests: dict[str, SimRequest] = {}
        self.waiting: list[int] = []  # tickets of IN_QUEUE requests, ascending (FIFO)
        self.by_ticket: dict[int, SimRequest] = {}
        self.running: set[str] = set()
        self.peak_running = 0
        self.rejected_429 = 0
        self.ingress_503 = 0
        self.http: Counter[str] = Counter()
        self.occurrences: Counter[str] = Counter()
        self.next_ticket = 0
        self.watched: set[SimRequest] = set()  # requests with an open status stream

    # -- submit ----------------------------------------------------------------------------------

    def latency(self, payload: dict[str, Any], draw_key: str) -> float:
        """Seconds of inference: the quality's mean, a little more for big sizes and several
        images, deterministic jitter (0.7x..1.5x, skewed like real latencies), times scale."""
        quality = payload.get("quality", DEFAULT_QUALITY)
        width, height = resolve_size(
            payload.get("image_size", "auto" if "image_urls" in payload else None)
        )
        size_factor = max(1.0, (width * height) / (1024 * 1024)) ** 0.35
        count_factor = 1.0 + 0.15 * (int(payload.get("num_images", 1)) - 1)
        u = draw(self.config.seed, "latency", draw_key)
        jitter = 0.7 + 0.8 * u * u
        mean = self.config.latency_mean(quality)
        return mean * size_factor * count_factor * jitter * self.config.time_scale

    def in_flight(self) -> int:
        """Requests still queued or running (what a reset would orphan)."""
        return len(self.running) + len(self.waiting)

    def submit(
        self,
        endpoint: str,
        payload: dict[str, Any],
        *,
        start_timeout: float | None = None,
        max_queue_length: int | None = None,
    ) -> SimRequest:
        """Accept a validated input, or raise :class:`LimitReached` / :class:`QueueFull`."""
        if self.config.mode == "reject" and len(self.running) >= self.config.concurrency:
            self.rejected_429 += 1
            raise LimitReached
        if max_queue_length is not None and len(self.waiting) >= max_queue_length:
            self.rejected_429 += 1
            raise QueueFull
        input_key = canonical(payload)
        occurrence = self.occurrences[f"{endpoint}|{input_key}"]
        self.occurrences[f"{endpoint}|{input_key}"] += 1
        prompt = str(payload.get("prompt", ""))
        plan = plan_faults(self.config, prompt, f"{endpoint}|{input_key}", occurrence)
        now = time.time()
        request = SimRequest(
            request_id=str(uuid.uuid4()),
            endpoint=endpoint,
            input=payload,
            input_key=input_key,
            occurrence=occurrence,
            ticket=self.next_ticket,
            plan=plan,
            duration=0.0,
            submitted_at=now,
            gateway_request_id=str(uuid.uuid4()),
            start_deadline=now + start_timeout if start_timeout else None,
            submit_lost=plan.lose_submit,
            behind_history=self.config.history_paused,
        )
        request.duration = self.latency(payload, request.draw_key)
        if plan.policy:
            request.duration *= POLICY_LATENCY_SHARE
        self.next_ticket += 1
        self.requests[request.request_id] = request
        self._enqueue(request)
        self._changed(request)
        self.pump()
        return request

    def _enqueue(self, request: SimRequest) -> None:
        request.status = "IN_QUEUE"
        bisect.insort(self.waiting, request.ticket)
        self.by_ticket[request.ticket] = request
        if request.start_deadline is not None:
            delay = max(0.0, request.start_deadline - time.time())
            asyncio.get_running_loop().call_later(delay, self._start_timed_out, request)

    def queue_position(self, request: SimRequest) -> int:
        return bisect.bisect_left(self.waiting, request.ticket)

    # -- running ---------------------------------------------------------------------------------

    def pump(self) -> None:
        """Start queued requests while the account has room (FIFO)."""
        started = False
        while self.waiting and len(self.running) < self.config.concurrency:
            ticket = self.waiting.pop(0)
            request = self.by_ticket.pop(ticket)
            self._start(request)
            started = True
        if started:  # everyone behind moved up: their streams get the new position
            self._wake_queued_watchers()

    def _start(self, request: SimRequest, *, started_at: float | None = None) -> None:
        request.status = "IN_PROGRESS"
        request.started_at = started_at or time.time()
        self.running.add(request.request_id)
        self.peak_running = max(self.peak_running, len(self.running))
        self._changed(request)
        if not request.plan.hang:
            remaining = request.started_at + request.duration - time.time()
            loop = asyncio.get_running_loop()
            request.timer = loop.call_later(max(0.0, remaining), self._finish, request)

    def _finish(self, request: SimRequest) -> None:
        if request.status != "IN_PROGRESS" or self.requests.get(request.request_id) is not request:
            return
        if request.plan.policy:
            outcome, error = (
                "content_policy_violation",
                "The prompt was flagged by the content checker.",
            )
        elif request.plan.error_5xx:
            outcome, error = "runner_server_error", "Runner failed with an internal server error."
        else:
            outcome, error = "ok", None
        self._complete(request, outcome, error, billed=outcome == "ok")

    def _complete(
        self, request: SimRequest, outcome: str, error: str | None, *, billed: bool
    ) -> None:
        now = time.time()
        request.status = "COMPLETED"
        request.completed_at = now
        request.outcome = outcome
        request.error = error
        request.billed = billed
        request.cost_usd = (
            price_usd(request.input, edit=request.is_edit, input_sizes=self.input_sizes(request))
            if billed
            else 0.0
        )
        ttl = 0.0 if request.plan.expire else self.config.result_ttl * self.config.time_scale
        request.expires_at = now + ttl
        if request.timer is not None:
            request.timer.cancel()
            request.timer = None
        self.running.discard(request.request_id)
        self._changed(request)
        self.pump()

    def _start_timed_out(self, request: SimRequest) -> None:
        """X-Fal-Request-Timeout: a request still queued at its deadline ends as a timeout."""
        if request.status != "IN_QUEUE" or self.requests.get(request.request_id) is not request:
            return
        self._dequeue(request)
        self._complete(
            request, "request_timeout", "Request timed out before it started.", billed=False
        )

    def _dequeue(self, request: SimRequest) -> None:
        index = bisect.bisect_left(self.waiting, request.ticket)
        if index < len(self.waiting) and self.waiting[index] == request.ticket:
            self.waiting.pop(index)
            self._wake_queued_watchers()
        self.by_ticket.pop(request.ticket, None)

    # -- cancel ----------------------------------------------------------------------------------

    def cancel(self, request: SimRequest) -> str:
        """fal's answer: ``OK`` (removed from the queue), ``CANCELLATION_REQUESTED`` (running)
        or ``ALREADY_COMPLETED``. A running request finishes anyway (GPT Image 2 cannot be
        stopped mid-render, and is billed) unless it is stuck (a hang): that ends cancelled."""
        if request.status == "COMPLETED":
            return "ALREADY_COMPLETED"
        request.cancel_requested = True
        if request.status == "IN_QUEUE":
            self._dequeue(request)
            self._complete(request, "client_cancelled", "Request was cancelled.", billed=False)
            return "OK"
        if request.plan.hang:
            self._complete(request, "client_cancelled", "Request was cancelled.", billed=False)
        else:
            self._changed(request)
        return "CANCELLATION_REQUESTED"

    # -- notification ----------------------------------------------------------------------------

    def _wake_queued_watchers(self) -> None:
        """Queue positions moved: wake the streams of queued requests (only those that have
        a stream open, so a long queue nobody watches costs nothing)."""
        for request in [r for r in self.watched if r.status == "IN_QUEUE"]:
            self._wake(request)

    def _wake(self, request: SimRequest) -> None:
        self.watched.discard(request)
        waiters, request.waiters = request.waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def _changed(self, request: SimRequest) -> None:
        self._wake(request)
        if self.on_change is not None:
            self.on_change(request)

    async def wait_for_change(self, request: SimRequest, timeout: float) -> bool:
        """Wait until ``request`` changes (True) or ``timeout`` passes (False)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        request.waiters.append(future)
        self.watched.add(request)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        finally:  # timed out, or the client went away (cancelled): stop watching
            if future in request.waiters:
                request.waiters.remove(future)
            if not request.waiters:
                self.watched.discard(request)
        return True

    # -- admin -----------------------------------------------------------------------------------

    def reconfigure(self, config: SimConfig) -> None:
        """New knobs; a larger limit starts queued requests at once."""
        self.config = config
        self.pump()

    def reset(self, config: SimConfig) -> None:
        """Forget every request and counter; open streams of old requests close."""
        for request in self.requests.values():
            if request.timer is not None:
                request.timer.cancel()
            request.status = "FORGOTTEN"
            self._wake(request)
        self._clear(config)

    def restore(self, snapshots: list[dict[str, Any]]) -> None:
        """Carry on after a restart: finished requests stay finished, running ones finish at
        their planned time (or now, if that passed), queued ones queue again in order."""
        now = time.time()
        for data in sorted(snapshots, key=lambda d: d["ticket"]):
            request = SimRequest.from_snapshot(data)
            self.requests[request.request_id] = request
            self.occurrences[f"{request.endpoint}|{request.input_key}"] = max(
                self.occurrences[f"{request.endpoint}|{request.input_key}"], request.occurrence + 1
            )
            self.next_ticket = max(self.next_ticket, request.ticket + 1)
            if request.status == "IN_PROGRESS":
                self._start(request, started_at=request.started_at or now)
            elif request.status == "IN_QUEUE":
                self._enqueue(request)
        self.pump()
