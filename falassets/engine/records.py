"""Lineage rows the engine writes, and what it learns from earlier ones before a batch.

Each fal request is one row of ``REQUEST_COLUMNS``, journalled as a full snapshot whenever it
changes (pending, then completed/failed/cancelled). :class:`PriorWork` folds every process's
journal into the three facts a new batch needs per job key: a completed render that can be
reused, requests still pending at fal (a crashed run's, to resume, never resubmit), and the
highest attempt number so far.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from falassets.engine.jobs import RenderJob
from falassets.engine.queue_client import QueuedRequest
from falassets.lineage.journal import Journal, latest_by, read_journal, utc_now
from falassets.lineage.schema import REQUEST_COLUMNS

_WRITER_COLUMNS = ("recorded_at", "writer")  # filled in by Journal.append

# The few columns kept per earlier request: enough to reuse or resume, small enough for 100k.
_KEPT = (
    "request_id",
    "job_key",
    "status",
    "attempt",
    "submitted_at",
    "completed_at",
    "image_path",
    "image_uri",
    "thumbnail_path",
    "sha256",
    "width",
    "height",
    "images",
    "output_url",
    "cost_usd",
    "status_url",
    "response_url",
    "cancel_url",
    "recorded_at",
    "run_id",
)


def new_row(job: RenderJob, *, run_id: str, simulated: bool, attempt: int) -> dict[str, Any]:
    """A request row with every column present (None where not known yet)."""
    row: dict[str, Any] = dict.fromkeys(REQUEST_COLUMNS)
    for name in _WRITER_COLUMNS:
        row.pop(name)
    row.update(
        # A replay investigates one request; it is not its partition's render, so it must
        # not become the partition's latest (freshness, the board, a refine's reference).
        partition_key=None if job.replay_of else job.partition_key,
        campaign=job.campaign,
        prompt_id=job.prompt_id,
        endpoint=job.endpoint,
        input=job.input,
        job_key=job.key,
        variant=job.variant,
        attempt=attempt,
        simulated=simulated,
        run_id=run_id,
        replay_of=job.replay_of,
        cost_usd=0.0,
        cost_source="estimated",  # until fal's x-fal-billable-units says otherwise
    )
    row["pass"] = job.pass_name
    return row


def resumed_row(job: RenderJob, prior: dict[str, Any], *, simulated: bool) -> dict[str, Any]:
    """The row of a request an earlier process left pending, now followed by this run. It
    keeps the ``run_id`` of the run that submitted it: that run was billed for it, and a
    run's spend is the cost of the rows under its id."""
    row = new_row(
        job,
        run_id=str(prior.get("run_id") or ""),
        simulated=simulated,
        attempt=int(prior.get("attempt") or 1),
    )
    # started_at too: its render deadline counts from when fal began running it
    for name in (
        "request_id",
        "submitted_at",
        "started_at",
        "queued_s",
        "fal_status",
        "status_url",
        "response_url",
        "cancel_url",
    ):
        row[name] = prior.get(name)
    row["status"] = "pending"
    return row


class RequestJournal:
    """The engine's writer: snapshots go to this process's ``requests`` journal, fsynced."""

    def __init__(self, directory: Path) -> None:
        self.journal = Journal(directory, "requests")

    def write(self, row: dict[str, Any]) -> None:
        self.journal.append(row, durable=True)

    def close(self) -> None:
        self.journal.close()


@dataclass
class PriorWork:
    """What earlier runs (any process) already did, per job key."""

    completed: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    max_attempt: dict[str, int] = field(default_factory=dict)
    known_request_ids: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, directory: Path) -> PriorWork:
        prior = cls()
        latest = latest_by(read_journal(directory, "requests"), "request_id")
        for row in latest.values():
            key = row.get("job_key")
            request_id = row.get("request_id")
            if not key or not request_id:
                continue
            prior.known_request_ids.add(str(request_id))
            kept = {name: row.get(name) for name in _KEPT}
            attempt = int(row.get("attempt") or 0)
            prior.max_attempt[key] = max(prior.max_attempt.get(key, 0), attempt)
            status = row.get("status")
            if status == "completed" and row.get("image_path"):
                best = prior.completed.get(key)
                if best is None or (kept.get("completed_at") or "") >= (
                    best.get("completed_at") or ""
                ):
                    prior.completed[key] = kept
            elif status == "pending" and row.get("status_url") and row.get("response_url"):
                prior.pending.setdefault(key, []).append(kept)
        for rows in prior.pending.values():
            rows.sort(key=lambda r: r.get("submitted_at") or "", reverse=True)
        return prior


def now() -> str:
    return utc_now()


def mark_started(row: dict[str, Any], *, ran_s: float = 0.0) -> None:
    """When fal began running the request, and how long it waited in fal's queue first."""
    started = datetime.now(UTC) - timedelta(seconds=ran_s)
    row["started_at"] = started.isoformat(timespec="microseconds")
    submitted = row.get("submitted_at")
    if isinstance(submitted, str):
        waited = (started - datetime.fromisoformat(submitted)).total_seconds()
        row["queued_s"] = round(max(0.0, waited), 4)


def mark_ran(row: dict[str, Any], inference_s: Any) -> None:
    """fal's own ``inference_time`` dates the start better than a status sighting."""
    row["fal_status"] = "COMPLETED"
    if isinstance(inference_s, int | float) and 0 <= inference_s < 86_400:
        mark_started(row, ran_s=float(inference_s))


def mark_pending(row: dict[str, Any], request: QueuedRequest) -> None:
    """The row of a request fal accepted, with the URLs a restarted process resumes from."""
    row.update(
        request_id=request.request_id,
        status="pending",
        status_url=request.status_url,
        response_url=request.response_url,
        cancel_url=request.cancel_url,
    )
