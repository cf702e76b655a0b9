"""Opening a Postgres deployment's Dagster storage before a command starts what depends on it."""

from __future__ import annotations

from falassets import settings
from falassets.cli.errors import UserError


def open_deployment() -> None:
    """Open the deployment's Dagster instance in this process, creating Dagster's schema in a
    new database, and load what a step loads on first use (dagster-postgres, psycopg2, the
    Postgres fal cap). A database this process cannot reach stops the command here, naming
    its host and never the URL's password.

    Why, for `falassets worker`: Celery forks the pool processes that run steps from this
    process, so they inherit it all, and each host's first step starts ~0.4 s sooner
    (bench/README.md); and a worker that cannot reach the database stops at start instead of
    failing every step it takes. For `falassets dev`: the webserver and daemon of `dagster dev`
    open the instance at the same moment, and on a new database both would create the schema.
    The open goes through ``launch.dagster_instance`` (``deployment.open_instance``: hosts
    started together take turns creating the schema). No connection outlives this call:
    Dagster's Postgres storages connect per use unless dagster.yaml sets a pool."""
    from falassets.engine import cap_postgres
    from falassets.pipeline.launch import dagster_instance

    try:
        dagster_instance().get_run_records(limit=1)
    except Exception as error:  # sqlalchemy's or psycopg2's: never print the URL it may hold
        raise UserError(
            f"cannot open the deployment's Dagster storage on "
            f"{cap_postgres.where(settings.postgres_url() or '')} ({type(error).__name__}). "
            "Fix: start Postgres or correct FALASSETS_POSTGRES_URL (and the home's dagster.yaml)"
        ) from None
