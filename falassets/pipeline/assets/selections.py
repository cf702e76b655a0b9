"""``review_selections``: the reviewers' latest decisions per campaign, and the winner set."""

import dagster as dg

from falassets import campaigns
from falassets.campaigns import Campaign, CampaignError
from falassets.engine.pricing import price_usd
from falassets.lineage import decisions, queries
from falassets.lineage.passes import FINAL, Freshness, RequestRow, chosen_reference, freshness
from falassets.pipeline.assets.drafts import draft_renders
from falassets.pipeline.assets.lookup import read_table_or_none
from falassets.pipeline.assets.partitions import campaign_partitions, register, winner_partitions


def load_table_or_fail(campaign: str) -> Campaign:
    try:
        table = read_table_or_none(campaign)
    except CampaignError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    if table is None:
        raise dg.Failure(
            description=(
                f"no prompts table for campaign '{campaign}'. Fix: materialize `prompts` for "
                f"'{campaign}' first (or run `falassets run` on its file)"
            ),
            allow_retries=False,
        )
    return table


def sync_winners(instance: dg.DagsterInstance, campaign: str, winner_keys: list[str]) -> tuple:
    """Make the campaign's ``winner`` partitions exactly its current picks.

    Un-picked winners are removed so the final pass's view lists winners only; their past
    renders stay in lineage and on disk. Returns (added, removed).
    """
    added = register(instance, winner_partitions, winner_keys)
    prefix = f"{campaign}-"
    wanted = set(winner_keys)
    removed = [
        key
        for key in instance.get_dynamic_partitions("winner")
        if key.startswith(prefix) and key not in wanted
    ]
    for key in removed:
        instance.delete_dynamic_partition("winner", key)
    return added, removed


@dg.asset(
    partitions_def=campaign_partitions,
    deps=[dg.AssetDep(draft_renders, partition_mapping=dg.AllPartitionMapping())],
    group_name="review",
    description=(
        "Latest pick / reject per prompt (review page or `falassets pick`); registers the "
        "picked prompts as `winner` partitions, which the final pass renders."
    ),
)
def review_selections(context: dg.AssetExecutionContext) -> None:
    campaign = context.partition_key
    table = load_table_or_fail(campaign)
    decided = decisions.current_decisions(campaign)
    ids = {row.prompt_id for row in table.rows}
    chosen = decisions.picks(campaign)  # winner -> its chosen draft variant
    picked = [pid for pid in chosen if pid in ids]
    rejected = [
        row.prompt_id for row in table.rows if decided.get((campaign, row.prompt_id)) == "reject"
    ]
    unknown = sorted(pid for (c, pid), _ in decided.items() if c == campaign and pid not in ids)
    winner_keys = [campaigns.partition_key(campaign, pid) for pid in picked]
    added, removed = sync_winners(context.instance, campaign, winner_keys)

    rows = {row.prompt_id: row for row in table.rows}
    finals = queries.latest_requests(campaign, FINAL.name)
    drafts = queries.latest_requests(campaign, "draft")
    projected = remaining = 0.0
    for pid, key in zip(picked, winner_keys, strict=True):
        wanted = FINAL.render_input(rows[pid])
        cost = price_usd(wanted)
        projected += cost
        final = RequestRow.of(finals.get((key, FINAL.name)))
        reference = chosen_reference(drafts.get((key, "draft")), chosen[pid])
        if freshness(wanted, final, reference=reference) is not Freshness.CURRENT:
            remaining += cost
    if unknown:
        context.log.warning(f"decisions for prompts not in '{campaign}': {', '.join(unknown[:20])}")
    context.add_output_metadata(
        {
            "prompts": len(table.rows),
            "picked": len(picked),
            "rejected": len(rejected),
            "undecided": len(table.rows) - len(picked) - len(rejected),
            "winners_added": len(added),
            "winners_removed": len(removed),
            "decisions_for_unknown_prompts": len(unknown),
            "projected_final_cost_usd": round(projected, 4),
            "remaining_final_cost_usd": round(remaining, 4),
        }
    )
