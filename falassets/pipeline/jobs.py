"""Jobs over the assets: one per pass; each takes its asset's partitions (Dagster infers them).

``draft_pass`` and ``final_pass`` are a contract (the CLI and the review page launch them).
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from falassets.pipeline.assets.drafts import draft_renders
from falassets.pipeline.assets.finals import final_renders
from falassets.pipeline.assets.prompts import prompts
from falassets.pipeline.assets.reports import campaign_report
from falassets.pipeline.assets.selections import review_selections

#: The campaign's bookkeeping steps (read the campaign file, record decisions, write the
#: report) are one small step each over the shared data directory: they run in their run's own
#: process whatever executor the deployment gives the renders. Sent through a broker to a
#: worker host, the `prompts` step waited 4-6 s for ~0.4 s of work (bench/README.md, issue 13).
BOOKKEEPING_EXECUTOR = dg.in_process_executor

prompts_pass = dg.define_asset_job(
    "prompts_pass", selection=[prompts], executor_def=BOOKKEEPING_EXECUTOR
)
draft_pass = dg.define_asset_job("draft_pass", selection=[draft_renders])
review_pass = dg.define_asset_job(
    "review_pass", selection=[review_selections], executor_def=BOOKKEEPING_EXECUTOR
)
final_pass = dg.define_asset_job("final_pass", selection=[final_renders])
report_pass = dg.define_asset_job(
    "report_pass", selection=[campaign_report], executor_def=BOOKKEEPING_EXECUTOR
)

#: Which campaign and pass a render run is for (every launcher tags its runs so).
CAMPAIGN_TAG = "falassets/campaign"
PASS_TAG = "falassets/pass"

#: The render asset (and its op) of each pass.
PASS_ASSETS = {"draft": draft_renders, "final": final_renders}


def pass_run_config(
    pass_name: str,
    *,
    mode: str | None = None,
    force: bool = False,
    concurrency: int | None = None,
    budget_usd: float | None = None,
) -> dict[str, Any]:
    """The run config of a render pass: the asset's config (``force``; ``mode`` for finals)
    and the fal resource's limits. Written once for the CLI, the review page and the winners
    sensor, so a pass launched from any of them renders the same way."""
    op_config: dict[str, Any] = {"force": force}
    if pass_name == "final":
        op_config["mode"] = mode or "rerun"
    config: dict[str, Any] = {"ops": {PASS_ASSETS[pass_name].op.name: {"config": op_config}}}
    resource_config: dict[str, Any] = {}
    if concurrency is not None:
        resource_config["concurrency"] = concurrency
    if budget_usd is not None:
        resource_config["budget_usd"] = budget_usd
    if resource_config:
        config["resources"] = {"fal": {"config": resource_config}}
    return config


def pass_tags(campaign: str, pass_name: str) -> dict[str, str]:
    return {CAMPAIGN_TAG: campaign, PASS_TAG: pass_name}
