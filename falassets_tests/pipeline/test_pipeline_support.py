"""Helpers shared by the pipeline tests (no tests here): campaigns on disk, passes run
in-process through Dagster against the test emulator, partition states read back from the
instance."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from falassets.pipeline.assets.drafts import draft_renders
from falassets.pipeline.assets.finals import final_renders
from falassets.pipeline.assets.partitions import RANGE_END_TAG, RANGE_START_TAG
from falassets.pipeline.assets.prompts import prompts
from falassets.pipeline.assets.reports import campaign_report
from falassets.pipeline.assets.selections import review_selections
from falassets.pipeline.resources import FalRenderer

ASSETS = [prompts, draft_renders, review_selections, final_renders, campaign_report]


def write_campaign(
    data_dir: Path,
    name: str,
    prompts_by_id: dict[str, str],
    size: str = "square",
    *,
    mood: str | None = None,
) -> Path:
    """A campaign CSV in the data dir; ``mood`` adds a tag column with that value."""
    directory = data_dir / "campaigns"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.csv"
    tag = [] if mood is None else [mood]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "prompt", "image_size", "output_format", *(["mood"] if tag else [])])
        for prompt_id, text in prompts_by_id.items():
            writer.writerow([prompt_id, text, size, "png", *tag])
    return path


def load_campaign(instance: dg.DagsterInstance, campaign: str) -> dg.ExecuteInJobResult:
    if not instance.has_dynamic_partition("campaign", campaign):
        instance.add_dynamic_partitions("campaign", [campaign])
    return dg.materialize([prompts], instance=instance, partition_key=campaign)


def range_tags(keys: Sequence[str]) -> dict[str, str]:
    return {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}


def render(
    instance: dg.DagsterInstance,
    asset: dg.AssetsDefinition,
    keys: Sequence[str],
    *,
    renderer: FalRenderer | None = None,
    **config: Any,
) -> dg.ExecuteInJobResult:
    """One run over a contiguous range of partitions, like a single-run backfill."""
    return dg.materialize(
        [asset],
        instance=instance,
        # Two attempts keep a permanently failing 5xx short; the default is four.
        resources={"fal": renderer or FalRenderer(retry_budget=2)},
        tags=range_tags(keys),
        run_config={"ops": {asset.op.name: {"config": config}}} if config else None,
        raise_on_error=False,
    )


def statuses(
    instance: dg.DagsterInstance, asset: dg.AssetsDefinition, keys: Sequence[str]
) -> dict[str, str]:
    """Dagster's own view of each partition: MATERIALIZED, FAILED, IN_PROGRESS or missing."""
    found = instance.get_status_by_partition(asset.key, list(keys), asset.partitions_def)
    return {key: (found.get(key).value if found.get(key) else "MISSING") for key in keys}


def materialization_metadata(
    instance: dg.DagsterInstance, asset: dg.AssetsDefinition, key: str
) -> dict[str, Any]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset.key, asset_partitions=[key]), limit=1
    ).records
    assert records, f"no materialization of {asset.key.to_user_string()} {key}"
    materialization = records[0].asset_materialization
    assert materialization is not None
    return {name: value.value for name, value in materialization.metadata.items()}
