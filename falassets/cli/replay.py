"""`falassets replay REQUEST_ID [--quality Q]`: send a recorded request's exact input again.

The replay is a new request through the render engine, exactly as a pass's render is: the
machine-wide limiter, the budget cap, the lineage journal (its row carries ``replay_of``, the
original's id) and the verified download. Only ``--quality`` may change the input.

It runs outside Dagster, under a run id of its own (``cli-replay-…``): a replay investigates
one request, it does not materialise a partition, so its row has no ``partition_key`` and
never becomes a prompt's draft or final (freshness, the review board and a refine's reference
image keep following the pipeline's own renders).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid

from falassets import settings
from falassets.cli.errors import UserError
from falassets.cli.show import load_record
from falassets.engine.jobs import RenderJob, RenderOutcome, ReplayError, replay_job
from falassets.engine.model import QUALITIES
from falassets.engine.pricing import estimate
from falassets.lineage.passes import DEFAULT_CONCURRENCY

RUN_ID_PREFIX = "cli-replay-"


def command_replay(args: argparse.Namespace) -> int:
    if args.budget_usd is not None and args.budget_usd <= 0:
        raise UserError("--budget-usd must be more than 0")
    record = load_record(args.request_id)
    try:
        job = replay_job(record.row, quality=args.quality)
    except ReplayError as error:
        raise UserError(f"{error}; nothing was submitted") from None
    print(plan_text(record.row, job))
    if not confirm(job, args.yes):
        raise UserError(
            "replay bills fal: pass --yes to allow it without a terminal (stdin is not one). "
            "Nothing was submitted"
        )
    run_id = f"{RUN_ID_PREFIX}{uuid.uuid4().hex[:12]}"
    outcome = asyncio.run(replay(job, run_id=run_id, budget_usd=args.budget_usd))
    print(outcome_text(outcome, run_id))
    return 0 if outcome.ok else 1


def plan_text(row: dict, job: RenderJob) -> str:
    """What is about to be sent, and its price, before anything is."""
    cost = estimate(job.input, endpoint=job.endpoint)
    was = row.get("input") if isinstance(row.get("input"), dict) else {}
    change = (
        "the recorded input exactly"
        if job.input == was
        else f"the recorded input with quality {job.input.get('quality')} "
        f"(was {was.get('quality', 'unset')})"
    )
    where = f"{row.get('campaign') or '-'}/{row.get('prompt_id') or '-'} ({row.get('pass') or '-'})"
    mode = (
        "simulated on the emulator, nothing billed" if settings.is_simulated() else "billed by fal"
    )
    return (
        f"Replaying {row['request_id']} ({row.get('status')}) of {where} on {job.endpoint}: "
        f"{change}.\nEstimated cost ${cost.usd:.4f} (at most ${cost.max_usd:.4f}), {mode}."
    )


def confirm(job: RenderJob, assume_yes: bool) -> bool:
    """As `doctor --render`: the emulator and --yes go ahead; a terminal is asked; anything
    else (a script, CI) is refused, since a replay bills fal."""
    if assume_yes or settings.is_simulated():
        return True
    if not sys.stdin.isatty():
        return False
    cost = estimate(job.input, endpoint=job.endpoint)
    answer = input(f"Submit this request to fal (about ${cost.usd:.4f}) [y/N] ")
    return answer.strip().lower() in ("y", "yes")


async def replay(job: RenderJob, *, run_id: str, budget_usd: float | None) -> RenderOutcome:
    """Render the replay job through the engine (limiter, budget, journal, download)."""
    from falassets.engine.render_engine import FalAuthError
    from falassets.engine.session import open_engine
    from falassets.pipeline.fal_environment import prepare_fal

    key = settings.fal_key()
    prepare_fal(key)
    try:
        async with open_engine(
            run_id=run_id,
            fal_key=key,
            # the machine-wide cap's default: the replay takes any free slot under it
            concurrency=DEFAULT_CONCURRENCY,
            workers=1,
            budget_usd=budget_usd,
        ) as engine:
            (outcome,) = [outcome async for outcome in engine.render([job])]
            return outcome
    except FalAuthError as error:
        raise UserError(str(error)) from None


def outcome_text(outcome: RenderOutcome, run_id: str) -> str:
    job = outcome.job
    request = outcome.request_id or "no request"
    lines = [f"Replay {request}: {outcome.status} (replay_of {job.replay_of}, run {run_id})"]
    if outcome.ok:
        where = outcome.image_location  # the local path, or the URI in object storage
        lines.append(f"  {outcome.width}x{outcome.height} image verified at {where}")
    else:
        lines.append(f"  {outcome.error_type or 'failed'}: {outcome.error_message or ''}".rstrip())
    lines.append(f"  cost ${outcome.cost_usd:.4f}, {outcome.attempts} submit(s)")
    if outcome.request_id:
        lines.append(
            f"Compare: falassets show {outcome.request_id}  |  falassets show {job.replay_of}"
        )
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="send a recorded request's exact input again, as a new request linked to it",
        description=(
            "Submit the input a request recorded in lineage (exactly as it was sent; "
            "--quality changes that one field) as a new request, through the same limiter, "
            "budget, retries, lineage and verified download as a pass (a retry is a replay "
            "too). Its row in the requests view "
            "has replay_of = REQUEST_ID and no partition_key: a replay is an investigation and "
            "never replaces a prompt's draft or final. It runs outside Dagster (run id "
            "cli-replay-…). The estimated cost is printed first; with FAL_KEY it asks before "
            "submitting (--yes: do not ask; required when stdin is not a terminal). Without "
            "FAL_KEY it runs on the emulator, simulated. Exit 0 completed, 1 failed or "
            "skipped by the budget, 2 bad input (nothing submitted)."
        ),
        epilog="example: falassets replay 0b6f0d7e-... --quality high --budget-usd 0.5",
    )
    parser.add_argument("request_id", metavar="REQUEST_ID", help="a request_id from lineage")
    parser.add_argument("--quality", choices=QUALITIES, help="send it at this quality instead")
    parser.add_argument(
        "--budget-usd", type=float, metavar="X", help="refuse to submit if it may cost more"
    )
    parser.add_argument("--yes", action="store_true", help="do not ask before submitting")
    parser.set_defaults(handler=command_replay)
