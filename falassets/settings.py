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


def auto_final_mode() -> str:
    """How the winners sensor renders newly picked winners (``FALASSETS_AUTO_FINAL_MODE``):
    ``rerun`` (default, the prompt again at high) or ``refine`` (the picked draft edited at
    high, keeping its composition). Raises ValueError naming the fix for anything else."""
    mode = os.environ.get("FALASSETS_AUTO_FINAL_MODE", "").strip().lower() or "rerun"
    if mode not in AUTO_FINAL_MODES:
        raise ValueError(
            f"FALASSETS_AUTO_FINAL_MODE={mode!r} is not a final mode. Fix: set it to rerun or "
            "refine, or unset it (rerun), and restart `falassets dev`."
        )
    return mode


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
