"""`falassets run`: validate a campaign file, stage it, and run one pass through Dagster.

Order matters for "bad input destroys nothing": the file is fully validated before anything
is copied, registered or rendered; a file is copied into the campaigns folder atomically and
never over a *different* campaign of the same name unless ``--replace`` says so.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from falassets import settings
from falassets.atomic_files import write_text_atomically
from falassets.cli.errors import UserError
from falassets.lineage.passes import DEFAULT_CONCURRENCY


def campaign_suffixes() -> tuple[str, ...]:
    """The campaign file suffixes, from campaigns (imported here: it is slow to import, and
    every command builds this module's parser)."""
    from falassets.campaigns.limits import CAMPAIGN_SUFFIXES

    return CAMPAIGN_SUFFIXES


def resolve_campaign_file(argument: str) -> Path:
    """A path to a campaign file, or the name of a campaign already in the campaigns folder.

    A link is kept, not resolved: the campaign is named after the name the user typed (the
    link's), by path as by name, as the sensors and the Dagster UI name it. A link such as
    ``spring.csv -> exports/2026-03_v7.csv`` is how people keep a stable name on a changing
    export; naming the campaign after the target would rename its partitions on every export.
    """
    path = Path(argument).expanduser()
    if path.exists():
        return Path(os.path.abspath(path))
    if os.sep not in argument and "." not in argument:
        found = [
            settings.campaigns_dir() / f"{argument}{suffix}"
            for suffix in campaign_suffixes()
            if (settings.campaigns_dir() / f"{argument}{suffix}").is_file()
        ]
        if len(found) == 1:
            return found[0]
    raise UserError(
        f"{argument}: no such campaign file. Fix: give the path of a CSV, JSONL or Parquet "
        f"file, or the name of a campaign in {settings.campaigns_dir()}"
    )


def load(path: Path, *, variants: int | None = None):  # -> Campaign
    """Load and validate; every problem becomes one clear line (file, row, fix).
    ``variants``: ``--variants N`` (rows with an empty ``variants`` cell); None: the
    campaign's recorded default."""
    from falassets.campaigns import CampaignError, load_campaign

    try:
        return load_campaign(path, variants=variants)
    except CampaignError as error:
        raise UserError(str(error)) from None
    except PermissionError:
        raise UserError(
            f"{path}: cannot read the file (permission denied). Fix: make it readable "
            f"(chmod u+r '{path}') or copy it somewhere readable"
        ) from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder. Fix: give the campaign file inside it") from None
    except OSError as error:
        raise UserError(
            f"{path}: cannot read the file ({error.strerror or error}). Fix: check the path"
        ) from None


def stage(source: Path, campaign: str, *, replace: bool) -> Path:
    """The campaign file in the campaigns folder (copied there atomically when elsewhere)."""
    folder = settings.campaigns_dir()
    folder.mkdir(parents=True, exist_ok=True)
    if source.parent.resolve() == folder.resolve():
        others = [
            folder / f"{campaign}{suffix}"
            for suffix in campaign_suffixes()
            if suffix != source.suffix.lower() and (folder / f"{campaign}{suffix}").exists()
        ]
        if others:
            raise UserError(
                f"{source}: campaign '{campaign}' also has {others[0].name} in {folder}. Fix: "
                "keep one file per campaign (remove or rename the other one)"
            )
        return source
    destination = folder / f"{campaign}{source.suffix.lower()}"
    clashes = [
        folder / f"{campaign}{suffix}"
        for suffix in campaign_suffixes()
        if (folder / f"{campaign}{suffix}").exists()
    ]
    same_origin = _origins().get(campaign) in (str(source), str(source.resolve()))
    for existing in clashes:
        if existing == destination and filecmp.cmp(existing, source, shallow=False):
            return destination  # the same file again: nothing to copy
        if not (replace or (same_origin and existing == destination)):
            raise UserError(
                f"{source}: {existing} already holds a different campaign named '{campaign}'. "
                f"Fix: rename your file, or pass --replace to make it the new version of "
                f"'{campaign}' (renders already made are kept and reused where unchanged)"
            )
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{campaign}.", suffix=".tmp")
    os.close(handle)
    try:
        shutil.copyfile(source, temporary)
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    for existing in clashes:  # --replace: one file per campaign
        if existing != destination:
            existing.unlink()
    _remember_origin(campaign, source)
    return destination


def _origins_path() -> Path:
    return settings.state_dir() / "campaign_sources.json"


def _origins() -> dict[str, str]:
    """Which outside file each copied campaign came from: an edited file at the same path is
    the campaign's new version, a different file with the same name is a clash."""
    try:
        data = json.loads(_origins_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember_origin(campaign: str, source: Path) -> None:
    origins = _origins()
    origins[campaign] = str(source)  # as typed: a link re-pointed at a new export is the same
    write_text_atomically(_origins_path(), json.dumps(origins, indent=1, sort_keys=True))


def read_only_ids(value: str | None) -> list[str] | None:
    """``--only a,b,c`` or ``--only @file`` (one id a line)."""
    if value is None:
        return None
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text()
        except OSError as error:
            raise UserError(f"--only {value}: cannot read {path} ({error.strerror})") from None
        ids = text.split()
    else:
        ids = [part.strip() for part in value.split(",")]
    ids = [prompt_id for prompt_id in ids if prompt_id]
    if not ids:
        raise UserError("--only: no prompt ids given. Fix: --only id1,id2 or --only @ids.txt")
    return ids


def _print_estimate(plan, args: argparse.Namespace, campaign) -> None:
    from falassets.cli.plan import MEAN_LATENCY_S, all_high_cost
    from falassets.engine.progress import format_duration
    from falassets.lineage.passes import get_pass

    quality = get_pass(plan.pass_name).quality
    label = f"{plan.pass_name} pass" + (f" ({plan.mode})" if plan.pass_name == "final" else "")
    concurrency = args.concurrency or DEFAULT_CONCURRENCY
    print(f"Dry run: {label} of campaign '{plan.campaign}' ({len(campaign.rows)} prompts)")
    print(f"  partitions in the pass : {len(plan.keys)}")
    print(f"  would render           : {len(plan.to_render)} at quality={quality}")
    counts = sorted({row.variants for row in campaign.rows})
    if plan.pass_name == "draft" and counts != [1]:
        shown = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        print(f"  variants per prompt    : {shown} (one request each, priced as that many images)")
    print(f"  reused from lineage    : {len(plan.reusable)} (same input already rendered: $0)")
    print(f"  estimated cost         : ${plan.cost_usd:,.2f} (fal's price table)")
    print(
        f"  estimated time         : {format_duration(plan.seconds(concurrency))} "
        f"({len(plan.to_render)} x {MEAN_LATENCY_S[quality]:g} s mean latency / "
        f"concurrency {concurrency})"
    )
    if plan.pass_name == "draft":
        print(f"  all prompts at high    : ${all_high_cost(campaign):,.2f} (the counterfactual)")
    if plan.unknown_winners:
        print(f"  ignored picks          : {', '.join(plan.unknown_winners)} (not in the file)")
    if args.budget_usd is not None and plan.cost_usd > args.budget_usd:
        print(f"  budget cap ${args.budget_usd:,.2f} stops the pass before it finishes")
    if settings.is_simulated():
        print("  FAL_KEY is unset: the pass would run on the emulator (simulated, nothing billed)")
    print("Nothing was rendered.")


def _failure_lines(result, campaign: str, pass_name: str) -> list[str]:
    from falassets.lineage import queries

    latest = queries.latest_requests(campaign, pass_name)
    lines = []
    for key in result.failed:
        error_type, message = result.failures.get(key, (None, None))
        if error_type is None:
            row = latest.get((key, pass_name)) or {}
            error_type = row.get("error_type") or "not_rendered"
            message = row.get("error_message") or "see the run log in Dagster"
        lines.append(f"  {key}: {error_type}: {message}")
    return lines


def _check_variants(args: argparse.Namespace) -> None:
    """``--variants N``: drafts per prompt, so the draft pass only, and 1 to fal's maximum."""
    if args.variants is None:
        return
    if args.pass_name != "draft":
        raise UserError(
            "--variants applies to the draft pass (how many drafts each prompt gets). Fix: "
            "drop --variants; a final renders the chosen variant (falassets pick CAMPAIGN "
            "ID:VARIANT)"
        )
    from falassets.campaigns import variants_problem

    problem = variants_problem(args.variants)
    if problem:
        raise UserError(f"--variants {args.variants}: {problem}. Fix: --variants 3")


def command_run(args: argparse.Namespace) -> int:
    """The `run` command."""
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from falassets.campaigns import partition_key
    from falassets.cli.plan import plan_pass
    from falassets.cli.progress import watch
    from falassets.pipeline import launch

    if args.pass_name != "final" and args.mode is not None:
        raise UserError("--mode applies to the final pass only. Fix: add --pass final")
    if args.concurrency is not None and args.concurrency < 1:
        raise UserError("--concurrency must be at least 1")
    if args.budget_usd is not None and args.budget_usd <= 0:
        raise UserError("--budget-usd must be more than 0")
    _check_variants(args)
    mode = args.mode or "rerun"
    source = resolve_campaign_file(args.campaign_file)
    campaign = load(source, variants=args.variants)
    only = read_only_ids(args.only)
    if only is not None:
        known = {row.prompt_id for row in campaign.rows}
        unknown = [prompt_id for prompt_id in only if prompt_id not in known]
        if unknown:
            raise UserError(
                f"{source}: no prompt with id {', '.join(unknown[:5])}. Fix: use ids from the "
                "file's 'id' column"
            )
    plan = plan_pass(campaign, args.pass_name, mode=mode, force=args.force)
    if args.dry_run:
        _print_estimate(plan, args, campaign)
        return 0
    stage(source, campaign.name, replace=args.replace)
    if args.variants is not None:  # every later load of the file (the pipeline's) asks for N
        from falassets.campaigns import record_default_variants

        record_default_variants(campaign.name, args.variants)

    if only is not None:
        wanted = {partition_key(campaign.name, prompt_id) for prompt_id in only}
        targets = [key for key in plan.keys if key in wanted]
        if args.pass_name == "final" and len(targets) < len(wanted):
            missing = sorted(wanted - set(targets))
            raise UserError(
                f"{', '.join(missing[:5])}: not picked as winners of '{campaign.name}'. Fix: "
                f"falassets pick {campaign.name} <ids> first"
            )
    else:
        targets = plan.keys if args.force else plan.to_run
    noun = "drafts" if args.pass_name == "draft" else "finals"
    if not plan.keys:
        hint = (
            f"pick winners first: falassets pick {campaign.name} ID..."
            if args.pass_name == "final"
            else "the file has no prompts"
        )
        print(f"Nothing to render for '{campaign.name}': {hint}")
        return 0
    if not targets:
        print(
            f"Nothing to render: all {len(plan.keys)} {noun} of '{campaign.name}' are up to date "
            "(same input already rendered). Use --force to render them again."
        )
        return 0

    print(
        f"{args.pass_name} pass of '{campaign.name}': {len(targets)} partition(s), "
        f"{len(plan.reusable & set(targets))} reused from lineage, est. ${plan.cost_usd:,.2f}"
        + (" (emulator, simulated)" if settings.is_simulated() else ""),
        flush=True,
    )
    watcher, display, on_run_start = watch(
        launch.PASS_ASSET[args.pass_name],
        len(targets),
        label=f"{campaign.name} {args.pass_name}",
        plain=True if args.plain else None,
    )
    try:
        result = launch.run_pass(
            campaign.name,
            args.pass_name,
            partition_keys=targets,
            concurrency=args.concurrency,
            budget_usd=args.budget_usd,
            mode=mode,
            force=args.force,
            launch_id=str(uuid.uuid4()),
            bridgeable=plan.up_to_date,
            on_run_start=on_run_start,
            progress=display,
            verbose=args.verbose,
        )
    except launch.LaunchError as error:
        raise UserError(str(error)) from None
    final = display.last or watcher.poll()
    runs = ", ".join(result.run_ids) or "none"
    print(
        f"{len(result.succeeded)} succeeded, {len(result.failed)} failed, "
        f"${final.spend_usd:,.2f} spent. Dagster run(s): {runs} (DAGSTER_HOME="
        f"{settings.dagster_home()}; see them with `falassets dev`)"
    )
    if result.auth_error:
        from falassets.engine.retry import UNTRUSTED_HOST

        untrusted = [error for error in result.run_errors if UNTRUSTED_HOST in error]
        print(
            untrusted[0].split(": ", 1)[1]
            if untrusted
            else "fal refused the key. Fix: set FAL_KEY to a valid key from "
            "https://fal.ai/dashboard/keys, or unset it to use the emulator",
            file=sys.stderr,
        )
        return 2
    if result.failed:
        print(f"Failed ({len(result.failed)}):", file=sys.stderr)
        lines = _failure_lines(result, campaign.name, args.pass_name)
        for line in lines[:50]:
            print(line, file=sys.stderr)
        if len(lines) > 50:
            print(f"  ... and {len(lines) - 50} more (falassets lineage)", file=sys.stderr)
        pass_flag = "" if args.pass_name == "draft" else " --pass final"
        print(
            f"Retry: `falassets run {campaign.name}{pass_flag}` renders only what failed or "
            "is missing (completed renders are reused), or in the Dagster UI: Materialize… → "
            "Failed and missing → Launch backfill.",
            file=sys.stderr,
        )
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="render one pass of a campaign through Dagster",
        description=(
            "Validate CAMPAIGN_FILE, copy it into the campaigns folder, register its prompts and "
            "render one pass as Dagster runs recorded in DAGSTER_HOME (they show in "
            "`falassets dev`). Prompts already rendered with the same input are reused, not "
            "billed again. Exit status: 0 every partition succeeded, 1 some failed (listed), "
            "2 bad input or configuration (nothing rendered)."
        ),
        epilog=(
            "examples:\n"
            "  falassets run spring.csv --dry-run          cost and time of the draft pass\n"
            "  falassets run spring.csv                    draft pass (quality=low)\n"
            "  falassets run spring.csv --variants 3       three drafts per prompt\n"
            "  falassets pick spring hero_1 hero_7:2       hero_7's second variant\n"
            "  falassets run spring --pass final --mode refine\n\n"
            "Dagster's own log is kept in the run's event log (open it with `falassets dev`); "
            "--verbose also prints it here."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "campaign_file",
        metavar="CAMPAIGN_FILE",
        help="CSV, JSONL or Parquet file (columns id, prompt, optional image_size, "
        "output_format, variants, tags), or the name of a campaign already in the campaigns "
        "folder",
    )
    parser.add_argument(
        "--pass",
        dest="pass_name",
        choices=("draft", "final"),
        default="draft",
        help="draft: every prompt at quality=low (default); final: the picked winners at high",
    )
    parser.add_argument(
        "--mode",
        choices=("rerun", "refine"),
        help="final pass only: rerun the prompt at high (default), or refine the chosen draft "
        "through the edit endpoint so its composition is kept",
    )
    parser.add_argument(
        "--variants",
        type=int,
        metavar="N",
        help="draft pass: N drafts per prompt (1-4, one request with fal's num_images, priced "
        "as N images) for rows whose 'variants' cell is empty; remembered for the campaign "
        "(--variants 1 goes back to one draft)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help=f"requests in flight at once (default: the resource's, {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--budget-usd",
        type=float,
        help="stop submitting before this pass's spend would exceed this many dollars",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the estimated cost and time and how many renders would be reused; "
        "render nothing, write nothing",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="render again even where the same input was already rendered (bills again)",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="let CAMPAIGN_FILE replace a different campaign file of the same name",
    )
    parser.add_argument(
        "--only",
        metavar="IDS",
        help="only these prompt ids: 'id1,id2' or '@file' with one id a line (e.g. a retry)",
    )
    parser.add_argument(
        "--plain", action="store_true", help="plain progress lines even on a terminal"
    )
    parser.add_argument("--verbose", action="store_true", help="also print Dagster's own log")
    parser.set_defaults(handler=command_run)
