"""The `falassets` command: one entry point, one small module per command.

User errors (bad campaign files, unknown ids, bad options) are one line on stderr and exit
status 2, never a traceback; ``sim`` and ``review`` hand their arguments to their own parsers.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from falassets import settings
from falassets.cli.errors import UserError
from falassets.pipeline import fal_environment
from falassets.process_exit import end_without_teardown
from falassets.storage.renders import RendersUriError, check_renders_uri

DESCRIPTION = """\
Render image campaigns through fal.ai's queue (GPT Image 2) as a Dagster asset pipeline:
cheap drafts of every prompt, a human pick, finals of the winners, lineage of every request.
Without FAL_KEY everything runs on the built-in emulator and is labelled simulated."""

EPILOG = """\
start here:
  falassets doctor [--render]          is this machine ready for fal? (key, TLS, history)
  falassets demo                       the whole flow on the emulator, then where to look
  falassets run data/campaigns/example.csv --dry-run
  falassets run data/campaigns/example.csv
  falassets review                     pick winners in the browser
  falassets run example --pass final --mode refine
  falassets lineage                    what was requested, what it cost
  falassets show REQUEST_ID            one request: exact input, status, files, run, fal's answer
  falassets replay REQUEST_ID          send that exact input again (--quality Q), linked to it
  falassets dev [--port 3000]          the Dagster UI on the same runs
  falassets sim status|stop            the built-in fal emulator (FALASSETS_SIM_PORT, 47615)

environment: FALASSETS_DATA_DIR (default ./data), FAL_KEY (unset: emulator), DAGSTER_HOME
(default $FALASSETS_DATA_DIR/dagster_home). `falassets COMMAND --help` for details."""

DELEGATED = {
    "sim": (
        "falassets.sim.server",
        "the fal queue emulator in the foreground; `falassets sim status|stop` for the "
        "built-in one",
    ),
    "review": ("falassets.review.app", "the review web page on 127.0.0.1"),
}


def build_parser() -> argparse.ArgumentParser:
    from falassets.cli import demo, dev, doctor, lineage, pick, reconcile, replay, run, show, worker

    parser = argparse.ArgumentParser(
        prog="falassets",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    run.add_parser(subparsers)
    for command in (pick, lineage, show, replay, dev, demo, reconcile, doctor, worker):
        command.add_parser(subparsers)
    for name, (_module, summary) in DELEGATED.items():
        subparsers.add_parser(name, help=summary, add_help=False)
    return parser


#: `falassets sim ACTION`: the built-in emulator's life cycle (any other `sim` arguments run
#: an emulator in the foreground, as they always have).
SIM_ACTIONS = ("status", "stop")


def _delegate(name: str, argv: list[str]) -> int:
    import importlib

    if name == "sim" and argv[:1] and argv[0] in SIM_ACTIONS:
        from falassets.cli import emulator

        return emulator.main(argv)
    module = importlib.import_module(DELEGATED[name][0])
    # The emulator knows nothing of settings: `falassets sim` hands it the built-in CA folder.
    extra = {"default_cert_dir": settings.sim_cert_file().parent} if name == "sim" else {}
    try:
        return int(module.main(argv, **extra) or 0)
    except SystemExit as exit_:  # its own argparse: --help, or a usage error it printed
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2


#: Commands that end without Python's module teardown (``falassets.process_exit``): a pass
#: has written and fsynced everything before its summary line.
TEARDOWN_FREE = frozenset({"run"})


def console_main() -> NoReturn:
    """The console script and ``python -m falassets.cli``: :func:`main`, then exit with its
    status (tests call :func:`main`, which returns)."""
    argv = sys.argv[1:]
    status = [1]  # an exception out of main: Python prints it, then the process ends with 1
    if argv[:1] and argv[0] in TEARDOWN_FREE:
        end_without_teardown(lambda: status[0])
    status[0] = main(argv)
    raise SystemExit(status[0])


def main(argv: list[str] | None = None) -> int:
    from falassets.cli import emulator
    from falassets.cli.dagster_notices import quiet_dagster_notices

    argv = list(sys.argv[1:] if argv is None else argv)
    fal_environment.configure()
    quiet_dagster_notices()
    emulator_before = emulator.recorded_pid()
    try:
        return _dispatch(argv)
    finally:
        notice = None if argv[:1] == ["sim"] else emulator.leftover_notice(emulator_before)
        if notice:
            print(f"falassets: {notice}", file=sys.stderr)


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in DELEGATED:
        return _delegate(argv[0], argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse already printed
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        check_renders_uri()  # a bad FALASSETS_RENDERS_URI: one line and exit 2, before any work
        return int(args.handler(args) or 0)
    except (UserError, RendersUriError) as error:
        print(f"falassets {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"falassets {args.command}: interrupted", file=sys.stderr)
        return 130
