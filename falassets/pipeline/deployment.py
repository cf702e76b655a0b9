"""Which of Dagster's deployment pieces run falassets, chosen by configuration (the environment),
never by code edits (issue 13). Unset, everything is the embedded default, exactly as before.

- ``FALASSETS_EXECUTOR``: ``in_process`` is Dagster's default executor (every step in the
  process running the run); ``celery`` runs steps on ``falassets worker`` hosts through the
  broker (:mod:`falassets.pipeline.celery_executor`).
- ``FALASSETS_PARTITIONS_PER_RUN=K``: a pass is split into runs of at most K partitions, by
  the pass assets' backfill policy (UI backfills) and by the launch path alike, so an executor
  can spread one pass over several hosts.
- ``FALASSETS_POSTGRES_URL``: a new ``DAGSTER_HOME`` gets :data:`POSTGRES_DAGSTER_YAML`
  (``deploy/dagster.yaml`` is the same file, for hosts set up by hand).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import dagster as dg

from falassets import settings

#: Dagster's default executor (what ``FALASSETS_EXECUTOR=in_process`` keeps).
DEFAULT_EXECUTOR = "multi_or_in_process_executor"
#: Upper bound on the runs of one pass the launch path keeps going at once: each is a Python
#: process of its own on the launching host (~150 MB with Dagster loaded, measured).
MAX_RUNS_AT_ONCE = 8

#: The instance of a deployment on several hosts. Every value that differs per host is an
#: ``env:`` reference: a worker opens the launching host's description of the instance and
#: resolves them with its own environment.
POSTGRES_DAGSTER_YAML = """\
# Dagster instance of a falassets deployment on several hosts (deploy/README.md). falassets
# writes this into a new DAGSTER_HOME when FALASSETS_POSTGRES_URL is set; the same file serves
# the webserver/daemon host and every worker host. Edit freely: falassets never overwrites it.
telemetry:
  enabled: false

# Runs, event log and schedules in the deployment's Postgres (the fal cap shares it). The
# event log is dagster-postgres's, writing a run's planned events in one statement
# (falassets/pipeline/event_log_postgres.py); batch_writes: false gives dagster-postgres's own
# writes back, as does its one-block form: storage: {postgres: {postgres_url: ...}}.
run_storage:
  module: dagster_postgres.run_storage
  class: PostgresRunStorage
  config:
    postgres_url:
      env: FALASSETS_POSTGRES_URL
event_log_storage:
  module: falassets.pipeline.event_log_postgres
  class: BatchedPostgresEventLogStorage
  config:
    postgres_url:
      env: FALASSETS_POSTGRES_URL
    batch_writes: true
schedule_storage:
  module: dagster_postgres.schedule_storage
  class: PostgresScheduleStorage
  config:
    postgres_url:
      env: FALASSETS_POSTGRES_URL

# On the daemon host: runs launched from the UI, sensors and backfills wait in a queue, and
# the daemon starts at most max_concurrent_runs of them, each as a run-worker process here
# that orchestrates its step on a celery worker host. A few runs at once keep fal's cap busy
# (FALASSETS_PARTITIONS_PER_RUN partitions each); more only wait on the cap.
run_coordinator:
  module: dagster
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 8
run_launcher:
  module: dagster
  class: DefaultRunLauncher
# A run whose run worker never came up fails instead of staying STARTING.
run_monitoring:
  enabled: true
  start_timeout_seconds: 180

# Files Dagster keeps on the host that executes a step: that host's own DAGSTER_HOME.
local_artifact_storage:
  module: dagster._core.storage.root
  class: LocalArtifactStorage
  config:
    base_dir:
      env: DAGSTER_HOME
# Step stdout/stderr would stay on the worker host, out of the webserver's reach; every
# falassets message goes to Dagster's event log (Postgres) instead. To keep stdout too, use
# dagster-aws's S3ComputeLogManager or dagster-gcp's GCSComputeLogManager here.
compute_logs:
  module: dagster._core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
"""


def executor_def() -> dg.ExecutorDefinition | None:
    """The executor of every job (``Definitions(executor=...)``); None: Dagster's default.

    The broker and backend are ``env:`` references resolved when a run starts, so no URL (and
    no password in one) is ever written into a job's config. Raises ValueError naming the fix
    for a bad ``FALASSETS_EXECUTOR`` or a missing broker."""
    if settings.executor() == "in_process":
        return None
    from falassets.pipeline.celery_executor import SHARED_CELERY_SETTINGS, celery_executor

    settings.celery_broker()  # unset: the error that names the fix, when the code loads
    return celery_executor.configured(
        {
            "broker": {"env": "FALASSETS_CELERY_BROKER"},
            "backend": {"env": settings.celery_backend_variable()},
            "config_source": SHARED_CELERY_SETTINGS,
            "worker_lost_after_s": settings.celery_worker_lost_s(),
        },
        name="celery",
    )


def backfill_policy() -> dg.BackfillPolicy:
    """The pass assets' policy: one run per range (default), or runs of at most K partitions.
    Either way a backfill of "failed and missing" targets exactly those partitions."""
    per_run = settings.partitions_per_run()
    if per_run is None:
        return dg.BackfillPolicy.single_run()
    return dg.BackfillPolicy.multi_run(per_run)


def split_runs(stretches: Sequence[Sequence[str]], per_run: int | None) -> list[list[str]]:
    """Contiguous stretches of partition keys → the keys of each run, each stretch cut into
    consecutive pieces of at most ``per_run`` keys (a piece of a range is still a range)."""
    if per_run is None:
        return [list(stretch) for stretch in stretches]
    return [
        list(stretch[start : start + per_run])
        for stretch in stretches
        for start in range(0, len(stretch), per_run)
    ]


def runs_at_once(runs: int, concurrency: int, per_run: int | None) -> int:
    """How many runs of a pass the launch path keeps going at once.

    Without a run size, one (as always). With K partitions per run: enough runs that their
    partitions fill the fal cap twice over, ``ceil(2 * concurrency / K)``, so one run's last
    renders and the next run's start (a new run, a task on a worker host, the engine reading
    lineage) leave no place idle; at least 2, so two hosts work from the start; at most
    :data:`MAX_RUNS_AT_ONCE`. More would only wait on the cap while holding worker slots."""
    if per_run is None or runs <= 1:
        return 1
    wanted = max(2, math.ceil(2 * concurrency / per_run))
    return min(runs, wanted, MAX_RUNS_AT_ONCE)


def execution_config(executor_name: str | None) -> dict[str, Any] | None:
    """The run config's ``execution`` block for a run launched from this process; None: the
    executor's own config (celery is configured in the definitions). Dagster's default
    executor runs the step in the launching process: no subprocess to start, and that
    process is the run's own (runs that go at once get a process each, ``launch.run_pass``)."""
    if executor_name != DEFAULT_EXECUTOR:
        return None
    return {"config": {"in_process": {}}}


#: The tables whose absence makes dagster-postgres 0.29 create a storage's schema as it opens
#: (run storage: runs, instance_info; event log: event_logs; schedules: jobs).
DAGSTER_TABLES = ("runs", "instance_info", "event_logs", "jobs")
_SCHEMA_INCOMPLETE = (
    "SELECT count(*) < %(n)s FROM pg_tables "
    "WHERE schemaname = current_schema() AND tablename = ANY(%(tables)s)"
)


def open_instance() -> dg.DagsterInstance:
    """``DagsterInstance.get()``; on a Postgres deployment whose database lacks Dagster's
    tables, under the deployment's schema lock.

    Why: the first open of a fresh database creates and migrates Dagster's schema, and hosts
    started together (a compose file, a test's two workers) would all create it at once.
    Postgres lets one win and fails the others on its catalog. dagster-postgres retries a
    duplicate table or a unique violation while it creates the tables, but not any other
    error, nor one from the migrations and reindexing it runs right after.
    Holding the lock the fal cap's table is created under, one process creates the schema and
    the others then find it. Once the tables exist, opens take no lock: a pass's run
    processes open their instances at the same moment and must not queue."""
    url = settings.postgres_url()
    if url is None:
        return dg.DagsterInstance.get()
    import psycopg2

    from falassets.engine.cap_postgres import CONNECT_TIMEOUT_S, SCHEMA_LOCK_KEY

    connection = psycopg2.connect(
        url, connect_timeout=CONNECT_TIMEOUT_S, application_name="falassets-schema-lock"
    )
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(
                _SCHEMA_INCOMPLETE, {"n": len(DAGSTER_TABLES), "tables": list(DAGSTER_TABLES)}
            )
            if cursor.fetchone()[0]:
                cursor.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
        return dg.DagsterInstance.get()
    finally:
        connection.close()  # ends the session, and with it any lock it took


def check(instance: dg.DagsterInstance) -> None:
    """Before a pass: raise ValueError naming the fix for a bad deployment setting, or when
    the celery executor could never run a step (its workers open this instance from other
    hosts, so it cannot be SQLite on this machine). Nothing has run yet when this raises."""
    settings.partitions_per_run()
    if settings.executor() != "celery":
        return
    settings.celery_broker()
    settings.celery_worker_lost_s()
    storage = type(instance.run_storage).__name__
    if "sqlite" in storage.lower():
        raise ValueError(
            f"FALASSETS_EXECUTOR=celery, but DAGSTER_HOME ({settings.dagster_home()}) keeps its "
            "runs in SQLite on this machine, which workers on other hosts cannot read. Fix: set "
            "FALASSETS_POSTGRES_URL and use a DAGSTER_HOME without a dagster.yaml (falassets "
            "writes the Postgres one), or copy deploy/dagster.yaml into it."
        )
