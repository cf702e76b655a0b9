"""Find the campaign row behind each partition key, campaign by campaign.

One run can hold keys of several campaigns (a backfill range crosses campaigns when they were
registered back to back), so rows are looked up per campaign table, each table read once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from falassets import campaigns, settings
from falassets.campaigns import Campaign, CampaignError, PromptRow


@dataclass(frozen=True)
class Unrenderable:
    """Why a partition cannot become a render job; it ends up failed with this reason."""

    error_type: str
    message: str


def read_table_or_none(campaign: str) -> Campaign | None:
    """The campaign's table, None before ``prompts`` first ran; CampaignError if damaged."""
    if not campaigns.table_path(campaign, settings.tables_dir()).is_file():
        return None
    return campaigns.read_table(campaign, settings.tables_dir())


def load_tables(campaign_names: Iterable[str]) -> dict[str, Campaign | Unrenderable]:
    tables: dict[str, Campaign | Unrenderable] = {}
    for name in sorted(set(campaign_names)):
        try:
            table = read_table_or_none(name)
        except (CampaignError, ValueError) as exc:
            tables[name] = Unrenderable("campaign_table_unreadable", str(exc))
            continue
        tables[name] = table or Unrenderable(
            "campaign_not_loaded",
            f"no prompts table for campaign '{name}'. Fix: materialize `prompts` for "
            f"partition '{name}' (or put {name}.csv in {settings.campaigns_dir()})",
        )
    return tables


def rows_for_keys(
    keys: Iterable[str],
) -> tuple[dict[str, PromptRow], dict[str, Unrenderable]]:
    """(row per renderable key, reason per key that cannot be rendered)."""
    keys = list(keys)
    split = {key: campaigns.split_partition_key(key) for key in keys}
    tables = load_tables(campaign for campaign, _ in split.values())
    by_id = {
        name: {row.prompt_id: row for row in table.rows}
        for name, table in tables.items()
        if isinstance(table, Campaign)
    }
    rows: dict[str, PromptRow] = {}
    problems: dict[str, Unrenderable] = {}
    for key, (campaign, prompt_id) in split.items():
        table = tables[campaign]
        if isinstance(table, Unrenderable):
            problems[key] = table
        elif prompt_id in by_id[campaign]:
            rows[key] = by_id[campaign][prompt_id]
        else:
            problems[key] = Unrenderable(
                "prompt_removed",
                f"prompt '{prompt_id}' is no longer in campaign '{campaign}'. Fix: add it back "
                f"to the campaign file, or leave this partition unrendered",
            )
    return rows, problems
