"""`falassets lineage`: query the request lineage through the catalog's DuckDB views."""

from __future__ import annotations

import argparse

from falassets import settings
from falassets.cli.errors import UserError

LINEAGE_EPILOG = """\
views in lineage.duckdb (read-only; they read the journals at query time):
  requests          one row per fal request: request_id, partition_key, campaign, prompt_id,
                    pass, endpoint, input, status, error_type, http_status, attempt,
                    submitted_at, completed_at, image_path, image_uri, sha256, cost_usd,
                    simulated, run_id
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
    from falassets.cli.table import format_table

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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
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
