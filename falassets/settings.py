"""Where falassets keeps things, and which fal it talks to.

Every path comes from ``FALASSETS_DATA_DIR`` (default ``./data``) so a whole deployment,
a test or a benchmark can be pointed somewhere else with one variable.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Where the built-in emulator listens when ``FAL_KEY`` is unset and nothing else is configured.
DEFAULT_SIM_HOST = "127.0.0.1"
DEFAULT_SIM_PORT = 47615


def data_dir() -> Path:
    """Root of campaigns, renders, lineage, decisions and the default ``DAGSTER_HOME``."""
    return Path(os.environ.get("FALASSETS_DATA_DIR", "data")).expanduser().resolve()


def campaigns_dir() -> Path:
    return data_dir() / "campaigns"


def tables_dir() -> Path:
    """Normalised campaign tables (Parquet), one per campaign."""
    return data_dir() / "tables"


def renders_dir() -> Path:
    """Downloaded outputs: ``renders/<campaign>/<pass>/<prompt_id>-<sha12>.<ext>``."""
    return data_dir() / "renders"


def renders_uri() -> str:
    """Where outputs are written and read (``FALASSETS_RENDERS_URI``): ``s3://bucket/prefix``,
    ``gs://...``, ``file:///...``, any fsspec URL, or a plain folder. Unset: :func:`renders_dir`,
    a plain folder, as before the variable existed. Opened by ``falassets.storage.renders``."""
    return os.environ.get("FALASSETS_RENDERS_URI", "").strip() or str(renders_dir())


def journal_dir() -> Path:
    """Append-only JSONL journals (requests, decisions); the source of truth for lineage."""
    return data_dir() / "lineage"


def lineage_db_path() -> Path:
    return data_dir() / "lineage.duckdb"


def state_dir() -> Path:
    """Small machine-local state: limiter slot locks, emulator certificate and pid file."""
    return data_dir() / ".state"


def postgres_url() -> str | None:
    """The deployment's Postgres (``FALASSETS_POSTGRES_URL``): Dagster's storage and the one
    fal cap every host shares (``engine/cap_postgres.py``). Unset: the cap is flock files on
    this machine. Holds a password: never log it."""
    return os.environ.get("FALASSETS_POSTGRES_URL", "").strip() or None


def dagster_home() -> Path:
    env = os.environ.get("DAGSTER_HOME")
    return Path(env).expanduser().resolve() if env else data_dir() / "dagster_home"


AUTO_FINAL_MODES = ("rerun", "refine")


def _choice(variable: str, allowed: tuple[str, ...], what: str, after: str = "") -> str:
    """One of ``allowed`` from the environment (the first when unset), or ValueError naming
    the variable, the values it takes and the fix."""
    value = os.environ.get(variable, "").strip().lower() or allowed[0]
    if value not in allowed:
        options = " or ".join(allowed)
        raise ValueError(
            f"{variable}={value!r} is not {what}. Fix: set it to {options}, or unset it "
            f"({allowed[0]}){', ' + after if after else ''}."
        )
    return value


def auto_final_mode() -> str:
    """How newly picked winners are rendered by the winners sensor and the review page's
    "Render winners" (``FALASSETS_AUTO_FINAL_MODE``): ``rerun`` (default, the prompt again at
    high) or ``refine`` (the picked draft edited at high, keeping its composition). Raises
    ValueError naming the fix for anything else."""
    return _choice(
        "FALASSETS_AUTO_FINAL_MODE",
        AUTO_FINAL_MODES,
        "a final mode",
        "and restart `falassets dev` or `falassets review`",
    )


def fal_key() -> str | None:
    """The fal key, or None when we run on the emulator. Never log the return value."""
    key = os.environ.get("FAL_KEY", "").strip()
    return key or None


def is_simulated() -> bool:
    """Without a key everything is rendered by the emulator and labelled simulated."""
    return fal_key() is None


def default_sim_address() -> str:
    port = int(os.environ.get("FALASSETS_SIM_PORT", DEFAULT_SIM_PORT))
    return f"{DEFAULT_SIM_HOST}:{port}"


def builtin_sim_dir() -> Path:
    """The built-in emulator's folder: pid file, log, start lock, accepted requests, CA."""
    return state_dir() / "sim"


def sim_cert_file() -> Path:
    """CA certificate of the built-in emulator (what ``SSL_CERT_FILE`` points at)."""
    return builtin_sim_dir() / "ca.pem"


def configure_fal_environment() -> None:
    """Point fal_client at the built-in emulator when there is no key.

    fal_client reads ``FAL_QUEUE_RUN_HOST`` once, at import, so the entry points call this
    (through ``falassets.pipeline.fal_environment``) first thing; importing falassets changes
    no environment. An explicit ``FAL_QUEUE_RUN_HOST`` (a test emulator, a proxy) always
    wins, with the caller's ``SSL_CERT_FILE``. When falassets picks the built-in emulator it
    picks the trust too: a machine-wide ``SSL_CERT_FILE`` (the system bundle, set on many
    machines) cannot know the emulator's own CA, and every render would fail certificate
    verification.
    """
    if fal_key() is not None or os.environ.get("FAL_QUEUE_RUN_HOST"):
        return
    os.environ["FAL_QUEUE_RUN_HOST"] = default_sim_address()
    os.environ["SSL_CERT_FILE"] = str(sim_cert_file())
    no_proxy = os.environ.get("NO_PROXY", "")
    if "127.0.0.1" not in no_proxy:
        os.environ["NO_PROXY"] = ",".join(p for p in (no_proxy, "127.0.0.1,localhost") if p)


def uses_builtin_emulator() -> bool:
    """True when falassets itself must start (or reuse) the emulator at the default address."""
    return is_simulated() and os.environ.get("FAL_QUEUE_RUN_HOST") == default_sim_address()


# -- the distributed deployment (issue 13): executor and run size --------------------------------

EXECUTORS = ("in_process", "celery")


def executor() -> str:
    """Where the steps of Dagster runs execute (``FALASSETS_EXECUTOR``): ``in_process`` (default:
    in the process that runs them, as always) or ``celery`` (on ``falassets worker`` hosts, through
    the broker ``FALASSETS_CELERY_BROKER``). Raises ValueError naming the fix for anything else."""
    return _choice("FALASSETS_EXECUTOR", EXECUTORS, "an executor")


def celery_broker() -> str:
    """The Celery broker URL (``FALASSETS_CELERY_BROKER``, e.g. ``redis://host:6379/0``), which
    the runs and every worker must share. Raises ValueError naming the fix when unset. Never log
    it: it may hold a password."""
    url = os.environ.get("FALASSETS_CELERY_BROKER", "").strip()
    if not url:
        raise ValueError(
            "FALASSETS_CELERY_BROKER is not set. Fix: set it to the broker every host shares "
            "(e.g. redis://broker-host:6379/0), or unset FALASSETS_EXECUTOR to run in process."
        )
    return url


def celery_backend_variable() -> str:
    """The variable holding the URL where Celery keeps task results and states:
    ``FALASSETS_CELERY_BACKEND`` when set, else ``FALASSETS_CELERY_BROKER`` (Redis serves both).
    Dagster's executor config names the variable, so no URL is ever written into config."""
    if os.environ.get("FALASSETS_CELERY_BACKEND", "").strip():
        return "FALASSETS_CELERY_BACKEND"
    return "FALASSETS_CELERY_BROKER"


def celery_backend() -> str:
    """The result backend's URL (see :func:`celery_backend_variable`). Never log it."""
    celery_broker()  # unset broker: the error that names the fix
    return os.environ[celery_backend_variable()].strip()


def celery_worker_lost_s() -> float:
    """How long a worker running a step may stay silent (no answer to Celery's ping) before the
    step counts as lost and its run fails (``FALASSETS_CELERY_WORKER_LOST_S``, default 60 s)."""
    raw = os.environ.get("FALASSETS_CELERY_WORKER_LOST_S", "").strip()
    try:
        value = float(raw) if raw else 60.0
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(
            f"FALASSETS_CELERY_WORKER_LOST_S={raw!r} is not a number of seconds. Fix: set it to "
            "a positive number (e.g. 60) or unset it."
        )
    return value


def partitions_per_run() -> int | None:
    """At most this many partitions per run of a pass (``FALASSETS_PARTITIONS_PER_RUN``), so an
    executor can spread one pass over several hosts; None (unset): one run per contiguous
    stretch of partitions, as always. Raises ValueError naming the fix for a bad value."""
    raw = os.environ.get("FALASSETS_PARTITIONS_PER_RUN", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(
            f"FALASSETS_PARTITIONS_PER_RUN={raw!r} is not a whole number of partitions. Fix: "
            "set it to 1 or more (e.g. 25), or unset it (one run per stretch of partitions)."
        )
    return int(raw)
