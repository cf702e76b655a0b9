"""What the review page shows: each campaign's prompts with their draft, final and decision.

Everything is read from the same places the pipeline writes (the campaign table, the request
journals, the decision journals) through their own modules, so the page, the CLI and the
DuckDB views never disagree. A board is rebuilt only when a journal or table file changed
(a ``stat`` of each, no reading), which keeps polling cheap while runs are writing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from falassets import campaigns, settings
from falassets.engine.jobs import TEXT_TO_IMAGE
from falassets.engine.pricing import price_usd
from falassets.lineage import decisions, queries
from falassets.lineage.passes import (
    DRAFT,
    FINAL,
    Freshness,
    RequestRow,
    chosen_reference,
    freshness,
)
from falassets.lineage.variants import request_images, variant_image, variants_asked
from falassets.pipeline.assets.final_jobs import Mode, final_job
from falassets.review.files import file_url

log = logging.getLogger(__name__)

FAILED_STATUSES = ("failed", "cancelled")


@dataclass(frozen=True)
class Board:
    """One campaign as the page sees it. ``items`` are JSON-ready dicts in table order."""

    campaign: str
    items: list[dict[str, Any]]
    version: str
    source: str  # 'table', or 'lineage' when the campaign table is missing or unreadable
    by_id: dict[str, dict[str, Any]] = field(repr=False, default_factory=dict)

    def ids(self) -> list[str]:
        return [item["id"] for item in self.items]

    def winners(self, picked_order: Iterable[str]) -> list[dict[str, Any]]:
        """Picked items, in decision order, that belong to this campaign."""
        return [self.by_id[pid] for pid in picked_order if pid in self.by_id]

    def failed(self) -> list[dict[str, Any]]:
        return [item for item in self.items if item["draft"]["status"] in FAILED_STATUSES]


def counts(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The filter counts and the projected final cost (winners x price at quality=high)."""
    tally: Counter[str] = Counter()
    projected = remaining = 0.0
    for item in items:
        tally["all"] += 1
        decision = item["decision"]
        tally[{"pick": "picked", "reject": "rejected"}.get(decision, "undecided")] += 1
        status = item["draft"]["status"]
        if status in FAILED_STATUSES:
            tally["failed"] += 1
        elif status == "pending":
            tally["pending"] += 1
        if item["final"] and item["final"]["status"] == "completed":
            tally["finals"] += 1
        if decision == "pick":
            projected += item["final_cost_usd"]
            if not item["final_current"]:
                remaining += item["final_cost_usd"]
    names = ("all", "undecided", "picked", "rejected", "failed", "pending", "finals")
    result: dict[str, Any] = {name: tally[name] for name in names}
    result["projected_final_usd"] = round(projected, 4)
    result["remaining_final_usd"] = round(remaining, 4)
    return result


def is_campaign_name(name: Any) -> bool:
    """The campaign name rule of :mod:`falassets.campaigns`, for names read from anywhere."""
    return (
        isinstance(name, str)
        and len(name) <= campaigns.MAX_NAME_CHARS
        and campaigns.NAME_RE.fullmatch(name) is not None
    )


def campaign_names() -> list[str]:
    """Campaigns with a prompts table or any request in lineage, sorted.

    A journal line naming something that cannot be a campaign (hand-edited, another tool's
    row, a bug elsewhere) is skipped and logged once: it must not empty the home page.
    """
    names = {path.stem for path in settings.tables_dir().glob("*.parquet")}
    odd = set()
    for row in queries.latest_requests().values():
        campaign = row.get("campaign")
        if is_campaign_name(campaign):
            names.add(campaign)
        elif campaign is not None:
            odd.add(f"{campaign!r:.100}")
    for name in sorted(odd):
        _warn_once(f"skipped lineage campaign {name}: not a campaign name (a-z, 0-9, '_')")
    return sorted(name for name in names if is_campaign_name(name))


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """Log ``message`` once per process: the page polls every few seconds, and the same odd
    journal line would otherwise fill the console."""
    if message not in _warned and len(_warned) < 1000:
        _warned.add(message)
        log.warning(message)


def files_signature() -> str:
    """Changes whenever a journal or campaign table is written (sizes and mtimes only)."""
    entries = []
    for directory in (settings.journal_dir(), settings.tables_dir()):
        try:
            with os.scandir(directory) as scan:
                for entry in scan:
                    if entry.is_file():
                        stat = entry.stat()
                        entries.append((entry.path, stat.st_size, stat.st_mtime_ns))
        except FileNotFoundError:
            continue
    return hashlib.sha256(repr(sorted(entries)).encode()).hexdigest()[:16]


class BoardCache:
    """Boards keyed by campaign, rebuilt only when :func:`files_signature` changes.

    The campaign's prompt rows are cached apart, keyed by the table file's size and mtime:
    reading and verifying a table is the slow part of a rebuild, and a decision (which
    changes the signature) never changes the table.
    """

    def __init__(self, root: Path, final_mode: Mode = "rerun") -> None:
        self.root = root
        self.final_mode = final_mode
        self._lock = threading.Lock()
        self._boards: dict[str, Board] = {}
        self._rows: dict[str, tuple[Any, list[dict[str, Any]], str]] = {}

    def get(self, campaign: str) -> Board:
        signature = files_signature()
        with self._lock:
            board = self._boards.get(campaign)
            if board is not None and board.version == signature:
                return board
        rows, source = self.prompt_rows(campaign)
        board = build_board(
            campaign, self.root, signature, rows=rows, source=source, final_mode=self.final_mode
        )
        with self._lock:
            self._boards[campaign] = board
        return board

    def prompt_rows(self, campaign: str) -> tuple[list[dict[str, Any]], str]:
        stamp = _table_stamp(campaign)
        with self._lock:
            cached = self._rows.get(campaign)
        if cached is not None and stamp is not None and cached[0] == stamp:
            return cached[1], cached[2]
        rows, source = _prompt_rows(campaign)
        if source == "table":
            with self._lock:
                self._rows[campaign] = (stamp, rows, source)
        return rows, source

    def prompt_ids(self, campaign: str) -> list[str]:
        """The campaign's prompt ids, without rebuilding a board (what a decision checks)."""
        return list(self.prompt_variants(campaign))

    def prompt_variants(self, campaign: str) -> dict[str, int]:
        """Prompt id -> how many draft variants it has (a pick names one of them)."""
        rows, _ = self.prompt_rows(campaign)
        return {row["id"]: row["variants"] for row in rows}


def _table_stamp(campaign: str) -> tuple[int, int] | None:
    try:
        stat = (settings.tables_dir() / f"{campaign}.parquet").stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def build_board(
    campaign: str,
    root: Path,
    version: str,
    *,
    rows: list[dict[str, Any]] | None = None,
    source: str = "table",
    final_mode: Mode = "rerun",
) -> Board:
    """``final_mode``: how the page's "Render winners" renders them, which sets each final's
    price and whether the final already there is current."""
    if rows is None:
        rows, source = _prompt_rows(campaign)
    requests = queries.latest_requests(campaign)  # one pass over the journals for both passes
    decided = decisions.current_decisions(campaign)
    chosen = decisions.chosen_variants(campaign)
    items = []
    for row in rows:
        key = campaigns.partition_key(campaign, row["id"])
        draft = requests.get((key, DRAFT.name))
        final = requests.get((key, FINAL.name))
        prompt_row = _prompt_row(row)
        wanted = FINAL.render_input(prompt_row)
        decision = decided.get((campaign, row["id"]), "undecided")
        variant = chosen.get((campaign, row["id"]), 1)  # a winner is a (prompt, variant)
        # A final refined from another variant than the chosen one is stale (lineage.passes).
        reference = chosen_reference(draft, variant)
        items.append(
            {
                **row,
                "key": key,
                "decision": decision,
                "variant": variant if decision == "pick" else None,
                "draft": _request_view(draft, root),
                "final": _request_view(final, root) if final else None,
                "final_cost_usd": _final_price(key, prompt_row, final_mode, draft, variant),
                "final_current": freshness(
                    wanted, RequestRow.of(final), reference=reference, refine=final_mode == "refine"
                )
                is Freshness.CURRENT,
            }
        )
    by_id = {item["id"]: item for item in items}
    return Board(campaign=campaign, items=items, version=version, source=source, by_id=by_id)


def _prompt_rows(campaign: str) -> tuple[list[dict[str, Any]], str]:
    """The campaign's prompts from its table; from the draft requests when there is none."""
    try:
        table = campaigns.read_table(campaign, settings.tables_dir())
    except (campaigns.CampaignError, FileNotFoundError, NotImplementedError, ValueError) as exc:
        log.info("campaign %s: no usable table (%s); listing prompts from lineage", campaign, exc)
    else:
        return [
            {
                "id": row.prompt_id,
                "prompt": row.prompt,
                "image_size": row.image_size,
                "output_format": row.output_format,
                "tags": dict(row.tags),
                "variants": row.variants,
            }
            for row in table.rows
        ], "table"
    rows = []
    for (_key, _pass), request in sorted(queries.latest_requests(campaign, DRAFT.name).items()):
        sent = _json(request.get("input"))
        prompt_id = request.get("prompt_id")
        if not isinstance(prompt_id, str) or not campaigns.KEY_ID_RE.fullmatch(prompt_id):
            _warn_once(f"campaign {campaign}: skipped a draft request with prompt id {prompt_id!r}")
            continue
        rows.append(
            {
                "id": prompt_id,
                "prompt": sent.get("prompt", ""),
                "image_size": sent.get("image_size"),
                "output_format": sent.get("output_format", "png"),
                "tags": {},
                "variants": variants_asked(request),
            }
        )
    return rows, "lineage"


def _prompt_row(row: dict[str, Any]) -> campaigns.PromptRow:
    return campaigns.PromptRow(
        prompt_id=row["id"],
        prompt=row["prompt"],
        image_size=row["image_size"],
        output_format=row["output_format"],
        tags=row["tags"],
        variants=row["variants"],
    )


def _final_price(
    key: str, row: campaigns.PromptRow, mode: Mode, draft: dict[str, Any] | None, variant: int
) -> float:
    """What the final pass would pay for this winner, from what it would send (the rule in
    final_jobs). A refine whose chosen image is not there yet is priced as the rerun."""
    if mode == "refine" and variant_image(draft, variant) is None:
        mode = "rerun"
    job = final_job(key, row, endpoint=TEXT_TO_IMAGE, mode=mode, draft=draft, variant=variant)
    return price_usd(job.input, endpoint=job.endpoint)


def _request_view(request: dict[str, Any] | None, root: Path) -> dict[str, Any]:
    """The fields of one lineage row the page shows (never URLs with tokens, never paths)."""
    if request is None:
        return {"status": "none"}
    sent = _json(request.get("input"))
    image = file_url(root, request.get("image_path"))
    return {
        "status": request.get("status") or "unknown",
        "request_id": request.get("request_id"),
        "error_type": request.get("error_type"),
        "error_message": request.get("error_message"),
        "cost_usd": request.get("cost_usd"),
        "latency_s": request.get("latency_s"),
        "quality": sent.get("quality"),
        "image_size": sent.get("image_size"),
        "output_format": sent.get("output_format"),
        "width": request.get("width"),
        "height": request.get("height"),
        "simulated": bool(request.get("simulated")),
        "submitted_at": request.get("submitted_at"),
        "image": image,
        "thumb": file_url(root, request.get("thumbnail_path")) or image,
        "variants": [_image_view(entry, root) for entry in request_images(request)],
    }


def _image_view(entry: dict[str, Any], root: Path) -> dict[str, Any]:
    """One variant of a request as the page shows it (URLs under /files, never paths)."""
    image = file_url(root, entry.get("image_path"))
    return {
        "variant": entry["variant"],
        "sha256": entry.get("sha256"),
        "image": image,
        "thumb": file_url(root, entry.get("thumbnail_path")) or image,
        "width": entry.get("width"),
        "height": entry.get("height"),
    }


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}
