"""What the emulated account was asked and what it would have billed: the ground truth
tests and benchmarks compare a client's own records against."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from falassets.sim.scheduler import Scheduler, SimRequest, iso

#: HTTP request kinds counted in ``http`` (every answer, including 401/422/429/503).
HTTP_KINDS = ("submit", "status", "stream", "result", "cancel", "files", "history", "admin")


def request_entry(request: SimRequest) -> dict[str, Any]:
    return {
        "request_id": request.request_id,
        "endpoint": request.endpoint,
        "input": request.input,
        "status": request.status,
        "outcome": request.outcome,
        "error": request.error,
        "billed": request.billed,
        "cost_usd": request.cost_usd,
        "faults": request.plan.names(),
        "submit_lost": request.submit_lost,
        "cancel_requested": request.cancel_requested,
        "submitted_at": iso(request.submitted_at),
        "started_at": iso(request.started_at),
        "completed_at": iso(request.completed_at),
    }


def ledger_view(scheduler: Scheduler) -> dict[str, Any]:
    """``GET /_sim/ledger``: every accepted request plus totals."""
    entries = [
        request_entry(r) for r in sorted(scheduler.requests.values(), key=lambda r: r.ticket)
    ]
    outcomes: dict[str, int] = {}
    for entry in entries:
        key = entry["outcome"] or entry["status"].lower()
        outcomes[key] = outcomes.get(key, 0) + 1
    billed = [e for e in entries if e["billed"]]
    return {
        "requests": entries,
        "totals": {
            "accepted": len(entries),
            "billed": len(billed),
            "billed_usd": round(sum(e["cost_usd"] for e in billed), 6),
            "images_billed": sum(int(e["input"].get("num_images", 1)) for e in billed),
            "outcomes": outcomes,
            "submit_lost": sum(1 for e in entries if e["submit_lost"]),
            "running": len(scheduler.running),
            "queued": len(scheduler.waiting),
        },
        "peak_running": scheduler.peak_running,
        "rejected_429": scheduler.rejected_429,
        "ingress_503": scheduler.ingress_503,
        "http": {kind: scheduler.http.get(kind, 0) for kind in HTTP_KINDS},
        "http_total": sum(scheduler.http.values()),
    }


class JsonlAppender:
    """Append one JSON line per call (flushed: a killed emulator loses nothing written)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 (lives with the server)

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"
        with self._lock:
            self._handle.write(line)
            self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def load_state(path: Path) -> list[dict[str, Any]]:
    """Latest snapshot per request from a state file; a torn last line is skipped."""
    latest: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and "request_id" in data:
                latest[data["request_id"]] = data
    return list(latest.values())
