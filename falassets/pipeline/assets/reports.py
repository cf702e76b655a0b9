"""``campaign_report``: where a campaign stands, what it cost, and a contact sheet of drafts."""

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from falassets import campaigns, settings
from falassets.atomic_files import replace_atomically
from falassets.campaigns import Campaign
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
from falassets.lineage.variants import variant_image
from falassets.pipeline.assets.finals import final_renders
from falassets.pipeline.assets.images import contact_sheet, sheet_data_uri
from falassets.pipeline.assets.partitions import campaign_partitions
from falassets.pipeline.assets.selections import load_table_or_fail, review_selections

SHEET_PAGE_SIZE = 200  # thumbnails per contact-sheet page (10 x 20 cells, ~1.7 x 3.6k px)


def reports_dir(campaign: str) -> Path:
    return settings.data_dir() / "reports" / campaign


@dataclass
class PassCounts:
    done: int = 0
    failed: int = 0
    in_flight: int = 0
    not_started: int = 0  # never requested, or requested for an input since edited


@dataclass
class CampaignFigures:
    campaign: str
    prompts: int
    drafts: PassCounts = field(default_factory=PassCounts)
    picked: int = 0
    rejected: int = 0
    finals: PassCounts = field(default_factory=PassCounts)
    failures_by_error_type: dict[str, int] = field(default_factory=dict)
    spend_usd: dict[str, float] = field(default_factory=dict)  # per pass, completed requests
    spend_total_usd: float = 0.0
    all_high_usd: float = 0.0  # every prompt rendered once at quality=high, no drafts
    # Drafts with a current completed render: (prompt id, picture) in campaign order.
    tiles: list[tuple[str, str | None]] = field(default_factory=list)  # id, render location


def _count(
    state: PassCounts,
    row: dict[str, Any] | None,
    wanted: dict[str, Any],
    reference: str | None = None,
) -> str | None:
    """Add one prompt's latest request to the counts; return its error type when failed.
    ``reference``: a final's chosen draft variant (see ``lineage.passes.freshness``)."""
    fresh = freshness(wanted, RequestRow.of(row), reference=reference)
    if not fresh.attempted:
        state.not_started += 1
    elif fresh is Freshness.CURRENT:
        state.done += 1
    elif fresh is Freshness.IN_FLIGHT:
        state.in_flight += 1
    else:
        assert row is not None  # attempted: there is a request
        state.failed += 1
        return str(row.get("error_type") or row.get("status"))
    return None


def spend_by_pass(campaign: str) -> dict[str, float]:
    """What fal billed (or would bill) per pass, every request counted (forced repeats too);
    the same figures as ``falassets lineage`` and the catalog's ``cost_by_campaign`` view."""
    spend: dict[str, float] = {}
    for group in queries.summary():
        if group["campaign"] == campaign:
            spend[group["pass"]] = spend.get(group["pass"], 0.0) + float(group["cost_usd"])
    return {name: round(total, 6) for name, total in sorted(spend.items())}


def campaign_figures(table: Campaign) -> CampaignFigures:
    campaign = table.name
    figures = CampaignFigures(campaign=campaign, prompts=len(table.rows))
    drafts = queries.latest_requests(campaign, DRAFT.name)
    finals = queries.latest_requests(campaign, FINAL.name)
    decided = decisions.current_decisions(campaign)
    chosen = decisions.chosen_variants(campaign)
    failures: Counter[str] = Counter()
    for row in table.rows:
        key = campaigns.partition_key(campaign, row.prompt_id)
        draft = drafts.get((key, DRAFT.name))
        wanted = DRAFT.render_input(row)
        error = _count(figures.drafts, draft, wanted)
        if error:
            failures[f"draft:{error}"] += 1
        current = draft is not None and freshness(wanted, RequestRow.of(draft)) is Freshness.CURRENT
        variant = chosen.get((campaign, row.prompt_id), 1)  # a winner shows its chosen draft
        image = (variant_image(draft, variant) or {}) if current else {}
        picture = image.get("thumbnail_path") or image.get("image_path")
        figures.tiles.append((row.prompt_id, picture or None))
        high = FINAL.render_input(row)
        decision = decided.get((campaign, row.prompt_id))
        if decision == "reject":
            figures.rejected += 1
        if decision == "pick":
            figures.picked += 1
            final = finals.get((key, FINAL.name))
            error = _count(figures.finals, final, high, chosen_reference(draft, variant))
            if error:
                failures[f"final:{error}"] += 1
        figures.all_high_usd += price_usd(high, endpoint=TEXT_TO_IMAGE)
    figures.failures_by_error_type = dict(failures.most_common())
    figures.spend_usd = spend_by_pass(campaign)
    figures.spend_total_usd = round(sum(figures.spend_usd.values()), 6)
    figures.all_high_usd = round(figures.all_high_usd, 6)
    return figures


def write_contact_sheets(figures: CampaignFigures) -> list[Path]:
    """Pages of up to SHEET_PAGE_SIZE thumbnails, ids under them; written atomically."""
    directory = reports_dir(figures.campaign)
    directory.mkdir(parents=True, exist_ok=True)
    pages = [
        figures.tiles[start : start + SHEET_PAGE_SIZE]
        for start in range(0, max(len(figures.tiles), 1), SHEET_PAGE_SIZE)
    ]
    paths = []
    for number, tiles in enumerate(pages, start=1):
        title = f"{figures.campaign}: drafts, page {number}/{len(pages)}"
        sheet = contact_sheet(tiles, title=title)
        path = directory / f"contact-sheet-{number:03d}.png"
        replace_atomically(path, lambda tmp, sheet=sheet: sheet.save(tmp, format="PNG"))
        paths.append(path)
    for stale in directory.glob("contact-sheet-*.png"):
        if stale not in paths:
            stale.unlink(missing_ok=True)
    return paths


@dg.asset(
    partitions_def=campaign_partitions,
    deps=[
        review_selections,
        dg.AssetDep(final_renders, partition_mapping=dg.AllPartitionMapping()),
    ],
    group_name="review",
    kinds={"png"},
    description=(
        "Where a campaign stands: drafts and finals by state, failures by error type, spend "
        "so far against rendering every prompt at quality=high, and a contact sheet of drafts."
    ),
)
def campaign_report(context: dg.AssetExecutionContext) -> None:
    table = load_table_or_fail(context.partition_key)
    figures = campaign_figures(table)
    sheets = write_contact_sheets(figures)
    summary = {k: v for k, v in asdict(figures).items() if k != "tiles"}
    summary["contact_sheets"] = [str(path) for path in sheets]
    report_json = reports_dir(table.name) / "report.json"
    replace_atomically(report_json, lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    from PIL import Image

    with Image.open(sheets[0]) as first:
        preview = sheet_data_uri(first.convert("RGB"), alt=f"{table.name} contact sheet")
    saved = figures.all_high_usd - figures.spend_total_usd
    context.add_output_metadata(
        {
            "prompts": figures.prompts,
            "drafts_done": figures.drafts.done,
            "drafts_failed": figures.drafts.failed,
            "drafts_pending": figures.drafts.in_flight + figures.drafts.not_started,
            "picked": figures.picked,
            "rejected": figures.rejected,
            "finals_done": figures.finals.done,
            "finals_failed": figures.finals.failed,
            "finals_pending": figures.finals.in_flight + figures.finals.not_started,
            "failures_by_error_type": figures.failures_by_error_type,
            "spend_draft_usd": figures.spend_usd.get("draft", 0.0),
            "spend_final_usd": figures.spend_usd.get("final", 0.0),
            "spend_total_usd": figures.spend_total_usd,
            "all_high_counterfactual_usd": figures.all_high_usd,
            "saved_vs_all_high_usd": round(saved, 6),
            "contact_sheet": dg.MetadataValue.path(str(sheets[0])),
            "contact_sheet_pages": len(sheets),
            "contact_sheet_preview": dg.MetadataValue.md(preview),
            "report_json": dg.MetadataValue.path(str(report_json)),
        }
    )
