"""``draft_renders``: every prompt at quality=low, a whole campaign in one run.

A prompt with N variants is still one partition and one request (fal's ``num_images`` N);
it is materialised when that request completes with every variant downloaded and verified.
"""

import dagster as dg

from falassets import campaigns
from falassets.campaigns import PromptRow
from falassets.engine.jobs import RenderJob
from falassets.lineage.passes import DRAFT
from falassets.pipeline import deployment
from falassets.pipeline.assets.lookup import rows_for_keys
from falassets.pipeline.assets.partitions import prompt_partitions
from falassets.pipeline.assets.prompts import prompts
from falassets.pipeline.assets.rendering import RenderConfig, render_partitions
from falassets.pipeline.resources import FalRenderer


def draft_job(key: str, row: PromptRow, *, endpoint: str, force: bool = False) -> RenderJob:
    campaign, prompt_id = campaigns.split_partition_key(key)
    return RenderJob(
        partition_key=key,
        campaign=campaign,
        prompt_id=prompt_id,
        pass_name="draft",
        input=DRAFT.render_input(row),  # the row's variants: one request, num_images N
        endpoint=endpoint,
        force=force,
    )


@dg.asset(
    partitions_def=prompt_partitions,
    backfill_policy=deployment.backfill_policy(),  # one run per range, or runs of K
    output_required=False,
    deps=[dg.AssetDep(prompts, partition_mapping=dg.AllPartitionMapping())],
    group_name="renders",
    kinds={"fal"},
    description=(
        "One cheap draft (quality=low) per prompt. A range of partitions renders in one run, "
        "concurrently; each success is materialized as it completes, failures stay failed."
    ),
)
async def draft_renders(
    context: dg.AssetExecutionContext, config: RenderConfig, fal: FalRenderer
):  # yields AssetMaterializations (Dagster rejects an AsyncIterator annotation)
    rows, unrenderable = rows_for_keys(context.partition_keys)
    jobs = {
        key: draft_job(key, row, endpoint=fal.endpoint, force=config.force)
        for key, row in rows.items()
    }
    async for materialization in render_partitions(context, fal, jobs, unrenderable):
        yield materialization
