"""``prompts``: a campaign file becomes a validated table and one partition per prompt."""

from pathlib import Path

import dagster as dg

from falassets import campaigns, settings
from falassets.campaigns import Campaign, CampaignError
from falassets.pipeline.assets.lookup import read_table_or_none
from falassets.pipeline.assets.partitions import campaign_partitions, prompt_partitions, register

_PREVIEW_ROWS = 5
_LISTED_IDS = 20


def campaign_file(campaign: str) -> Path:
    """The one file behind a campaign, or a Failure that says what to do."""
    directory = settings.campaigns_dir()
    found = [directory / f"{campaign}{suffix}" for suffix in campaigns.CAMPAIGN_SUFFIXES]
    found = [path for path in found if path.is_file()]
    if not found:
        raise dg.Failure(
            description=(
                f"no campaign file for '{campaign}' in {directory}. Fix: add {campaign}.csv, "
                f"{campaign}.jsonl or {campaign}.parquet there, or remove the partition"
            ),
            allow_retries=False,
        )
    if len(found) > 1:
        names = ", ".join(path.name for path in found)
        raise dg.Failure(
            description=(
                f"campaign '{campaign}' has several files in {directory}: {names}. Fix: keep "
                "exactly one of them"
            ),
            allow_retries=False,
        )
    return found[0]


def previous_table(campaign: str) -> Campaign | None:
    """The table as last loaded; a damaged one counts as none (everything is then new)."""
    try:
        return read_table_or_none(campaign)
    except CampaignError:
        return None


@dg.asset(
    partitions_def=campaign_partitions,
    group_name="campaign",
    kinds={"parquet"},
    description=(
        "A campaign file (CSV, JSONL or Parquet in $FALASSETS_DATA_DIR/campaigns) validated and "
        "normalised to a Parquet table; registers one `prompt` partition per prompt."
    ),
)
def prompts(context: dg.AssetExecutionContext) -> None:
    campaign = context.partition_key
    source = campaign_file(campaign)
    try:
        loaded = campaigns.load_campaign(source)
    except CampaignError as exc:
        # Nothing is written or registered: a bad file never half-replaces a good table.
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    previous = previous_table(campaign)
    before = {row.prompt_id for row in previous.rows} if previous else set()
    edited = campaigns.changed_prompts(previous, loaded)  # new or render-relevant change
    new = [pid for pid in edited if pid not in before]
    changed = [pid for pid in edited if pid in before]
    removed = campaigns.removed_prompts(previous, loaded)
    table = campaigns.write_table(loaded, settings.tables_dir())
    added = register(context.instance, prompt_partitions, loaded.partition_keys())
    context.log.info(
        f"{campaign}: {len(loaded.rows)} prompts ({len(new)} new, {len(changed)} "
        f"changed, {len(removed)} removed); {len(added)} partitions registered"
    )
    context.add_output_metadata(
        {
            "source": dg.MetadataValue.path(str(source)),
            "table": dg.MetadataValue.path(str(table)),
            "rows": len(loaded.rows),
            "new_prompts": len(new),
            "changed_prompts": len(changed),
            "removed_prompts": len(removed),
            "partitions_registered": len(added),
            "changed_ids": _listed(edited),
            "removed_ids": _listed(removed),
            "preview": dg.MetadataValue.md(preview_markdown(loaded)),
        }
    )


def preview_markdown(campaign: Campaign, rows: int = _PREVIEW_ROWS) -> str:
    lines = ["| id | prompt | size | format |", "|---|---|---|---|"]
    for row in campaign.rows[:rows]:
        size = (
            row.image_size
            if isinstance(row.image_size, str)
            else "{width}x{height}".format(**row.image_size)
        )
        text = row.prompt.replace("|", "\\|").replace("\n", " ")
        text = text if len(text) <= 60 else text[:59] + "..."
        lines.append(f"| {row.prompt_id} | {text} | {size} | {row.output_format} |")
    if len(campaign.rows) > rows:
        lines.append(f"| ... | {len(campaign.rows) - rows} more | | |")
    return "\n".join(lines)


def _listed(ids: list[str]) -> str:
    shown = ", ".join(ids[:_LISTED_IDS])
    return shown + (f" ... (+{len(ids) - _LISTED_IDS})" if len(ids) > _LISTED_IDS else "")
