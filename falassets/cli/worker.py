"""`falassets worker`: a Celery worker that executes the steps of falassets' runs on this host.

dagster-celery's own `dagster-celery worker start -A dagster_celery.app -y celery.yaml` runs
the same task and works too (deploy/README.md), but its broker and Celery settings come from a
YAML file that must match the runs' executor config by hand. Here both sides take them from
the same environment (``FALASSETS_CELERY_BROKER``/``BACKEND``) and the same code
(``pipeline.celery_executor``), including the settings that let a run notice a lost worker
(``task_track_started``, no prefetch). The command also checks the deployment before it
starts (Postgres and the broker set, ``DAGSTER_HOME`` with its ``dagster.yaml``), and the
worker imports the definitions once, so a broken environment stops it at start instead of
failing every step it takes.
"""

from __future__ import annotations

import argparse
import os
import sys

from falassets import settings
from falassets.cli.deployment_storage import open_deployment
from falassets.cli.errors import UserError

DEFINITIONS = "falassets.pipeline.definitions"


def worker_argv(args: argparse.Namespace) -> list[str]:
    """Celery's ``worker`` arguments. A unique name per worker: runs ping a step's worker by
    name, and two workers sharing one would answer for each other."""
    from falassets.pipeline.celery_executor import QUEUE

    name = args.name or f"falassets-{os.getpid()}"
    argv = ["worker", "--loglevel", args.loglevel, "-n", f"{name}@%h", "-Q", QUEUE]
    if args.concurrency is not None:
        argv += ["--concurrency", str(args.concurrency)]
    return argv


def command_worker(args: argparse.Namespace) -> int:
    """The `worker` command: runs until stopped (SIGTERM: finish the steps it has, then exit)."""
    from falassets.pipeline.launch import prepare_dagster_home

    if args.concurrency is not None and args.concurrency < 1:
        raise UserError("--concurrency must be at least 1")
    if settings.postgres_url() is None:
        raise UserError(
            "FALASSETS_POSTGRES_URL is not set: a worker records its steps in the deployment's "
            "Postgres. Fix: set it to the URL the daemon host uses"
        )
    try:
        broker, backend = settings.celery_broker(), settings.celery_backend()
    except ValueError as error:
        raise UserError(str(error)) from None
    home = prepare_dagster_home()
    open_deployment()  # before Celery forks its pool: see the function
    from falassets.pipeline.celery_executor import QUEUE, worker_app

    app = worker_app(broker, backend, include=[DEFINITIONS])
    print(
        f"falassets worker: steps from queue '{QUEUE}' on the broker in "
        f"FALASSETS_CELERY_BROKER; DAGSTER_HOME={home}; FALASSETS_DATA_DIR={settings.data_dir()}",
        file=sys.stderr,
        flush=True,
    )
    app.worker_main(worker_argv(args))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="execute the steps of runs on this host (FALASSETS_EXECUTOR=celery)",
        description=(
            "A Celery worker for the celery executor: takes the steps of falassets' runs from "
            "the broker in FALASSETS_CELERY_BROKER and executes them on this host, recording "
            "into the deployment's Postgres (FALASSETS_POSTGRES_URL) and the shared "
            "FALASSETS_DATA_DIR. Run one per worker host; stop it with SIGTERM (it finishes "
            "the steps it has) or Ctrl-C twice."
        ),
    )
    parser.add_argument(
        "--concurrency",
        "-c",
        type=int,
        help="steps this host executes at once (default: Celery's, the number of CPUs)",
    )
    parser.add_argument(
        "--name",
        "-n",
        help="this worker's name, unique in the deployment (default: falassets-PID); "
        "Celery appends @HOSTNAME",
    )
    parser.add_argument("--loglevel", default="INFO", help="Celery's log level (default INFO)")
    parser.set_defaults(handler=command_worker)
