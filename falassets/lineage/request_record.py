"""Everything lineage knows about one fal request: `falassets show`, `replay` and the page.

The seed's promise for failures is "store every request ID ... when a render looks off in
review, you have the exact input the model saw". This answers the look-up half: one request's
row (the ``requests`` view's latest snapshot, by :func:`queries.request_rows`, so the CLI and a
DuckDB shell agree), every snapshot it went through, the other attempts of the same job, the
request it replays or the replays of it, and the reviewer's decision on its prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from falassets import settings
from falassets.lineage import queries
from falassets.lineage.journal import read_journal

#: How to list request ids, for messages about an id lineage does not know.
LIST_IDS_HINT = (
    'falassets lineage "select request_id, campaign, prompt_id, status from requests '
    'order by submitted_at desc limit 20"'
)


@dataclass(frozen=True)
class RequestRecord:
    """One request as lineage knows it."""

    row: dict[str, Any]  # its `requests` row: every REQUEST_COLUMNS column
    snapshots: list[dict[str, Any]]  # every journalled snapshot of it, oldest first
    attempts: list[dict[str, Any]]  # every request of the same job (job_key), by attempt
    original: dict[str, Any] | None  # the request this one replays (its `replay_of`)
    replays: list[dict[str, Any]]  # the requests that replay this one, oldest first
    decision: str | None  # the reviewer's latest decision on its prompt, if any

    @property
    def request_id(self) -> str:
        return str(self.row["request_id"])


def find_request(request_id: str) -> RequestRecord | None:
    """The record of ``request_id`` (exact match), or None when lineage has no such request."""
    rows = queries.request_rows()
    row = rows.get(request_id)
    if row is None:
        return None
    snapshots = sorted(
        (
            record
            for record in read_journal(settings.journal_dir(), "requests")
            if record.get("request_id") == request_id
        ),
        key=lambda record: str(record.get("recorded_at") or ""),
    )
    job_key = row.get("job_key")
    attempts = sorted(
        (other for other in rows.values() if job_key and other.get("job_key") == job_key),
        key=lambda other: (int(other.get("attempt") or 0), str(other.get("submitted_at") or "")),
    )
    replays = sorted(
        (other for other in rows.values() if other.get("replay_of") == request_id),
        key=lambda other: str(other.get("submitted_at") or other.get("recorded_at") or ""),
    )
    original = rows.get(str(row["replay_of"])) if row.get("replay_of") else None
    return RequestRecord(row, snapshots, attempts, original, replays, _decision(row))


def similar_request_ids(text: str, *, limit: int = 3) -> list[str]:
    """Known request ids that start with or contain ``text`` (a mistyped or partial id)."""
    needle = text.strip().lower()
    if len(needle) < 4:
        return []
    ids = sorted(queries.request_rows())
    starts = [rid for rid in ids if rid.lower().startswith(needle)]
    contains = [rid for rid in ids if needle in rid.lower() and rid not in starts]
    return (starts + contains)[:limit]


def unknown_request_message(request_id: str) -> str:
    """What to tell a user whose request id lineage does not know: the id, close ones, and
    how to list the ids it does know."""
    similar = similar_request_ids(request_id)
    close = f" (did you mean {', '.join(similar)}?)" if similar else ""
    return (
        f"no request '{request_id}' in lineage ({settings.journal_dir()}){close}. "
        f"Fix: use a request_id from the requests view, e.g. list the latest with: {LIST_IDS_HINT}"
    )


def _decision(row: dict[str, Any]) -> str | None:
    from falassets.lineage.decisions import current_decisions

    campaign, prompt_id = row.get("campaign"), row.get("prompt_id")
    if not isinstance(campaign, str) or not isinstance(prompt_id, str):
        return None
    return current_decisions(campaign).get((campaign, prompt_id))
