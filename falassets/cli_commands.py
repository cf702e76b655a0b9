"""`falassets pick`, `falassets lineage` and `falassets dev`: the small commands."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from falassets import settings
from falassets.cli_errors import UserError
from falassets.cli_run import CAMPAIGN_SUFFIXES

# -- pick -------------------------------------------------------------------------------------


def known_campaigns() -> dict[str, Path]:
    """Campaign name -> its file in the campaigns folder."""
    folder = settings.campaigns_dir()
    found: dict[str, Path] = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in CAMPAIGN_SUFFIXES and not path.name.startswith("."):
                found.setdefault(path.stem, path)
    return found


def campaign_prompt_ids(campaign: str) -> tuple[list[str], Path]:
    """The prompt ids of a known campaign (from its file, else its normalised table)."""
    from falassets.campaigns import CampaignError, load_campaign, read_table

    files = known_campaigns()
    if campaign in files:
        try:
            loaded = load_campaign(files[campaign])
        except CampaignError as error:
            raise UserError(str(error)) from None
        return [row.prompt_id for row in loaded.rows], files[campaign]
    try:
        table = read_table(campaign, settings.tables_dir())
    except (FileNotFoundError, CampaignError, OSError, NotImplementedError):
        names = ", ".join(files) or "none yet"
        raise UserError(
            f"unknown campaign '{campaign}' (known: {names}). Fix: use the file's stem as the "
            f"campaign name, or add it with `falassets run FILE` (files in "
            f"{settings.campaigns_dir()})"
        ) from None
    return [row.prompt_id for row in table.rows], settings.tables_dir()


def command_pick(args: argparse.Namespace) -> int:
    from falassets.decisions import DecisionError, record_decisions

    decision = "reject" if args.reject else "undecided" if args.undecided else "pick"
    ids, where = campaign_prompt_ids(args.campaign)
    known = set(ids)
    unknown = [prompt_id for prompt_id in dict.fromkeys(args.prompt_ids) if prompt_id not in known]
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
        record_decisions(args.campaign, args.prompt_ids, decision, source="cli")
    except DecisionError as error:
        raise UserError(str(error)) from None
    count = len(set(args.prompt_ids))
    print(f"Recorded '{decision}' for {count} prompt(s) of '{args.campaign}'.")
    if decision == "pick":
        print(f"Render the winners: falassets run {args.campaign} --pass final [--mode refine]")
    return 0


# -- lineage ----------------------------------------------------------------------------------

LINEAGE_EPILOG = """\
views in lineage.duckdb (read-only; they read the journals at query time):
  requests          one row per fal request: request_id, partition_key, campaign, prompt_id,
                    pass, endpoint, input, status, error_type, http_status, attempt,
                    submitted_at, completed_at, image_path, sha256, cost_usd, simulated, run_id
  latest_renders    the latest request per partition_key and pass
  failures_by_type  failed/cancelled requests by campaign, pass and error_type
  cost_by_campaign  requests, statuses and spend per campaign and pass
  pending           requests still waiting at fal, oldest first
  decisions         the latest reviewer decision per campaign and prompt_id
  winners           prompts whose latest decision is 'pick'
  request_events, decision_events: every snapshot ever written (forensics)

examples:
  falassets lineage
  falassets lineage "select error_type, count(*) from requests where status='failed' group by 1"
  falassets lineage "select * from cost_by_campaign"

the same database in the DuckDB shell (pip install duckdb-cli), safe while runs write:
  duckdb -readonly {db}
"""


SUMMARY_SQL = "SELECT * FROM cost_by_campaign"


def command_lineage(args: argparse.Namespace) -> int:
    """Every answer, the default summary included, comes from the catalog's DuckDB views, so
    `falassets lineage` and a user's `duckdb -readonly` shell never disagree."""
    from falassets.cli_table import format_table

    columns, rows = _lineage_query(SUMMARY_SQL if args.sql is None else args.sql)
    db = settings.lineage_db_path()
    if args.sql is not None:
        print(format_table(columns, rows))
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    elif not rows:
        print(
            f"No requests recorded yet (journals in {settings.journal_dir()}). "
            "Try `falassets demo` or `falassets run FILE`."
        )
    else:
        print(format_table(columns, rows))
        print(f'\nMore: falassets lineage "SQL"  or  duckdb -readonly {db}')
    return 0


def _lineage_query(sql: str) -> tuple[list[str], list[tuple]]:
    """Run SQL in the catalog's sandbox; DuckDB's refusals and errors become one-line
    UserErrors (exit 2) that say which is which."""
    import duckdb

    from falassets.lineage import catalog

    try:
        return catalog.query(sql)
    except catalog.CatalogError as error:
        raise UserError(str(error)) from None
    except duckdb.Error as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if catalog.is_sandbox_refusal(error):
            raise UserError(
                f"refused: `falassets lineage` only reads the lineage views; it cannot write "
                f"or read files, attach databases, install or load extensions or change "
                f"settings (DuckDB: {first}). Fix: query the views (`falassets lineage --help` "
                f"lists them); for anything else use the DuckDB shell: duckdb -readonly "
                f"{settings.lineage_db_path()}"
            ) from None
        raise UserError(
            f"SQL error: {first}. Fix: check the query; `falassets lineage --help` lists the views"
        ) from None


# -- dev --------------------------------------------------------------------------------------

WORKSPACE_YAML = """\
load_from:
  - python_module:
      module_name: falassets.definitions
"""


def _dagster_executable() -> str:
    beside = Path(sys.executable).parent / "dagster"
    if beside.exists():
        return str(beside)
    found = shutil.which("dagster")
    if found is None:
        raise UserError("the `dagster` command is not installed. Fix: pip install -e '.[dev]'")
    return found


def start_builtin_emulator() -> int | None:
    """Make sure the built-in emulator answers; return its pid when this call started it."""
    from falassets import sim_process
    from falassets.sim.control import ensure_builtin_emulator

    before = sim_process.recorded_pid()
    try:
        ensure_builtin_emulator()
    except RuntimeError as error:
        raise UserError(str(error).replace("\n", " ")) from None
    after = sim_process.recorded_pid()
    return after if after != before else None


def _stop_started_emulator(pid: int) -> None:
    """`falassets dev` stops the emulator it started, unless renders are still waiting on it."""
    from falassets import sim_process

    try:
        print(f"falassets dev: {sim_process.stop_builtin()}")
    except UserError as error:
        print(f"falassets dev: left the fal emulator (pid {pid}) running: {error}", file=sys.stderr)


def command_dev(args: argparse.Namespace) -> int:
    from falassets.cli_warnings import dagster_dev_env
    from falassets.launch import prepare_dagster_home

    started: int | None = None
    if settings.is_simulated():
        if settings.uses_builtin_emulator():
            started = start_builtin_emulator()
            print(
                f"FAL_KEY is unset: using the built-in emulator at {settings.default_sim_address()}"
                + (" (started now; stopped when this command ends)" if started else "")
            )
        else:
            print(f"FAL_KEY is unset: using the emulator at {os.environ['FAL_QUEUE_RUN_HOST']}")
    else:
        print("FAL_KEY is set: renders go to fal.ai and are billed")
    home = prepare_dagster_home()
    workspace = Path.cwd() / "workspace.yaml"
    temporary: Path | None = None
    if not workspace.is_file():
        handle, name = tempfile.mkstemp(prefix="falassets-workspace-", suffix=".yaml")
        os.close(handle)
        temporary = workspace = Path(name)
        workspace.write_text(WORKSPACE_YAML)
    command = [_dagster_executable(), "dev", "-w", str(workspace), "--host", args.host]
    extra = list(args.dagster_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    command += ["--port", str(args.port), *extra]
    print(f"DAGSTER_HOME={home}; Dagster UI on http://{args.host}:{args.port} (Ctrl-C stops it)")
    try:
        return _run_until_stopped(
            command, dagster_dev_env({**os.environ, "DAGSTER_HOME": str(home)})
        )
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        if started is not None:
            _stop_started_emulator(started)


def _run_until_stopped(command: list[str], env: dict[str, str]) -> int:
    """Run `dagster dev` and stop it gracefully on Ctrl-C, SIGTERM or SIGHUP.

    The child gets its own process group, so a Ctrl-C reaches it once (from us) rather than
    twice (a second interrupt would cut its shutdown of the webserver and daemon short), and
    our handlers are installed before it starts so it never inherits an ignored SIGINT (as a
    background job would), which would make it deaf to the stop request.
    """
    child: subprocess.Popen[bytes] | None = None
    stopping = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        if child is not None and child.poll() is None and not stopping:
            stopping = True
            child.send_signal(signal.SIGINT)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, forward) for signum in handled}
    try:
        child = subprocess.Popen(command, env=env, process_group=0)
        code = child.wait()
        return 0 if stopping else code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if child is not None and child.poll() is None:  # we are dying for another reason
            child.terminate()
            child.wait(timeout=30)


# -- parsers ----------------------------------------------------------------------------------


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    pick = subparsers.add_parser(
        "pick",
        help="record review decisions without the web page",
        description=(
            "Record a decision for prompts of a campaign: pick (default: the prompt goes to "
            "the final pass), --reject, or --undecided (clear an earlier decision). The latest "
            "decision wins; the review page and this command write the same record."
        ),
        epilog="example: falassets pick spring hero_1 hero_7 && falassets run spring --pass final",
    )
    pick.add_argument("campaign", metavar="CAMPAIGN", help="campaign name (the file's stem)")
    pick.add_argument("prompt_ids", metavar="PROMPT_ID", nargs="+", help="ids from the 'id' column")
    choice = pick.add_mutually_exclusive_group()
    choice.add_argument("--reject", action="store_true", help="reject instead of pick")
    choice.add_argument("--undecided", action="store_true", help="clear the decision")
    pick.set_defaults(handler=command_pick)

    lineage = subparsers.add_parser(
        "lineage",
        help="query the request lineage (default: a summary per campaign and pass)",
        description=(
            "Without SQL: requests, statuses and spend per campaign and pass. With SQL: runs it "
            f"read-only on {settings.lineage_db_path()} and prints a table."
        ),
        epilog=LINEAGE_EPILOG.format(db=settings.lineage_db_path()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lineage.add_argument("sql", metavar="SQL", nargs="?", help="a DuckDB query over the views")
    lineage.set_defaults(handler=command_lineage)

    dev = subparsers.add_parser(
        "dev",
        help="the emulator (when FAL_KEY is unset) plus `dagster dev`, wired together",
        description=(
            "Start the built-in fal emulator when FAL_KEY is unset, point DAGSTER_HOME at "
            f"{settings.dagster_home()} (runs from `falassets run` show up there) and run "
            "`dagster dev` with ./workspace.yaml, or with falassets.definitions when there is "
            "none. Arguments after `--` go to `dagster dev`."
        ),
    )
    dev.add_argument("--host", default="127.0.0.1", help="address of the UI (default 127.0.0.1)")
    dev.add_argument("--port", type=int, default=3000, help="port of the UI (default 3000)")
    dev.add_argument("dagster_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    dev.set_defaults(handler=command_dev)
