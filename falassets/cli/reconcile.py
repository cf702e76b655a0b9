"""`falassets reconcile`: record requests fal accepted that no run recorded (orphans).

A thin command over :mod:`falassets.engine.reconcile`: the same engine wiring as a render (key,
emulator, journal, verified downloads), fal's request history for the endpoints lineage uses,
and a one-paragraph report of what was found and what it cost.
"""

from __future__ import annotations

import argparse
import asyncio

from falassets import settings
from falassets.cli.errors import UserError

DESCRIPTION = """\
List fal's request history (default: the last 24 hours) for the endpoints in lineage, and
record every request lineage does not name but whose input is one of our jobs (a submit whose
answer was lost, or a run killed mid-submit). Finished ones are downloaded, so the next run
reuses them instead of paying again; unfinished ones are followed by the next run. They are
rows with error_type 'orphan' in the requests view. Safe to run any time, and twice."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reconcile",
        help="find requests fal billed that no run recorded, record and reuse them",
        description=DESCRIPTION,
        epilog="example: falassets reconcile --campaign spring --since 6",
    )
    parser.add_argument("--campaign", metavar="C", help="only jobs of this campaign")
    parser.add_argument(
        "--since",
        metavar="HOURS",
        type=float,
        default=24.0,
        help="how far back to read fal's history (default 24; fal keeps 24 h by default)",
    )
    parser.set_defaults(handler=command_reconcile)


def command_reconcile(args: argparse.Namespace) -> int:
    if not 0 < args.since <= 24 * 90:
        raise UserError(f"--since must be between 0 and {24 * 90} hours, not {args.since:g}")
    report = asyncio.run(_run(args.campaign, args.since))
    print(report.summary())
    for orphan in report.orphans:
        where = f"{orphan.campaign}/{orphan.prompt_id}" if orphan.campaign else "(no row yet)"
        print(f"  {orphan.request_id}  {where}  {orphan.status}  ${orphan.cost_usd:.2f}")
    return 0


async def _run(campaign: str | None, hours: float):  # -> ReconcileReport
    from fal_client import FalClientHTTPError

    from falassets.engine.reconcile import reconcile, window_start
    from falassets.engine.session import open_engine
    from falassets.pipeline.fal_environment import prepare_fal

    prepare_fal(settings.fal_key())
    async with open_engine(run_id="reconcile", fal_key=settings.fal_key()) as engine:
        try:
            return await reconcile(engine, since=window_start(hours), campaign=campaign)
        except FalClientHTTPError as error:
            status = error.status_code
            hint = "check FAL_KEY" if status in (401, 403) else "try again later"
            raise UserError(f"fal refused the request history ({status}); {hint}") from None
