"""What a pass would do before it runs: which prompts need a render, what it costs, how long.

Used by ``falassets run --dry-run`` (print the estimate, render nothing) and by ``run`` itself
(launch only the partitions that are not up to date, so re-running an unchanged campaign
starts no render). A partition is *reusable* when lineage holds a completed render of exactly
the same input whose image is still on disk (the engine then answers it without a request);
it is *up to date* when it is reusable and Dagster already shows it materialised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from falassets.campaigns import Campaign, partition_key
from falassets.engine.jobs import EDIT, TEXT_TO_IMAGE, job_key
from falassets.engine.pricing import Cost, estimate, price_usd
from falassets.lineage.passes import (
    DEFAULT_CONCURRENCY,
    FINAL,
    Freshness,
    RequestRow,
    chosen_reference,
    freshness,
    get_pass,
)
from falassets.lineage.variants import variant_image
from falassets.storage.renders import render_exists

#: Mean seconds per render by quality: what the emulator is shaped after (issue 2) and the
#: basis of the time estimate. Real latency varies with fal's load; treat it as an estimate.
MEAN_LATENCY_S = {"low": 1.5, "medium": 8.0, "high": 25.0}


@dataclass
class PassPlan:
    campaign: str
    pass_name: str
    mode: str
    keys: list[str]  # every partition the pass covers, in campaign order
    reusable: set[str] = field(default_factory=set)
    up_to_date: set[str] = field(default_factory=set)
    cost_usd: float = 0.0  # estimate of the renders that would really be sent
    max_cost_usd: float = 0.0  # the most fal may bill for them (what the budget cap holds)
    unknown_winners: list[str] = field(default_factory=list)  # picked ids not in the campaign

    @property
    def to_render(self) -> list[str]:
        return [key for key in self.keys if key not in self.reusable]

    @property
    def to_run(self) -> list[str]:
        return [key for key in self.keys if key not in self.up_to_date]

    def seconds(self, concurrency: int | None) -> float:
        """Renders x mean latency / concurrency (in waves: a partial wave takes a full one)."""
        width = max(1, concurrency or DEFAULT_CONCURRENCY)
        return (
            math.ceil(len(self.to_render) / width)
            * MEAN_LATENCY_S[get_pass(self.pass_name).quality]
        )


def _image_intact(row: dict[str, Any] | None) -> bool:
    return bool(row and render_exists(row.get("image_path")))


def _materialized(asset: str) -> set[str]:
    """Partitions Dagster shows materialised; empty when the asset was never run."""
    try:
        from dagster import AssetKey

        from falassets.pipeline.launch import dagster_instance

        return set(dagster_instance().get_materialized_partitions(AssetKey(asset)))
    except Exception:  # no home yet, or the asset never materialised
        return set()


def plan_pass(
    campaign: Campaign, pass_name: str, *, mode: str = "rerun", force: bool = False
) -> PassPlan:
    """The plan for one pass of a validated campaign (nothing is sent, nothing written)."""
    from falassets.lineage import decisions, queries

    rows = {row.prompt_id: row for row in campaign.rows}
    the_pass = get_pass(pass_name)
    picked: dict[str, int] = {}  # winner -> its chosen draft variant
    if pass_name == "draft":
        chosen = list(campaign.rows)
        unknown: list[str] = []
    else:
        picked = decisions.picks(campaign.name)
        chosen = [rows[prompt_id] for prompt_id in picked if prompt_id in rows]
        unknown = [prompt_id for prompt_id in picked if prompt_id not in rows]
    plan = PassPlan(
        campaign.name,
        pass_name,
        mode,
        [partition_key(campaign.name, row.prompt_id) for row in chosen],
        unknown_winners=unknown,
    )
    completed = {} if force else queries.completed_by_job_key()
    drafts = finals = {}
    if pass_name == "final":
        drafts = queries.latest_requests(campaign.name, "draft")
        finals = {} if force else queries.latest_requests(campaign.name, "final")
    for row, key in zip(chosen, plan.keys, strict=True):
        payload = the_pass.render_input(row)
        refine = pass_name == "final" and mode == "refine"
        variant = picked.get(row.prompt_id, 1)
        draft = drafts.get((key, "draft"))
        price = render_cost(payload, draft if refine else None, refine, variant=variant)
        if force:
            _add(plan, price)
            continue
        if pass_name == "draft" or mode == "rerun":
            reusable = _image_intact(completed.get(job_key(TEXT_TO_IMAGE, payload)))
        else:  # refine: the chosen variant (by content) already refined at high
            final = finals.get((key, "final"))
            reference = chosen_reference(draft, variant)
            fresh = freshness(payload, RequestRow.of(final), reference=reference, refine=True)
            reusable = (
                draft is not None
                and draft.get("status") == "completed"
                and fresh is Freshness.CURRENT
                and _image_intact(final)
            )
        if reusable:
            plan.reusable.add(key)
        else:
            _add(plan, price)
    if plan.reusable:
        plan.up_to_date = plan.reusable & _materialized(get_pass(pass_name).asset)
    plan.cost_usd = round(plan.cost_usd, 6)
    plan.max_cost_usd = round(plan.max_cost_usd, 6)
    return plan


def render_cost(
    payload: dict[str, Any], draft: dict[str, Any] | None, refine: bool, *, variant: int = 1
) -> Cost:
    """What one render of ``payload`` costs: text to image, or a refine of image ``variant``
    of ``draft`` (its lineage row; None when not drafted yet) sent to the edit endpoint as
    its input image."""
    if not refine:
        return estimate(payload, endpoint=TEXT_TO_IMAGE)
    image = variant_image(draft, variant) or {}
    size = (image.get("width"), image.get("height"))
    sizes = [size] if all(isinstance(v, int) and v > 0 for v in size) else []
    edit = {**payload, "image_urls": [image.get("output_url") or "the chosen draft"]}
    return estimate(edit, endpoint=EDIT, input_sizes=sizes)


def _add(plan: PassPlan, cost: Cost) -> None:
    plan.cost_usd += cost.usd
    plan.max_cost_usd += cost.max_usd


def all_high_cost(campaign: Campaign) -> float:
    """What rendering every prompt at high quality would cost (the counterfactual)."""
    prices = (price_usd(FINAL.render_input(row), endpoint=TEXT_TO_IMAGE) for row in campaign.rows)
    return round(sum(prices), 6)
