"""`falassets pick`: record review decisions without the web page."""

from __future__ import annotations

import argparse
from pathlib import Path

from falassets import settings
from falassets.cli.errors import UserError
from falassets.cli.run import campaign_suffixes


def known_campaigns() -> dict[str, Path]:
    """Campaign name -> its file in the campaigns folder."""
    folder = settings.campaigns_dir()
    found: dict[str, Path] = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in campaign_suffixes() and not path.name.startswith("."):
                found.setdefault(path.stem, path)
    return found


def campaign_prompt_ids(campaign: str) -> tuple[list[str], Path]:
    """The prompt ids of a known campaign (from its file, else its normalised table)."""
    variants, where = campaign_variants(campaign)
    return list(variants), where


def campaign_variants(campaign: str) -> tuple[dict[str, int], Path]:
    """Prompt id -> its number of draft variants, for a known campaign (from its file, else
    its normalised table), and where they were read."""
    from falassets.campaigns import CampaignError, load_campaign, read_table

    files = known_campaigns()
    if campaign in files:
        try:
            loaded = load_campaign(files[campaign])
        except CampaignError as error:
            raise UserError(str(error)) from None
        return {row.prompt_id: row.variants for row in loaded.rows}, files[campaign]
    try:
        table = read_table(campaign, settings.tables_dir())
    except (FileNotFoundError, CampaignError, OSError, NotImplementedError):
        names = ", ".join(files) or "none yet"
        raise UserError(
            f"unknown campaign '{campaign}' (known: {names}). Fix: use the file's stem as the "
            f"campaign name, or add it with `falassets run FILE` (files in "
            f"{settings.campaigns_dir()})"
        ) from None
    return {row.prompt_id: row.variants for row in table.rows}, settings.tables_dir()


def parse_choices(arguments: list[str], decision: str) -> tuple[list[str], dict[str, int]]:
    """``ID[:VARIANT]`` arguments -> (prompt ids in order, chosen variant per picked id).
    Prompt ids never hold ':', so the last ':' starts the variant; the last mention wins."""
    ids: list[str] = []
    chosen: dict[str, int] = {}
    for argument in arguments:
        prompt_id, colon, variant = (
            argument.rpartition(":") if ":" in argument else (argument, "", "")
        )
        if colon and decision != "pick":
            raise UserError(
                f"{argument}: --{decision} applies to a whole prompt, not one variant. Fix: "
                f"write {prompt_id}"
            )
        if colon and not (variant.isascii() and variant.isdigit() and int(variant) >= 1):
            raise UserError(
                f"{argument}: {variant!r} is not a variant number. Fix: write ID:VARIANT with "
                f"VARIANT counted from 1, e.g. {prompt_id}:2 (nothing was recorded)"
            )
        ids.append(prompt_id)
        if decision == "pick":
            chosen[prompt_id] = int(variant) if colon else 1
    return ids, chosen


def command_pick(args: argparse.Namespace) -> int:
    from falassets.lineage.decisions import DecisionError, record_decisions

    decision = "reject" if args.reject else "undecided" if args.undecided else "pick"
    prompt_ids, chosen = parse_choices(args.prompt_ids, decision)
    variants, where = campaign_variants(args.campaign)
    ids = list(variants)
    known = set(ids)
    unknown = [prompt_id for prompt_id in dict.fromkeys(prompt_ids) if prompt_id not in known]
    if unknown:
        shown = ", ".join(unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        raise UserError(
            f"campaign '{args.campaign}' has no prompt {shown} ({where}). Fix: use ids from the "
            f"file's 'id' column, e.g. {', '.join(ids[:3])}; list them all with: falassets "
            f'lineage "select prompt_id, status from latest_renders where campaign = '
            f"'{args.campaign}'\". Nothing was recorded"
        )
    try:
        record_decisions(
            args.campaign,
            prompt_ids,
            decision,
            source="cli",
            variants=chosen,
            known_variants=variants,
        )
    except DecisionError as error:
        raise UserError(str(error)) from None
    count = len(set(prompt_ids))
    print(f"Recorded '{decision}' for {count} prompt(s) of '{args.campaign}'.")
    several = {pid: n for pid, n in chosen.items() if variants.get(pid, 1) > 1}
    if several:
        shown = ", ".join(f"{pid}:{n}" for pid, n in list(several.items())[:10])
        print(f"Chosen variants: {shown}{' ...' if len(several) > 10 else ''}")
    if decision == "pick":
        print(f"Render the winners: falassets run {args.campaign} --pass final [--mode refine]")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    pick = subparsers.add_parser(
        "pick",
        help="record review decisions without the web page",
        description=(
            "Record a decision for prompts of a campaign: pick (default: the prompt goes to "
            "the final pass), --reject, or --undecided (clear an earlier decision). A pick is "
            "of one draft variant: ID:VARIANT (counted from 1; ID alone picks variant 1), and "
            "a refined final starts from that image. The latest decision wins; the review "
            "page and this command write the same record."
        ),
        epilog=(
            "example: falassets pick spring hero_1 hero_7:2 && "
            "falassets run spring --pass final --mode refine"
        ),
    )
    pick.add_argument("campaign", metavar="CAMPAIGN", help="campaign name (the file's stem)")
    pick.add_argument(
        "prompt_ids",
        metavar="ID[:VARIANT]",
        nargs="+",
        help="ids from the 'id' column, each with its chosen draft variant (default 1)",
    )
    choice = pick.add_mutually_exclusive_group()
    choice.add_argument("--reject", action="store_true", help="reject instead of pick")
    choice.add_argument("--undecided", action="store_true", help="clear the decision")
    pick.set_defaults(handler=command_pick)
