"""``final_renders``: the winners at quality=high, as a plain rerun or refined from the draft
(what each sends: :mod:`falassets.pipeline.assets.final_jobs`)."""

import asyncio
from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import Field

from falassets import campaigns
from falassets.engine.jobs import RenderJob
from falassets.lineage import decisions, queries
from falassets.lineage.variants import variant_image
from falassets.pipeline import deployment
from falassets.pipeline.assets.drafts import draft_renders
from falassets.pipeline.assets.final_jobs import Mode, final_job
from falassets.pipeline.assets.lookup import Unrenderable, rows_for_keys
from falassets.pipeline.assets.partitions import winner_partitions
from falassets.pipeline.assets.rendering import RenderConfig, render_partitions
from falassets.pipeline.assets.selections import review_selections
from falassets.pipeline.resources import FalRenderer
from falassets.storage.renders import render_sha256


class FinalConfig(RenderConfig):
    mode: Mode = Field(
        default="rerun",
        description=(
            "rerun: the same prompt at quality=high. refine: the edit endpoint with the chosen "
            "draft as reference image, keeping the composition the reviewer picked."
        ),
    )


def _completed_drafts(keys: list[str]) -> dict[str, dict[str, Any]]:
    drafts: dict[str, dict[str, Any]] = {}
    for campaign in {campaigns.split_partition_key(key)[0] for key in keys}:
        for (key, _), row in queries.latest_requests(campaign, "draft").items():
            if row.get("status") == "completed" and row.get("output_url") and row.get("sha256"):
                drafts[key] = row
    return drafts


def _chosen_variants(keys: list[str]) -> dict[str, int]:
    """The reviewer's chosen draft variant per winner key (1 when the pick named none)."""
    wanted = set(keys)
    chosen = {
        campaigns.partition_key(campaign, prompt_id): variant
        for (campaign, prompt_id), variant in decisions.chosen_variants().items()
    }
    return {key: variant for key, variant in chosen.items() if key in wanted}


def _missing_variants(
    drafts: Mapping[str, Mapping[str, Any]], chosen: Mapping[str, int]
) -> dict[str, Unrenderable]:
    """Winners whose chosen variant the draft does not have (its variants were lowered, or
    the pick predates a re-render): a refine cannot start from an image that is not there."""
    missing: dict[str, Unrenderable] = {}
    for key, draft in drafts.items():
        variant = chosen.get(key, 1)
        image = variant_image(draft, variant)
        if image is None or not image.get("output_url") or not image.get("sha256"):
            missing[key] = Unrenderable(
                "variant_missing",
                f"the draft has no variant {variant} to refine. Fix: pick one of its variants "
                f"(`falassets pick CAMPAIGN ID:VARIANT`), or use mode=rerun",
            )
    return missing


def _changed_drafts(
    drafts: Mapping[str, Mapping[str, Any]], chosen: Mapping[str, int] | None = None
) -> dict[str, Unrenderable]:
    """Drafts a refine must not start from: read through the render store, the picked variant
    must still be the image the reviewer saw (its recorded sha256), since the final's variant
    names that sha256 and the review page showed the stored copy."""
    changed: dict[str, Unrenderable] = {}
    for key, draft in drafts.items():
        image = variant_image(draft, (chosen or {}).get(key, 1)) or {}
        location = image.get("image_path")
        try:
            intact = bool(location) and render_sha256(location) == image.get("sha256")
        except OSError:
            intact = False
        if not intact:
            changed[key] = Unrenderable(
                "draft_changed",
                f"the picked draft {location or '(no image recorded)'} is missing from the "
                "render store or no longer matches its recorded sha256. Fix: render the draft "
                "again (`falassets run CAMPAIGN`) and pick it, or use mode=rerun",
            )
    return changed


def _not_winners(keys: list[str]) -> dict[str, Unrenderable]:
    picked = {
        (campaign, prompt_id)
        for (campaign, prompt_id), decision in decisions.current_decisions().items()
        if decision == "pick"
    }
    return {
        key: Unrenderable(
            "not_a_winner",
            "this prompt is not currently picked. Fix: pick it on the review page or with "
            "`falassets pick`",
        )
        for key in keys
        if campaigns.split_partition_key(key) not in picked
    }


@dg.asset(
    partitions_def=winner_partitions,
    backfill_policy=deployment.backfill_policy(),  # one run per range, or runs of K
    output_required=False,
    deps=[
        dg.AssetDep(review_selections, partition_mapping=dg.AllPartitionMapping()),
        dg.AssetDep(draft_renders, partition_mapping=dg.IdentityPartitionMapping()),
    ],
    group_name="renders",
    kinds={"fal"},
    description=(
        "Winners only, at quality=high: `rerun` renders the same prompt again, `refine` sends the "
        "chosen draft to the edit endpoint so its composition is kept."
    ),
)
async def final_renders(
    context: dg.AssetExecutionContext, config: FinalConfig, fal: FalRenderer
):  # yields AssetMaterializations (Dagster rejects an AsyncIterator annotation)
    keys = list(context.partition_keys)
    rows, unrenderable = rows_for_keys(keys)
    unrenderable.update(_not_winners(list(rows)))
    drafts = _completed_drafts(list(rows)) if config.mode == "refine" else {}
    chosen = _chosen_variants(list(rows))
    unrenderable.update(
        _missing_variants({k: d for k, d in drafts.items() if k not in unrenderable}, chosen)
    )
    wanted = {key: draft for key, draft in drafts.items() if key not in unrenderable}
    unrenderable.update(await asyncio.to_thread(_changed_drafts, wanted, chosen))
    jobs: dict[str, RenderJob] = {}
    extra: dict[str, dict[str, Any]] = {}
    for key, row in rows.items():
        if key in unrenderable:
            continue
        if config.mode == "refine" and key not in drafts:
            unrenderable[key] = Unrenderable(
                "no_draft",
                "no completed draft to refine. Fix: render the draft first, or use mode=rerun",
            )
            continue
        jobs[key] = final_job(
            key,
            row,
            endpoint=fal.endpoint,
            mode=config.mode,
            draft=drafts.get(key),
            variant=chosen.get(key, 1),
            force=config.force,
        )
        extra[key] = {"mode": config.mode}
        if key in drafts:
            extra[key]["draft_request_id"] = drafts[key].get("request_id") or ""
            extra[key]["draft_variant"] = chosen.get(key, 1)
    for key in unrenderable:
        rows.pop(key, None)
    async for materialization in render_partitions(
        context, fal, jobs, unrenderable, extra_metadata=extra
    ):
        yield materialization
