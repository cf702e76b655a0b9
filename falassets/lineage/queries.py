"""Questions the pipeline, the CLI and the review page ask of the lineage.

These read the journals directly (no DuckDB connection), so they are cheap and never contend
for a lock. Each is one pass over the journal lines plus dictionary folds: linear in the
number of lines. They answer what the catalog's views answer (``requests``,
``latest_renders``, ``cost_by_campaign``) with the same rules, so the CLI, the review page and
a user's DuckDB shell never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from falassets import settings
from falassets.lineage.journal import read_journal
from falassets.lineage.schema import REQUEST_COLUMNS, REQUEST_STATUSES

_EARLIEST = datetime.min.replace(tzinfo=UTC)


def request_rows(directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """The latest snapshot per ``request_id`` (the ``requests`` view), each with exactly the
    REQUEST_COLUMNS (missing ones None). Snapshots without a request id are skipped."""
    latest: dict[str, dict[str, Any]] = {}
    for record in read_journal(directory or settings.journal_dir(), "requests"):
        request_id = record.get("request_id")
        if not request_id or not isinstance(request_id, str):
            continue
        current = latest.get(request_id)
        # `>=`: on a tie, the later line (file order) wins, as in journal.latest_by.
        if current is None or _text(record.get("recorded_at")) >= _text(current.get("recorded_at")):
            latest[request_id] = record
    return {rid: {name: rec.get(name) for name in REQUEST_COLUMNS} for rid, rec in latest.items()}


def latest_requests(
    campaign: str | None = None, pass_name: str | None = None
) -> dict[tuple[str, str], dict[str, Any]]:
    """The latest request row (a dict with REQUEST_COLUMNS) per (partition_key, pass).

    "Latest" is the request submitted last (``submitted_at``, else when it was recorded),
    whatever its status: a retry that is still pending replaces the failure before it.
    """
    rows = _select(request_rows().values(), campaign, pass_name)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        if not isinstance(row.get("partition_key"), str) or not isinstance(row.get("pass"), str):
            continue
        key = (row["partition_key"], row["pass"])
        current = latest.get(key)
        if current is None or _submission_order(row) > _submission_order(current):
            latest[key] = row
    return latest


def completed_by_job_key() -> dict[str, dict[str, Any]]:
    """Latest completed request row per job_key (for idempotent reuse).

    A later failed or pending request for the same job does not hide an earlier completed
    one: the render exists and was paid for.
    """
    latest: dict[str, dict[str, Any]] = {}
    for row in request_rows().values():
        job_key = row.get("job_key")
        if row.get("status") != "completed" or not job_key:
            continue
        current = latest.get(job_key)
        if current is None or _completion_order(row) > _completion_order(current):
            latest[job_key] = row
    return latest


def summary() -> list[dict[str, Any]]:
    """Per campaign and pass: requests, completed, failed, pending, cancelled, spend (USD),
    simulated; what `falassets lineage` prints by default.

    Keys: ``campaign, pass, requests, completed, failed, pending, cancelled, cost_usd,
    simulated``. Simulated and real requests are separate rows (as in the
    ``cost_by_campaign`` view), sorted by campaign, pass, simulated.
    """
    groups: dict[tuple[str, str, bool], dict[str, Any]] = {}
    for row in request_rows().values():
        simulated = bool(row.get("simulated"))
        key = (row.get("campaign"), row.get("pass"), simulated)
        group = groups.get(key)
        if group is None:
            group = {"campaign": key[0], "pass": key[1], "requests": 0}
            group.update(dict.fromkeys(REQUEST_STATUSES, 0))
            group.update(cost_usd=0.0, simulated=simulated)
            groups[key] = group
        group["requests"] += 1
        if row.get("status") in REQUEST_STATUSES:
            group[row["status"]] += 1
        group["cost_usd"] += float(row.get("cost_usd") or 0.0)
    result = sorted(
        groups.values(), key=lambda g: (_text(g["campaign"]), _text(g["pass"]), g["simulated"])
    )
    for group in result:
        group["cost_usd"] = round(group["cost_usd"], 6)
    return result


def _select(
    rows: Iterable[dict[str, Any]], campaign: str | None, pass_name: str | None
) -> Iterable[dict[str, Any]]:
    for row in rows:
        if campaign is not None and row.get("campaign") != campaign:
            continue
        if pass_name is not None and row.get("pass") != pass_name:
            continue
        yield row


def _submission_order(row: dict[str, Any]) -> tuple[datetime, datetime, str]:
    return (
        _instant(row.get("submitted_at") or row.get("recorded_at")),
        _instant(row.get("recorded_at")),
        _text(row.get("request_id")),
    )


def _completion_order(row: dict[str, Any]) -> tuple[datetime, datetime, str]:
    return (
        _instant(row.get("completed_at") or row.get("recorded_at")),
        _instant(row.get("recorded_at")),
        _text(row.get("request_id")),
    )


def _instant(value: Any) -> datetime:
    """A timestamp as an aware datetime (any ISO-8601 offset); unknown or bad ones sort first.

    Parsed rather than compared as text because ``submitted_at`` may come from fal's history
    in another offset; ``recorded_at`` (our own clock, one format) is compared as text.
    """
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return _EARLIEST
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    return _EARLIEST


def _text(value: Any) -> str:
    return "" if value is None else str(value)
