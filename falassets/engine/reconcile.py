"""Orphan reconciliation: requests fal accepted (and may bill) that no lineage row names.

How an orphan is born: a submit reaches fal but its answer is lost, and either the process
dies before it journals anything (SIGKILL between the POST and the row) or its look-up in fal's
request history comes before fal lists the request (history lags), so the engine records
``submit_lost`` and submits again. The request still runs and is billed.

:func:`reconcile` lists fal's request history (``GET /v1/models/requests/by-endpoint``,
paginated, ``expand=payloads``) for the endpoints lineage uses, keeps the requests lineage does
not know whose ``json_input`` is one of OUR jobs (same endpoint + canonical input as a job in
lineage, or the job key of a submit a crashed process left open in the intent log), and
journals each as a full request row:

- ``error_type = 'orphan'`` on every orphan row, whatever its status (one query finds them
  all: ``SELECT * FROM requests WHERE error_type = 'orphan'``); ``run_id`` is
  ``reconcile-<UTC time>``; ``error_message`` says what fal answered.
- completed at fal: the output is downloaded through the engine's verified path
  (:func:`falassets.engine.downloads.download_image`: host-checked, size-capped, decoded) and
  the row is ``completed`` with its image and cost, so a later render of that job is answered
  from the record and not billed again.
- still queued/running at fal: ``pending`` with its URLs, so the next run follows it instead
  of submitting again.
- failed at fal, or output not downloadable: ``failed`` (cost: fal's price when it ran).

Requests whose input matches none of our jobs (another tool on the same account) are counted,
never recorded. Running it twice records nothing twice: known request ids are skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from fal_client import FalClientHTTPError

from falassets.engine import downloads
from falassets.engine.jobs import EDIT, TEXT_TO_IMAGE, RenderJob, canonical_json, job_key
from falassets.engine.pricing import price_usd
from falassets.engine.queue_client import raise_for_status
from falassets.engine.records import new_row
from falassets.engine.results import image_urls, stored_fields
from falassets.lineage.journal import latest_by, read_journal, utc_now
from falassets.lineage.variants import images_asked

if TYPE_CHECKING:
    from falassets.engine.render_engine import RenderEngine

ORPHAN = "orphan"
HISTORY_PAGE = 100
MAX_PAGES = 200  # 20,000 requests per endpoint and window: far beyond one day of campaigns


@dataclass(frozen=True)
class Orphan:
    request_id: str
    job_key: str
    campaign: str | None
    prompt_id: str | None
    status: str  # the lineage status we recorded: completed | pending | failed
    cost_usd: float
    fal_status: str


@dataclass
class ReconcileReport:
    """What a reconciliation found; ``cost_usd`` is what fal billed for the orphans."""

    endpoints: list[str] = field(default_factory=list)
    scanned: int = 0  # history items read
    foreign: int = 0  # unknown to lineage and not one of our jobs: left alone
    orphans: list[Orphan] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        return round(sum(o.cost_usd for o in self.orphans), 6)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.orphans)

    def summary(self) -> str:
        if not self.orphans:
            return (
                f"no orphans: {self.scanned} requests in fal's history for "
                f"{', '.join(self.endpoints) or 'no endpoint'}, all in lineage or not ours"
                + (f" ({self.foreign} not ours)" if self.foreign else "")
            )
        return (
            f"{len(self.orphans)} orphan request(s) recorded in lineage (error_type 'orphan'): "
            f"{self.count('completed')} completed and downloaded (a rerun reuses them), "
            f"{self.count('pending')} still at fal (a rerun follows them), "
            f"{self.count('failed')} failed; fal billed ${self.cost_usd:.2f} for them; "
            f"{self.scanned} history requests read"
        )


@dataclass(frozen=True)
class _Known:
    """A job lineage knows, enough to write an orphan's row."""

    job: RenderJob
    max_attempt: int


def _our_jobs(
    journal_dir: Path, campaign: str | None, open_keys: set[str]
) -> tuple[set[str], dict[tuple[str, str], _Known], set[str]]:
    """(request ids lineage knows, jobs by (endpoint, canonical input), endpoints used)."""
    latest = latest_by(read_journal(journal_dir, "requests"), "request_id")
    known_ids: set[str] = set()
    jobs: dict[tuple[str, str], _Known] = {}
    endpoints: set[str] = set()
    for (request_id,), row in latest.items():
        known_ids.add(str(request_id))
        endpoint, payload = row.get("endpoint"), row.get("input")
        if not endpoint or not isinstance(payload, dict):
            continue
        if campaign is not None and row.get("campaign") != campaign:
            continue
        endpoints.add(endpoint)
        key = (endpoint, canonical_json(payload))
        attempt = int(row.get("attempt") or 0)
        earlier = jobs.get(key)
        if earlier is None or attempt > earlier.max_attempt:
            job = RenderJob(
                partition_key=row.get("partition_key") or "",
                campaign=row.get("campaign") or "",
                prompt_id=row.get("prompt_id") or "",
                pass_name=row.get("pass") or "draft",
                input=payload,
                endpoint=endpoint,
                variant=row.get("variant") or "",
            )
            jobs[key] = _Known(job, max(attempt, earlier.max_attempt if earlier else 0))
    if open_keys and campaign is None:
        endpoints |= {TEXT_TO_IMAGE, EDIT}  # a crashed first submit left no row to tell
    return known_ids, jobs, endpoints


async def _history(
    http: httpx.AsyncClient, api_host: str, endpoint: str, since: datetime
) -> list[dict[str, Any]]:
    """Every request fal lists for ``endpoint`` since ``since``, all pages, with payloads."""
    params: dict[str, Any] = {
        "endpoint_id": endpoint,
        "start": since.isoformat(),
        "expand": "payloads",
        "limit": HISTORY_PAGE,
    }
    url = f"https://{api_host}/v1/models/requests/by-endpoint"
    items: list[dict[str, Any]] = []
    for _ in range(MAX_PAGES):
        response = await http.get(url, params=params, timeout=60.0)
        raise_for_status(response)
        data = response.json()
        page = data.get("items", data.get("requests", [])) if isinstance(data, dict) else data
        items.extend(item for item in page or [] if isinstance(item, dict))
        cursor = data.get("next_cursor") if isinstance(data, dict) else None
        if not cursor or not data.get("has_more", True):
            break
        params["cursor"] = cursor
    return items


def history_state(item: dict[str, Any]) -> str:
    """fal's state of a history item, from the fields fal documents: items carry no
    ``status``. Finished once ``ended_at`` or ``status_code`` is set; otherwise running once
    ``started_at`` is set, else queued."""
    if item.get("ended_at") or item.get("status_code") is not None:
        return "COMPLETED"
    return "IN_PROGRESS" if item.get("started_at") else "IN_QUEUE"


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


async def reconcile(
    engine: RenderEngine, *, since: datetime, campaign: str | None = None
) -> ReconcileReport:
    """Find, record and (when finished) download the orphans of ``engine``'s data dir.

    Uses the engine's clients, journal and intent log so rows, downloads and redaction are
    exactly the engine's. Raises ``FalClientHTTPError`` when fal refuses the history call
    (e.g. a wrong key): reconciliation never guesses.
    """
    open_intents = engine.intents.open_intents()
    known_ids, jobs, endpoints = _our_jobs(engine.journal_dir, campaign, set(open_intents))
    report = ReconcileReport(endpoints=sorted(endpoints))
    run_id = "reconcile-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for endpoint in report.endpoints:
        for item in await _history(engine.queue.http, engine.queue.api_host, endpoint, since):
            report.scanned += 1
            request_id = str(item.get("request_id") or "")
            payload = _json(item.get("json_input"))
            if not request_id or request_id in known_ids or not isinstance(payload, dict):
                continue
            known = jobs.get((endpoint, canonical_json(payload)))
            intent_key = job_key(endpoint, payload)
            if known is None and intent_key in open_intents:
                known = _Known(_unknown_job(endpoint, payload, request_id), 0)
            if known is None:
                report.foreign += 1
                continue
            orphan = await _record(engine, known, item, request_id, run_id)
            known_ids.add(request_id)
            report.orphans.append(orphan)
            for intent in open_intents.pop(orphan.job_key, []):
                engine.intents.resolved(intent.intent_id)
    if report.orphans:
        engine.log.warning(f"reconcile: {report.summary()}")
    return report


def _unknown_job(endpoint: str, payload: dict[str, Any], request_id: str) -> RenderJob:
    """A job known only by the intent a crashed first submit left (no campaign row yet)."""
    return RenderJob(
        partition_key="",
        campaign="_orphans",
        prompt_id=request_id,
        pass_name="draft",
        input=payload,
        endpoint=endpoint,
    )


async def _record(
    engine: RenderEngine, known: _Known, item: dict[str, Any], request_id: str, run_id: str
) -> Orphan:
    job = known.job
    request = engine.queue.request_for(job.endpoint, request_id)
    row = new_row(job, run_id=run_id, simulated=engine.simulated, attempt=known.max_attempt + 1)
    if job.campaign == "_orphans":
        row.update(campaign=None, prompt_id=None, partition_key=None, **{"pass": None})
    fal_status = history_state(item)
    row.update(
        request_id=request_id,
        submitted_at=item.get("sent_at") or item.get("submitted_at"),
        status_url=request.status_url,
        response_url=request.response_url,
        cancel_url=request.cancel_url,
        error_type=ORPHAN,
    )
    note = "orphan: fal accepted this request but no run recorded it (found by reconcile)"
    code = item.get("status_code")
    if fal_status != "COMPLETED":
        row.update(status="pending", error_message=f"{note}; still {fal_status} at fal")
    elif code not in (200, None):
        output = _json(item.get("json_output"))
        detail = output.get("detail") if isinstance(output, dict) else None
        row.update(
            status="failed",
            http_status=code,
            completed_at=item.get("ended_at") or utc_now(),
            error_message=engine._redact(f"{note}; fal answered {code}: {str(detail)[:300]}"),
        )
    else:
        await _deliver(engine, job, row, item, request, note)
    await engine._write(row)
    return Orphan(
        request_id,
        job.key,
        row.get("campaign"),
        row.get("prompt_id"),
        row["status"],
        float(row.get("cost_usd") or 0.0),
        fal_status,
    )


async def _deliver(
    engine: RenderEngine,
    job: RenderJob,
    row: dict[str, Any],
    item: dict[str, Any],
    request: Any,
    note: str,
) -> None:
    """Download a completed orphan's outputs (the payload in history, else its result): every
    variant it asked for, through the engine's verified downloads."""
    price = price_usd(job.input, endpoint=job.endpoint)
    row.update(completed_at=item.get("ended_at") or utc_now(), cost_usd=price)
    asked = images_asked(job.input)
    urls = image_urls(_json(item.get("json_output")))[:asked]
    if not urls:
        try:
            urls = image_urls((await engine.queue.result(request)).body)[:asked]
        except (FalClientHTTPError, httpx.HTTPError) as error:
            row.update(status="failed", error_message=f"{note}; result unavailable: {error}"[:500])
            return
    if not urls:
        row.update(status="failed", error_message=f"{note}; fal's output holds no image")
        return
    try:
        stored = await engine.download_all(job, urls)  # every variant, each verified
    except downloads.DownloadError as error:
        row.update(status="failed", error_message=engine._redact(f"{note}; {error}"))
        return
    row.update(
        status="completed",
        http_status=200,
        **stored_fields(stored, urls),
        error_message=f"{note}; its output is reused, not rendered again",
    )


def window_start(hours: float) -> datetime:
    """``hours`` ago (fal lists 24 h by default)."""
    return datetime.now(UTC) - timedelta(hours=hours)
