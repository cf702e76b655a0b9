"""The render engine: a batch of jobs in, outcomes out as they complete.

Per job, in order: answer from lineage when the identical job already completed (no request,
no bill); resume a request an earlier (crashed) run left pending; adopt a request a crashed
submit left at fal; otherwise submit. Every submit is one HTTP attempt under the machine-wide
limiter, its row is fsynced before we wait on it, waiting is one status stream, and the output
is downloaded and verified the moment it is ready. Failures are handled by kind
(:mod:`falassets.engine.retry`). A bounded set of workers pulls jobs lazily, so 10,000 jobs cost
no more memory than 20.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
from fal_client import FalClientHTTPError

from falassets.engine import downloads
from falassets.engine.intents import IntentLog, OpenIntent
from falassets.engine.jobs import RenderJob, RenderOutcome
from falassets.engine.limiter import AdaptiveLimiter, CapUnavailable
from falassets.engine.orphan_holds import OrphanHolds, OrphanPolicy
from falassets.engine.pricing import estimate
from falassets.engine.queue_client import (
    AmbiguousSubmit,
    FinalStatus,
    QueueClient,
    QueuedRequest,
)
from falassets.engine.records import (
    PriorWork,
    RequestJournal,
    mark_pending,
    mark_ran,
    mark_started,
    new_row,
    resumed_row,
)
from falassets.engine.results import (
    bill,
    expected_size,
    image_fields,
    image_urls,
    kept_url,
    stored_fields,
)
from falassets.engine.retry import (
    TLS_UNTRUSTED,
    Action,
    Failure,
    backoff_delay,
    classify_exception,
    is_transport_failure,
)
from falassets.lineage.journal import age_s, utc_now
from falassets.lineage.passes import DEFAULT_CONCURRENCY
from falassets.lineage.variants import images_asked, request_images
from falassets.storage.renders import RenderStore


class FalAuthError(RuntimeError):
    """fal cannot be used as configured: it refused the key (401/403), or its host's TLS
    certificate is not trusted here. Stops the whole batch; the message names the fix and
    never holds the key."""

    def __init__(self, message: str, error_type: str = "unauthorized") -> None:
        super().__init__(message)
        self.error_type = error_type

    @property
    def untrusted_host(self) -> bool:
        return self.error_type == TLS_UNTRUSTED


class EventLog(Protocol):
    """What the engine needs of a logger: ``logging.Logger`` and Dagster's ``context.log``."""

    def info(self, msg: str, *args: Any) -> Any: ...
    def warning(self, msg: str, *args: Any) -> Any: ...


@dataclass(frozen=True)
class Progress:
    """A snapshot for progress displays (CLI bar, Dagster run log)."""

    total: int
    done: int
    failed: int
    in_flight: int
    queued: int
    spend_usd: float
    elapsed_s: float
    waiting_at_fal: int = 0  # ours that fal holds IN_QUEUE (the account's limit is reached)
    running_at_fal: int = 0  # ours fal reports IN_PROGRESS: the running level it grants

    @property
    def renders_per_minute(self) -> float:
        return 60.0 * (self.done + self.failed) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        finished = self.done + self.failed
        if finished == 0:
            return None
        return (self.total - finished) * self.elapsed_s / finished


@dataclass(frozen=True)
class EngineConfig:
    """Knobs of one engine (the resource's fields plus a few for tests and benchmarks)."""

    concurrency: int = DEFAULT_CONCURRENCY
    submit_timeout_s: float = 30.0
    render_timeout_s: float = 900.0
    retry_budget: int = 4  # submits per job for retryable failures (429s not counted)
    budget_usd: float | None = None
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    max_rate_limited: int = 200  # 429s one job may absorb before it is failed
    download_attempts: int = 3
    # How long a lost submit waits for fal's history to answer (absent, forbidden, lagging)
    # before it is recorded submit_unconfirmed instead of being sent again.
    history_wait_s: float = 120.0
    # Requests kept at fal beyond `concurrency`, which a queueing fal holds IN_QUEUE: the next
    # starts the moment one finishes, however late a status poll notices. 0 (default): at
    # most `concurrency` at fal, as the --concurrency contract says; see engine/session.py.
    queue_ahead: int = 0
    # default 4 x concurrency: a worker whose request finished fetches and verifies the output
    # while others submit, so slow downloads never leave a slot idle.
    workers: int | None = None


class _Stop(Exception):
    """Internal: the batch is over for this job (budget, auth)."""


_DONE = object()


SUBMIT_UNCONFIRMED = "submit_unconfirmed"


@dataclass(frozen=True)
class _LookUp:
    """A history look-up's verdict: the request fal has, proof it has none (``request`` None,
    ``unconfirmed`` False), or neither (``reason`` says why)."""

    request: QueuedRequest | None
    unconfirmed: bool = False
    reason: str = ""


@dataclass
class _Attempt:
    """The outcome of following one request to its end."""

    row: dict[str, Any]
    outcome: str  # completed | failed | cancelled
    failure: Failure | None = None


class RenderEngine:
    """Renders jobs through fal's queue with a machine-wide in-flight cap, retries by failure
    kind, crash-safe lineage, idempotent reuse, budget cap and verified downloads."""

    def __init__(
        self,
        *,
        queue: QueueClient,
        download_http: httpx.AsyncClient,
        limiter: AdaptiveLimiter,
        journal: RequestJournal,
        intents: IntentLog,
        journal_dir: Path,
        renders: RenderStore,
        run_id: str,
        simulated: bool,
        config: EngineConfig | None = None,
        log: EventLog | None = None,
        secret: str | None = None,
        orphans: OrphanPolicy | None = None,
    ) -> None:
        self.queue = queue
        self.download_http = download_http
        self.limiter = limiter
        self.journal = journal
        self.intents = intents
        self.journal_dir = journal_dir
        self.renders = renders
        self.run_id = run_id
        self.simulated = simulated
        self.config = config or EngineConfig()
        self.log: EventLog = log or logging.getLogger("falassets.engine")
        # A dead run's requests still at fal keep their places under the cap (issue 11); with
        # a shared database its table does that for every host (engine/cap_postgres.py).
        self.orphans = orphans or OrphanHolds(
            limiter, queue, render_timeout_s=self.config.render_timeout_s
        )
        self._secret = secret
        self._started = time.monotonic()
        self._total = 0
        self._done = 0
        self._failed = 0
        self._spend = 0.0
        self._reserved = 0.0
        self._budget_stopped = False
        self._auth_error: FalAuthError | None = None
        self._prior = PriorWork()
        self._open_intents: dict[str, list[OpenIntent]] = {}
        self._in_batch: dict[str, asyncio.Future[RenderOutcome]] = {}
        self._download_gate = asyncio.Semaphore(max(2, 2 * self.config.concurrency))
        # One thread for journal fsyncs: in order, and never queued behind image decoding.
        self._journal_thread = ThreadPoolExecutor(1, thread_name_prefix="falassets-journal")
        self.rate_limited = 0
        self.submits = 0
        self.ambiguous_submits = 0  # submit answers lost this batch: reconcile at its end
        self.reconciled: Any = None  # the ReconcileReport of this batch, when one ran
        self._batch_start = datetime.now(UTC)

    # -- public ---------------------------------------------------------------------------------

    def progress(self) -> Progress:
        finished = self._done + self._failed
        in_flight = self.limiter.in_flight
        return Progress(
            total=self._total,
            done=self._done,
            failed=self._failed,
            in_flight=in_flight,
            queued=max(0, self._total - finished - in_flight),
            spend_usd=round(self._spend, 6),
            elapsed_s=time.monotonic() - self._started,
            waiting_at_fal=self.queue.waiting_at_fal,
            running_at_fal=self.queue.running_at_fal,
        )

    async def render(self, jobs: Iterable[RenderJob]) -> AsyncIterator[RenderOutcome]:
        """Yield one outcome per job, in completion order. Raises FalAuthError at once on a
        wrong key. Jobs beyond the budget cap come back as status 'skipped' with
        error_type 'budget_exceeded'."""
        self._prior = await asyncio.to_thread(PriorWork.load, self.journal_dir)
        self._open_intents = await asyncio.to_thread(self.intents.open_intents)
        await self.orphans.start(self._prior.pending)  # before anything is submitted
        self._started = time.monotonic()
        self._batch_start = datetime.now(UTC)
        sized = getattr(jobs, "__len__", None)
        self._total = int(sized()) if callable(sized) else 0
        self._count_fed = not callable(sized)
        feed = iter(jobs)
        workers = self.config.workers or 4 * self.config.concurrency + 4
        results: asyncio.Queue[Any] = asyncio.Queue(maxsize=workers)
        tasks = [asyncio.create_task(self._worker(feed, results)) for _ in range(workers)]
        running = len(tasks)
        try:
            while running:
                item = await results.get()
                if item is _DONE:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
            if self._auth_error is not None:
                raise self._auth_error
            if self.ambiguous_submits:
                await self._reconcile_orphans()
            await self.orphans.wait()  # a dead run's requests hold places until they finish
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.orphans.aclose()

    async def _reconcile_orphans(self) -> None:
        """A submit answer was lost this batch, so fal may hold a request lineage does not
        name (its history may have lagged our look-up): record it now (engine/reconcile.py)."""
        from falassets.engine.reconcile import reconcile

        try:
            self.reconciled = await reconcile(self, since=self._batch_start - timedelta(minutes=1))
        except (FalClientHTTPError, httpx.TransportError, httpx.TimeoutException) as error:
            reason = self._classify(error).message
            self.log.warning(
                f"could not reconcile lost submits with fal's history ({reason}); "
                "run `falassets reconcile` later"
            )

    def close(self) -> None:
        """Wait for journal writes in progress (the session calls this on exit)."""
        self._journal_thread.shutdown(wait=True)

    # -- workers ---------------------------------------------------------------------------------

    async def _worker(self, feed: Iterator[RenderJob], results: asyncio.Queue[Any]) -> None:
        while self._auth_error is None:
            try:
                job = next(feed)
            except StopIteration:
                break
            if self._count_fed:
                self._total += 1
            try:
                outcome = await self._job(job)
            except FalAuthError as error:
                if self._auth_error is None:
                    self._auth_error = error
                    self.log.warning(str(error))
                    await results.put(error)
                break
            except _Stop:
                break
            except Exception as error:  # a bug must not sink the other 9,999 jobs
                logging.getLogger(__name__).exception("render of %s failed", job.partition_key)
                outcome = RenderOutcome(
                    job,
                    "failed",
                    error_type="internal_error",
                    error_message=self._redact(f"{type(error).__name__}: {error}"),
                )
            if outcome.status == "completed":
                self._done += 1
            else:
                self._failed += 1
            await results.put(outcome)
        await results.put(_DONE)

    async def _job(self, job: RenderJob) -> RenderOutcome:
        """One job from start to outcome, sharing the work of an identical job in this batch."""
        if not job.force:
            reused = await self._reuse(job)
            if reused is not None:
                return reused
            twin = self._in_batch.get(job.key)
            if twin is not None:
                # An identical job of this batch is rendering: share its answer, not its bill.
                outcome = await asyncio.shield(twin)
                return replace(outcome, job=job, reused=outcome.ok, cost_usd=0.0, request_ids=())
            future: asyncio.Future[RenderOutcome] = asyncio.get_running_loop().create_future()
            self._in_batch[job.key] = future
            try:
                outcome = await self._render(job)
                future.set_result(outcome)
                return outcome
            except BaseException as error:
                future.set_exception(error)
                future.exception()  # mark retrieved: a twin may never look
                raise
            finally:
                if self._in_batch.get(job.key) is future:
                    del self._in_batch[job.key]
        return await self._render(job)

    async def _reuse(self, job: RenderJob) -> RenderOutcome | None:
        """The earlier completed render of this exact job, if every image of it (each
        variant) is still intact."""
        prior = self._prior.completed.get(job.key)
        if prior is None:
            return None
        images = request_images(prior)  # completed rows have an image: at least variant 1
        for image in images:
            location = image["image_path"]
            try:
                sha: str | None = await asyncio.to_thread(self.renders.sha256, location)
            except OSError:
                sha = None
            if sha is None or sha != image["sha256"]:
                self.log.warning(
                    f"{job.partition_key}: earlier render {location} is missing or changed; "
                    "rendering again"
                )
                return None
        return RenderOutcome(
            job,
            "completed",
            request_id=prior.get("request_id"),
            **image_fields(prior),
            sha256=prior.get("sha256"),
            width=prior.get("width"),
            height=prior.get("height"),
            cost_usd=0.0,
            reused=True,
            images=tuple(images),
        )

    # -- one job ---------------------------------------------------------------------------------

    async def _render(self, job: RenderJob) -> RenderOutcome:
        request_ids: list[str] = []
        attempt = self._prior.max_attempt.get(job.key, 0)
        submits = 0
        rate_limited = 0
        expired_resubmitted = False
        last: _Attempt | None = None

        # A request an earlier run left at fal is followed, never submitted again.
        for prior in self._prior.pending.pop(job.key, []):
            row = resumed_row(job, prior, simulated=self.simulated)
            self.log.info(f"{job.partition_key}: resuming pending request {row['request_id']}")
            request = QueuedRequest(
                row["request_id"], row["status_url"], row["response_url"], row["cancel_url"]
            )
            last = await self._follow(job, row, request)
            request_ids.append(row["request_id"])
            if last.outcome != "failed" or not self._may_retry(last.failure):
                return self._outcome(job, last, request_ids, submits)
            expired_resubmitted |= last.failure is not None and (
                last.failure.action is Action.EXPIRED
            )

        # A submit a crashed process sent but never recorded: adopt it from fal's history.
        for intent in self._open_intents.pop(job.key, []):
            since = datetime.fromisoformat(intent.sent_at)
            # --force pays again knowingly: one look (adopt what fal lists), no waiting for proof
            found = await self._look_up(job, since, patient=not job.force)
            if found.unconfirmed and not job.force:  # the intent stays open: never twice
                row = new_row(job, run_id=self.run_id, simulated=self.simulated, attempt=attempt)
                row["submitted_at"] = intent.sent_at
                last = await self._unconfirmed(
                    job, row, "an earlier submit's answer was lost", found
                )
                return self._outcome(job, last, request_ids, submits)
            if found.unconfirmed:
                self.log.warning(
                    f"{job.partition_key}: an earlier submit may be at fal ({found.reason}); "
                    "submitting again because of --force"
                )
            request = found.request
            if request is None:  # fal never got it (or --force pays again): nothing to adopt
                self.intents.resolved(intent.intent_id)
            else:
                attempt += 1
                sender = intent.run_id or self.run_id  # its bill is the sending run's spend
                row = new_row(job, run_id=sender, simulated=self.simulated, attempt=attempt)
                row.update(submitted_at=intent.sent_at, error_message="adopted from fal history")
                mark_pending(row, request)
                # The open intent is all that says this input is at fal until its row is on
                # disk: closed first, a kill in between let the next run submit it again.
                await self._write(row)
                self.intents.resolved(intent.intent_id)
                self.log.info(f"{job.partition_key}: adopted orphan request {request.request_id}")
                last = await self._follow(job, row, request)
                request_ids.append(request.request_id)
                if last.outcome != "failed" or not self._may_retry(last.failure):
                    return self._outcome(job, last, request_ids, submits)

        while True:
            if self._auth_error is not None:
                raise _Stop()
            price = estimate(job.input, endpoint=job.endpoint).max_usd  # the cap's worst case
            if not self._reserve(price):
                return RenderOutcome(
                    job,
                    "skipped",
                    error_type="budget_exceeded",
                    error_message=(
                        f"budget cap ${self.config.budget_usd:.2f} reached "
                        f"(${self._spend:.2f} spent); not submitted"
                    ),
                    attempts=submits,
                    request_ids=tuple(request_ids),
                )
            try:
                attempt += 1
                submits += 1
                step = await self._submit_and_follow(job, attempt, price)
            except CapUnavailable as error:  # limiter.slot(): the cap cannot be enforced
                attempt -= 1
                submits -= 1
                step = Failure(Action.REFUSED, "cap_unavailable", str(error))  # never sent
            finally:
                self._reserved -= price
            if isinstance(step, Failure):  # nothing accepted: 429 or a failed submit
                if step.action is Action.RATE_LIMITED:
                    attempt -= 1
                    submits -= 1
                    rate_limited += 1
                    if rate_limited <= self.config.max_rate_limited:
                        continue
                if step.action is Action.RETRY and submits < self.config.retry_budget:
                    await self._backoff(job, submits, step)
                    continue
                return RenderOutcome(
                    job,
                    "failed",
                    error_type=step.error_type,
                    error_message=step.message,
                    http_status=step.http_status,
                    attempts=submits,
                    request_ids=tuple(request_ids),
                )
            last = step
            request_ids.append(step.row["request_id"])
            failure = step.failure
            if step.outcome == "failed" and failure is not None:
                if failure.action is Action.EXPIRED and not expired_resubmitted:
                    expired_resubmitted = True
                    submits -= 1  # fal lost our result; resubmitting once is not our retry
                    self.log.warning(f"{job.partition_key}: result expired; resubmitting once")
                    continue
                if failure.action is Action.RETRY and submits < self.config.retry_budget:
                    await self._backoff(job, submits, failure)
                    continue
            return self._outcome(job, step, request_ids, submits)

    def _may_retry(self, failure: Failure | None) -> bool:
        return failure is not None and failure.action in (Action.RETRY, Action.EXPIRED)

    async def _backoff(self, job: RenderJob, retry: int, failure: Failure) -> None:
        delay = backoff_delay(
            retry, base_s=self.config.backoff_base_s, cap_s=self.config.backoff_cap_s
        )
        self.log.info(
            f"{job.partition_key}: {failure.error_type} ({failure.message[:120]}); "
            f"retry {retry}/{self.config.retry_budget - 1} in {delay:.1f}s"
        )
        await asyncio.sleep(delay)

    def _reserve(self, price: float) -> bool:
        """Hold ``price`` (a request's upper bound) against the cap: spent plus every
        in-flight request's most possible bill stays within it, so fal's bill cannot cross it
        even when the estimate is low."""
        budget = self.config.budget_usd
        if self._budget_stopped:
            return False
        if budget is not None and self._spend + self._reserved + price > budget + 1e-9:
            self._budget_stopped = True
            self.log.warning(
                f"Budget cap ${budget:.2f} reached (${self._spend:.2f} spent, "
                f"up to ${self._reserved:.2f} in flight, next request up to ${price:.2f}): "
                "no further requests are submitted; remaining jobs are skipped"
            )
            return False
        self._reserved += price
        return True

    async def _submit_and_follow(
        self, job: RenderJob, attempt: int, price: float
    ) -> _Attempt | Failure:
        """Submit once under the limiter, record the request, wait for it, fetch the output."""
        row = new_row(job, run_id=self.run_id, simulated=self.simulated, attempt=attempt)
        async with self.limiter.slot() as epoch:
            if self._auth_error is not None:
                raise _Stop()
            sent_at = datetime.now(UTC)
            row["submitted_at"] = sent_at.isoformat(timespec="microseconds")
            # on disk before the POST; fsynced on the journal's thread, not the event loop
            intent = await asyncio.get_running_loop().run_in_executor(
                self._journal_thread, self.intents.sent, job.key, self.run_id
            )
            started = time.monotonic()
            try:
                self.submits += 1
                request = await self.queue.submit(job.endpoint, job.input)
            except AmbiguousSubmit as error:
                self.ambiguous_submits += 1
                found = await self._look_up(job, sent_at)
                if found.unconfirmed:  # the intent stays open: reconcile or --force settle it
                    return await self._unconfirmed(job, row, str(error), found)
                request = found.request
                if request is None:
                    row.update(
                        request_id=f"lost-{uuid.uuid4()}",
                        status="failed",
                        error_type="submit_lost",
                        error_message=self._redact(
                            f"{error}; fal's request history lists later requests but not "
                            "this one, so fal never got it and nothing was billed"
                        ),
                        completed_at=utc_now(),
                    )
                    await self._write(row)
                    self.intents.resolved(intent)
                    return Failure(Action.RETRY, "submit_lost", row["error_message"])
                self.log.warning(
                    f"{job.partition_key}: submit answer lost; adopted {request.request_id} "
                    "from fal's request history instead of submitting again"
                )
                row["error_message"] = "submit answer lost; adopted from fal history"
            except (FalClientHTTPError, httpx.TransportError, httpx.TimeoutException) as error:
                self.intents.resolved(intent)
                failure = self._classify(error)
                if failure.action is Action.RATE_LIMITED:
                    self.rate_limited += 1
                    hold = await self.limiter.on_rate_limited(epoch, failure.retry_after_s)
                    self.log.info(
                        f"fal answered 429; holding submits {hold:.2f}s, "
                        f"in-flight target now {self.limiter.target}"
                    )
                    return failure
                if failure.action is Action.AUTH:
                    raise FalAuthError(failure.message, failure.error_type) from None
                if failure.action is Action.REFUSED:
                    # fal refused it at the door: record it so the failure is in lineage.
                    header_id = None
                    if isinstance(error, FalClientHTTPError):
                        header_id = error.response_headers.get("x-fal-request-id")
                    row.update(
                        request_id=header_id or f"rejected-{uuid.uuid4()}",
                        status="failed",
                        error_type=failure.error_type,
                        error_message=failure.message,
                        http_status=failure.http_status,
                        completed_at=utc_now(),
                    )
                    await self._write(row)
                    return _Attempt(row, "failed", failure)
                return failure
            await self.limiter.on_accepted(request.request_id, request.status_url)  # counted by us
            mark_pending(row, request)
            await self._write(row)  # durable before we wait on it
            self.intents.resolved(intent)
            self._prior.known_request_ids.add(request.request_id)
            waited = await self._wait(job, row, request, started + self.config.render_timeout_s)
        # Once fal says COMPLETED the request no longer counts against the account's limit:
        # fetch and download outside the slot, so the next submit does not wait on them.
        if isinstance(waited, _Attempt):
            return waited
        return await self._fetch(job, row, request, started, waited)

    async def _look_up(self, job: RenderJob, since: datetime, *, patient: bool = True) -> _LookUp:
        """Find a (maybe) accepted submit in fal's history. While the history cannot answer
        (absent 404, forbidden 403, down) or does not list it yet (lag), look again with
        backoff for ``history_wait_s``: a submit is sent again only once the history proves
        fal never got it, since a second submit of an accepted one is billed twice."""
        give_up = time.monotonic() + (self.config.history_wait_s if patient else 0.0)
        reason = "fal's request history does not list it yet"
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = await self.queue.find_in_history(
                    job.endpoint,
                    job.input,
                    since,
                    exclude=frozenset(self._prior.known_request_ids),
                )
            except (FalClientHTTPError, httpx.TransportError, httpx.TimeoutException) as error:
                failure = self._classify(error)  # 403/404 here is the history, not the key
                code = f" {failure.http_status}" if failure.http_status else ""
                reason = f"fal's request history is unavailable ({failure.error_type}{code})"
            else:
                if answer.request is not None:
                    self._prior.known_request_ids.add(answer.request.request_id)
                    return _LookUp(answer.request)
                if answer.caught_up:
                    return _LookUp(None)
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                return _LookUp(None, unconfirmed=True, reason=reason)
            delay = backoff_delay(
                min(attempt, 30), base_s=self.config.backoff_base_s, cap_s=self.config.backoff_cap_s
            )
            await asyncio.sleep(min(delay, remaining))

    async def _unconfirmed(
        self, job: RenderJob, row: dict[str, Any], lost: str, found: _LookUp
    ) -> _Attempt:
        """Record a submit nobody can prove fal has or lacks; it is not sent again."""
        message = self._redact(
            f"{lost}; {found.reason} after {self.config.history_wait_s:.0f}s, so whether fal "
            "has this request is unknown and it was not sent again (that could bill twice). "
            "Run `falassets reconcile` once fal's history answers, or run again with --force "
            "to submit it anyway"
        )
        row.update(
            request_id=f"unconfirmed-{uuid.uuid4()}",
            status="failed",
            error_type=SUBMIT_UNCONFIRMED,
            error_message=message,
            completed_at=utc_now(),
        )
        await self._write(row)
        self.log.warning(f"{job.partition_key}: {message}")
        return _Attempt(row, "failed", Failure(Action.REFUSED, SUBMIT_UNCONFIRMED, message))

    async def _follow(
        self,
        job: RenderJob,
        row: dict[str, Any],
        request: QueuedRequest,
    ) -> _Attempt:
        """Wait for a request submitted earlier (resumed or adopted), then fetch its output."""
        self._prior.known_request_ids.add(request.request_id)
        if row.get("status") != "pending" or row.get("request_id") != request.request_id:
            mark_pending(row, request)
            await self._write(row)
        started = time.monotonic() - age_s(row.get("submitted_at"))
        deadline = started + self.config.render_timeout_s
        # a resumed request is at fal too
        async with self.orphans.slot_for(request.request_id, request.status_url):
            waited = await self._wait(job, row, request, deadline)
        if isinstance(waited, _Attempt):
            return waited
        return await self._fetch(job, row, request, started, waited)

    async def _wait(
        self, job: RenderJob, row: dict[str, Any], request: QueuedRequest, deadline: float
    ) -> _Attempt | FinalStatus | None:
        """fal's COMPLETED status (fetch the result next; None when only a cancel's
        ``ALREADY_COMPLETED`` said so), else the final attempt.

        ``render_timeout_s`` counts from when fal reports the request IN_PROGRESS (the row's
        ``started_at``): a queueing fal's line is not the model hanging. ``deadline`` (a
        monotonic time) only bounds silence: it moves on while fal says the request waits."""
        seen: list[str] = []
        loop = asyncio.get_running_loop()
        limit = self.config.render_timeout_s
        if row.get("started_at"):  # seen running by an earlier process
            deadline = time.monotonic() - age_s(row["started_at"]) + limit
        try:
            async with asyncio.timeout_at(_loop_time(deadline)) as timeout:

                def on_update(state: str) -> None:
                    seen.append(state)
                    if row.get("started_at"):
                        return  # running: its deadline is fixed
                    if state == "IN_PROGRESS":
                        mark_started(row)
                    timeout.reschedule(loop.time() + limit)
                    if row.get("fal_status") != state:
                        # Waiting in fal's queue or running: progress displays in other
                        # processes (the CLI's) read it from the journal. Queued on the
                        # journal's one thread, so it lands before this request's next row.
                        row["fal_status"] = state
                        self._journal_thread.submit(self.journal.write, self._snapshot(row))

                final = await self.queue.wait_until_done(request, on_update=on_update)
            mark_ran(row, final.metrics.get("inference_time"))
            return final
        except TimeoutError:
            answer = await self._cancel(request)
            if answer == "already_completed":
                return None
            ran = bool(seen) and seen[-1] == "IN_PROGRESS"
            failure = Failure(
                Action.REFUSED,
                "timeout",
                f"not finished after {self.config.render_timeout_s:.0f}s; cancel {answer}"
                + ("; it was running, so fal may still bill it" if ran else ""),
            )
            row.update(
                status="cancelled",
                error_type="timeout",
                error_message=failure.message,
                completed_at=utc_now(),
                cost_usd=0.0,
            )
            await self._write(row)
            self.log.warning(f"{job.partition_key}: request {request.request_id} {failure.message}")
            return _Attempt(row, "cancelled", failure)
        except (FalClientHTTPError, httpx.TransportError, httpx.TimeoutException) as error:
            failure = self._classify(error)
            if failure.action is Action.AUTH:
                raise FalAuthError(failure.message, failure.error_type) from None
            if failure.http_status in (404, 410):  # fal no longer knows the request
                failure = Failure(
                    Action.EXPIRED, "request_unknown", failure.message, failure.http_status
                )
            return await self._fail(row, failure)

    async def _cancel(self, request: QueuedRequest) -> str:
        try:
            return await self.queue.cancel(request)
        except (FalClientHTTPError, httpx.TransportError, httpx.TimeoutException) as error:
            failure = self._classify(error)
            if failure.action is Action.AUTH:
                raise FalAuthError(failure.message, failure.error_type) from None
            return f"failed ({failure.error_type})"

    async def _fetch(
        self,
        job: RenderJob,
        row: dict[str, Any],
        request: QueuedRequest,
        started: float,
        final: FinalStatus | None,
    ) -> _Attempt:
        """Collect a request fal reported COMPLETED: its result, then its output.

        fal has billed it by now, so a collection that fails on the way (connection, timeout,
        ingress error) is retried on the same request and, past the retry budget, the row is
        left pending with the reason: the next run collects it. Submitting again would bill
        the same input twice."""
        for retry in range(1, self.config.retry_budget + 1):
            step = await self._collect(job, row, request, started, final)
            if not isinstance(step, Failure):
                return step
            if retry < self.config.retry_budget:
                await self._backoff(job, retry, step)
        row.update(error_type=step.error_type, error_message=self._redact(step.message))
        if row.get("cost_usd"):
            self._count_spend(row)
        await self._write(row)  # still pending: `falassets run` again collects it, unbilled
        self.log.warning(
            f"{job.partition_key}: request {request.request_id} finished at fal but could not be "
            f"collected ({step.error_type}); the next run collects it without resubmitting"
        )
        return _Attempt(row, "failed", step)

    async def _collect(
        self,
        job: RenderJob,
        row: dict[str, Any],
        request: QueuedRequest,
        started: float,
        final: FinalStatus | None,
    ) -> _Attempt | Failure:
        """One try at the result and its output: the final attempt, or an UNCOLLECTED
        failure that says nothing about the request (try again later)."""
        price = estimate(job.input, endpoint=job.endpoint).usd
        try:
            result = await self.queue.result(request)
        except (FalClientHTTPError, httpx.TransportError, httpx.TimeoutException) as error:
            failure = self._classify(error)
            if failure.action is Action.AUTH:
                raise FalAuthError(failure.message, failure.error_type) from None
            if is_transport_failure(error) or _fetch_failed(failure, final):
                return replace(failure, action=Action.UNCOLLECTED)
            billed = 0.0
            if isinstance(error, FalClientHTTPError):
                headers = {k.lower(): v for k, v in error.response_headers.items()}
                if _is_expiry(error.status_code, failure):
                    failure = Failure(
                        Action.EXPIRED, "result_expired", failure.message, failure.http_status
                    )
                    billed = price  # it ran; fal billed it, we just cannot fetch it
                billed = bill(row, headers, job, default=billed)
            row["latency_s"] = round(time.monotonic() - started, 4)
            return await self._fail(row, failure, cost=billed)
        row["latency_s"] = round(time.monotonic() - started, 4)
        cost = bill(row, {k.lower(): v for k, v in result.headers.items()}, job, default=price)
        urls = image_urls(result.body)[: images_asked(job.input)]
        if not urls:
            failure = Failure(Action.REFUSED, "no_media_generated", "the result holds no image")
            return await self._fail(row, failure, cost=cost)
        if len(urls) < images_asked(job.input):
            self.log.warning(
                f"{job.partition_key}: request {request.request_id} asked for "
                f"{images_asked(job.input)} images and fal returned {len(urls)}; keeping those"
            )
        row.update(output_url=kept_url(urls[0]), cost_usd=cost)
        try:
            stored = await self.download_all(job, urls)
        except downloads.DownloadError as error:
            failure = Failure(Action.REFUSED, error.kind, self._redact(str(error)))
            if error.transient:
                return replace(failure, action=Action.UNCOLLECTED)
            return await self._fail(row, failure, cost=cost)
        row.update(
            status="completed",
            completed_at=utc_now(),
            **stored_fields(stored, urls),
            http_status=200,
            error_type=None,
            error_message=None,
        )
        self._count_spend(row)
        await self._write(row)
        return _Attempt(row, "completed")

    async def download_all(self, job: RenderJob, urls: list[str]) -> list[downloads.StoredImage]:
        """Every output of a request (one per variant), fetched at once and each verified;
        the request is collected only when all of them are stored. Raises the first
        lasting DownloadError, else the first transient one (collect again later)."""
        if len(urls) == 1:
            return [await self._download(job, urls[0])]
        results = await asyncio.gather(
            *(self._download(job, url) for url in urls), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if not errors:
            return [r for r in results if isinstance(r, downloads.StoredImage)]
        unexpected = [e for e in errors if not isinstance(e, downloads.DownloadError)]
        lasting = [e for e in errors if isinstance(e, downloads.DownloadError) and not e.transient]
        raise (unexpected or lasting or errors)[0]

    async def _download(self, job: RenderJob, url: str) -> downloads.StoredImage:
        expected = expected_size(job)
        dest = self.renders.folder(f"{job.campaign}/{job.pass_name}")
        async with self._download_gate:
            for attempt in range(1, self.config.download_attempts + 1):
                try:
                    return await downloads.download_image(
                        self.download_http,
                        url,
                        dest,
                        job.prompt_id,
                        endpoint_host=self.queue.queue_host,
                        expected_size=expected,
                    )
                except downloads.DownloadError as error:
                    if not error.transient or attempt == self.config.download_attempts:
                        raise
                    await asyncio.sleep(backoff_delay(attempt, base_s=0.2, cap_s=5.0))
        raise AssertionError("unreachable")

    async def _fail(self, row: dict[str, Any], failure: Failure, *, cost: float = 0.0) -> _Attempt:
        row.update(
            status="failed",
            error_type=failure.error_type,
            error_message=self._redact(failure.message),
            http_status=failure.http_status,
            completed_at=utc_now(),
            cost_usd=cost,
        )
        self._count_spend(row)
        await self._write(row)
        return _Attempt(row, "failed", failure)

    # -- helpers ---------------------------------------------------------------------------------

    def billed_by_us(self, row: dict[str, Any]) -> bool:
        """Whether this run made (and so pays for) the request of ``row``. A request this run
        only follows (another process's, or a crashed run's) keeps its submitter's run id and
        counts in that run's spend, so concurrent runs never report one bill twice."""
        return row.get("run_id") == self.run_id

    def _count_spend(self, row: dict[str, Any]) -> None:
        if self.billed_by_us(row):
            self._spend += float(row.get("cost_usd") or 0.0)

    def _outcome(
        self, job: RenderJob, last: _Attempt, request_ids: list[str], submits: int
    ) -> RenderOutcome:
        row = last.row
        return RenderOutcome(
            job,
            last.outcome,  # type: ignore[arg-type]
            request_id=row.get("request_id"),
            error_type=row.get("error_type"),
            error_message=row.get("error_message"),
            http_status=row.get("http_status"),
            **image_fields(row),
            sha256=row.get("sha256"),
            width=row.get("width"),
            height=row.get("height"),
            cost_usd=float(row.get("cost_usd") or 0.0) if self.billed_by_us(row) else 0.0,
            latency_s=row.get("latency_s"),
            attempts=max(1, submits),
            request_ids=tuple(request_ids),
            images=tuple(request_images(row)) if last.outcome == "completed" else (),
        )

    def _classify(self, error: BaseException) -> Failure:
        failure = classify_exception(error)
        return replace(failure, message=self._redact(failure.message))

    def _redact(self, text: str) -> str:
        if self._secret and len(self._secret) >= 4 and self._secret in text:
            text = text.replace(self._secret, "[FAL_KEY]")
        return text

    async def _write(self, row: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._journal_thread, self.journal.write, self._snapshot(row))

    def _snapshot(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row as the journal gets it: a copy, its error message redacted."""
        if row.get("error_message"):
            row["error_message"] = self._redact(str(row["error_message"]))
        return dict(row)


def _fetch_failed(failure: Failure, final: FinalStatus | None) -> bool:
    """Whether a retryable (5xx) result answer is our GET failing, not the request's outcome.

    fal answers a failed request's result with the model's error (5xx outcomes are not
    billed, so resubmitting is safe), but it also said so in the COMPLETED status. A status
    without an error means the request succeeded and was billed: a 5xx then is the result
    GET's own failure, and resubmitting would bill the input twice. Without a status (only a
    cancel's ALREADY_COMPLETED said it finished) the fetch is retried too: the next run's
    status look settles which it was."""
    return failure.action is Action.RETRY and (final is None or final.error is None)


def _is_expiry(status: int, failure: Failure) -> bool:
    return status in (404, 410) or "expire" in (failure.error_type or "").lower()


def _loop_time(monotonic_deadline: float) -> float:
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())
