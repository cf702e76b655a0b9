"""The DuckDB catalog over the journals: ``$FALASSETS_DATA_DIR/lineage.duckdb``.

The database holds only views over the JSONL journals, with absolute paths, so it works from
any current directory. It is built once (in a temporary file, moved into place with
``os.replace`` under a file lock, so racing processes are safe) and from then on it is only
ever opened **read-only**, by everyone: a user's DuckDB shell never blocks a run and a run
never blocks the user. It is rebuilt when its definition (catalog version, columns, journal
folder) no longer matches this code. It is written with DuckDB's ``v1.4.0`` storage format
so the PyPI DuckDB shell opens it: ``duckdb -readonly data/lineage.duckdb``.

Rows a run appended a moment ago are visible to the next query, on a new connection or on one
already open: the views read the journal files at query time.

Views (all timestamps are ``TIMESTAMPTZ``):

``requests``
    One row per fal ``request_id``: its latest snapshot (latest ``recorded_at``), with every
    column of :data:`falassets.lineage.schema.REQUEST_COLUMNS`, in that order.
``request_events``
    Every snapshot ever journalled, plus ``journal_file`` (which process wrote it) and
    ``journal_seq`` (read order: within a file, line order): forensics. Of two snapshots
    with the same ``recorded_at`` the later line wins, as in the Python readers.
``request_images``
    One row per output image of a request: ``request_id, partition_key, campaign,
    prompt_id, pass, status, variant`` and the image's columns
    (:data:`falassets.lineage.schema.IMAGE_COLUMNS`). A draft of N variants (fal's
    ``num_images``) has N rows, ``variant`` 1..N, each with its own sha256 and thumbnail;
    requests recorded before variants existed show their one image as variant 1.
``latest_renders``
    The latest request (by ``submitted_at``) per ``partition_key`` and ``pass``: what each
    prompt's draft or final currently is, whatever its status.
``failures_by_type``
    ``campaign, pass, error_type, count, example_request_id, example_message, last_seen``
    over failed and cancelled requests (``error_type`` 'unknown' when none was recorded).
``cost_by_campaign``
    ``campaign, pass, requests, completed, failed, pending, cancelled, cost_usd, simulated``;
    simulated and real requests are separate rows, so emulator "spend" never mixes with money.
``pending``
    Requests still pending, oldest first, with ``waiting`` (how long since submit) and the
    URLs a restarted run resumes them with.
``decisions``
    The latest reviewer decision per ``campaign`` and ``prompt_id`` (columns of
    :data:`falassets.lineage.schema.DECISION_COLUMNS`).
``decision_events``
    Every decision ever journalled, plus ``journal_file`` and ``journal_seq``.
``winners``
    Prompts whose latest decision is ``pick``: ``campaign, prompt_id, partition_key,
    decided_at, source, variant`` (the chosen draft variant, 1 when the pick named none), in
    decision order.
``catalog_info``
    ``catalog_version, definition_sha, journal_dir, created_at, created_with``.

Reading a glob that matches no file is an error in DuckDB, so the journal folder always holds
an empty placeholder journal of each kind (``<kind>-0-placeholder.jsonl``). A torn last line
(power loss) is skipped, never shown as an empty row.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from filelock import FileLock, Timeout

from falassets import settings
from falassets.lineage.schema import DECISION_COLUMNS, IMAGE_COLUMNS, REQUEST_COLUMNS

log = logging.getLogger(__name__)

#: Bump when a view changes meaning in a way the definition hash would not show.
CATALOG_VERSION = 1

#: What the PyPI DuckDB shell (1.5.x) can read; files written by duckdb 2.0 by default it cannot.
STORAGE_COMPATIBILITY = "v1.4.0"

JOURNAL_KINDS = ("requests", "decisions")

_LOCK_TIMEOUT_S = 60.0
_MAX_LINE_BYTES = 128 * 1024 * 1024  # read_json's default (16 MB) could drop a huge input row

#: The views that read journal files; every other view is built on these.
_BASE_VIEWS = ("request_events", "decision_events")

#: How DuckDB words a refusal by the sandbox (besides PermissionException).
_REFUSALS = ("configuration has been locked", "read-only mode", "read_only mode")

# (catalog path, definition sha) -> (inode, mtime_ns) of the file last found up to date.
_verified: dict[tuple[str, str], tuple[int, int]] = {}


class CatalogError(RuntimeError):
    """The catalog cannot be opened or built; the message says why and what to do."""


def placeholder(directory: Path, kind: str) -> Path:
    """The always-present, always-empty journal of a kind (keeps the views' globs non-empty)."""
    return Path(directory) / f"{kind}-0-placeholder.jsonl"


def ensure_journal_placeholders(directory: Path | None = None) -> Path:
    """Create the journal folder and its empty placeholders if missing; return the folder."""
    directory = Path(directory or settings.journal_dir())
    directory.mkdir(parents=True, exist_ok=True)
    for kind in JOURNAL_KINDS:
        path = placeholder(directory, kind)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
    return directory


def ensure_catalog() -> Path:
    """Create (or recreate when outdated) lineage.duckdb with its views; safe across processes.

    Never opens the live file read-write: a new catalog is built beside it and moved into
    place, so readers holding the old one open keep working and new readers see the new one.
    """
    journal_dir = ensure_journal_placeholders()
    path = settings.lineage_db_path()
    statements, sha = _definition(journal_dir)
    if _is_current(path, sha) != "outdated":
        return path
    lock_path = settings.state_dir() / "lineage-catalog.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(lock_path), timeout=_LOCK_TIMEOUT_S):
            if _is_current(path, sha) == "outdated":  # another process may have just built it
                _build(path, statements)
                _remember(path, sha)
    except Timeout as exc:
        raise CatalogError(
            f"{path}: waited {_LOCK_TIMEOUT_S:.0f}s for {lock_path} while building the lineage "
            "catalog. Fix: if no falassets process is running, delete the lock file and retry."
        ) from exc
    return path


def connect_readonly() -> duckdb.DuckDBPyConnection:
    """A read-only connection to the catalog (created first if needed)."""
    path = ensure_catalog()
    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        if _is_lock_conflict(exc):
            raise CatalogError(_held_read_write_message(path)) from exc
        raise


def connect_sandboxed() -> duckdb.DuckDBPyConnection:
    """A read-only connection whose SQL can read nothing but the lineage and write nothing.

    ``read_only`` protects only the database: ``COPY ... TO`` still writes any file and
    ``read_text`` reads any file. DuckDB's ``allowed_directories`` cannot help alone (the
    views must read the journal folder, so ``COPY TO`` could then write a journal). So the
    base views are copied into temporary tables of the same names, which the other views bind
    to, and then DuckDB's own settings shut the file system and lock the configuration:
    COPY, EXPORT, ATTACH, INSTALL/LOAD, ``read_*`` of any path and a SET undoing it are all
    refused by DuckDB itself (:func:`is_sandbox_refusal`). No SQL is parsed here.
    """
    con = connect_readonly()
    try:
        journals = str(Path(settings.journal_dir()).resolve())
        # Both spellings: the views name the folder glob-escaped ('[[]odd]' for '[odd]').
        allowed = sorted({journals + os.sep, _glob_escape(journals) + os.sep})
        con.execute("SET allowed_directories = ?", [allowed])
        con.execute("SET enable_external_access = false")  # also Python replacement scans
        database = _ident(con.execute("SELECT current_database()").fetchone()[0])
        for view in _BASE_VIEWS:
            con.execute(f"CREATE TEMP TABLE {view} AS SELECT * FROM {database}.main.{view}")
        con.execute("SET disabled_filesystems = 'LocalFileSystem'")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def is_sandbox_refusal(error: Exception) -> bool:
    """True when DuckDB refused a statement because of the sandbox, not because of a typo."""
    text = str(error).lower()
    return isinstance(error, duckdb.PermissionException) or any(
        marker in text for marker in _REFUSALS
    )


def query(sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple]]:
    """Run SQL on a short-lived sandboxed connection (:func:`connect_sandboxed`); return the
    last statement's (column names, rows)."""
    con = connect_sandboxed()
    try:
        cursor = con.execute(sql, params or [])
        if cursor.description is None:
            return [], []
        return [column[0] for column in cursor.description], cursor.fetchall()
    finally:
        con.close()


# --- building -------------------------------------------------------------------------------


def _definition(journal_dir: Path) -> tuple[list[str], str]:
    """The CREATE statements for a journal folder, and a hash that changes when they do."""
    directory = str(Path(journal_dir).resolve())
    views = _view_statements(directory)
    text = "\n;\n".join(views)
    sha = hashlib.sha256(f"{CATALOG_VERSION}\n{directory}\n{text}".encode()).hexdigest()
    info = (
        "CREATE VIEW catalog_info AS SELECT "
        f"{CATALOG_VERSION} AS catalog_version, {_literal(sha)} AS definition_sha, "
        f"{_literal(directory)} AS journal_dir, "
        f"TIMESTAMPTZ {_literal(datetime.now(UTC).isoformat())} AS created_at, "
        f"{_literal('duckdb ' + duckdb.__version__)} AS created_with"
    )
    return [*views, info], sha


def _view_statements(directory: str) -> list[str]:
    req = ", ".join(_ident(name) for name in REQUEST_COLUMNS)
    dec = ", ".join(_ident(name) for name in DECISION_COLUMNS)
    views = [
        f"""CREATE VIEW request_events AS
SELECT {req}, filename AS journal_file, ordinality AS journal_seq
FROM {_read_journal(directory, "requests", REQUEST_COLUMNS)} WITH ORDINALITY
WHERE request_id IS NOT NULL OR recorded_at IS NOT NULL""",
        f"""CREATE VIEW requests AS
SELECT {req} FROM request_events
WHERE request_id IS NOT NULL
QUALIFY row_number() OVER (
    PARTITION BY request_id
    ORDER BY recorded_at DESC NULLS LAST, journal_file DESC, journal_seq DESC) = 1""",
        _request_images_view(),
        """CREATE VIEW latest_renders AS
SELECT * FROM requests
WHERE partition_key IS NOT NULL
QUALIFY row_number() OVER (
    PARTITION BY partition_key, "pass"
    ORDER BY coalesce(submitted_at, recorded_at) DESC NULLS LAST, recorded_at DESC NULLS LAST,
             request_id DESC) = 1""",
        """CREATE VIEW failures_by_type AS
SELECT campaign, "pass", coalesce(error_type, 'unknown') AS error_type,
       count(*) AS count,
       arg_max(request_id, recorded_at) AS example_request_id,
       arg_max(error_message, recorded_at) AS example_message,
       max(recorded_at) AS last_seen
FROM requests
WHERE status IN ('failed', 'cancelled')
GROUP BY campaign, "pass", coalesce(error_type, 'unknown')
ORDER BY campaign, "pass", count DESC, error_type""",
        """CREATE VIEW cost_by_campaign AS
SELECT campaign, "pass",
       count(*) AS requests,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       round(coalesce(sum(cost_usd), 0), 6) AS cost_usd,
       coalesce(simulated, false) AS simulated
FROM requests
GROUP BY campaign, "pass", coalesce(simulated, false)
ORDER BY campaign, "pass", simulated""",
        """CREATE VIEW pending AS
SELECT request_id, partition_key, campaign, prompt_id, "pass", endpoint, attempt,
       submitted_at, now() - submitted_at AS waiting, run_id, writer,
       status_url, response_url, cancel_url
FROM requests
WHERE status = 'pending'
ORDER BY submitted_at NULLS LAST, request_id""",
        f"""CREATE VIEW decision_events AS
SELECT {dec}, filename AS journal_file, ordinality AS journal_seq
FROM {_read_journal(directory, "decisions", DECISION_COLUMNS)} WITH ORDINALITY
WHERE campaign IS NOT NULL AND prompt_id IS NOT NULL""",
        f"""CREATE VIEW decisions AS
SELECT {dec} FROM decision_events
QUALIFY row_number() OVER (
    PARTITION BY campaign, prompt_id
    ORDER BY recorded_at DESC NULLS LAST, journal_file DESC, journal_seq DESC) = 1""",
        """CREATE VIEW winners AS
SELECT campaign, prompt_id, partition_key, decided_at, source, coalesce(variant, 1) AS variant
FROM decisions
WHERE decision = 'pick'
ORDER BY campaign, decided_at, recorded_at, prompt_id""",
    ]
    return views


def _request_images_view() -> str:
    """A row per image of each request: its ``images`` list, or (rows written before
    variants existed) its own image columns as variant 1, the rule of lineage/variants.py."""
    shape = "[{" + ", ".join(f'"{name}": "{kind}"' for name, kind in IMAGE_COLUMNS.items()) + "}]"
    own = ", ".join(
        f"{_ident(name)} := " + ("1" if name == "variant" else f"r.{_ident(name)}")
        for name in IMAGE_COLUMNS
    )
    picked = ", ".join(f"i.{_ident(name)} AS {_ident(name)}" for name in IMAGE_COLUMNS)
    return f"""CREATE VIEW request_images AS
SELECT request_id, partition_key, campaign, prompt_id, "pass", status, {picked}
FROM (
    SELECT r.request_id, r.partition_key, r.campaign, r.prompt_id, r."pass", r.status,
           unnest(CASE WHEN len(coalesce(from_json(r.images, {_literal(shape)}), [])) > 0
                       THEN from_json(r.images, {_literal(shape)})
                       WHEN r.image_path IS NOT NULL THEN [struct_pack({own})]
                  END) AS i
    FROM requests r
)
ORDER BY request_id, variant"""


def _read_journal(directory: str, kind: str, columns: dict[str, str]) -> str:
    pattern = _glob_escape(directory) + f"/{kind}-*.jsonl"
    typed = ", ".join(f"{_literal(name)}: {_literal(kind_)}" for name, kind_ in columns.items())
    return (
        f"read_json({_literal(pattern)}, format = 'newline_delimited', union_by_name = true, "
        f"ignore_errors = true, maximum_object_size = {_MAX_LINE_BYTES}, filename = true, "
        f"columns = {{{typed}}})"
    )


def _build(path: Path, statements: list[str]) -> None:
    """Write a fresh catalog and move it into place atomically.

    DuckDB is given a scratch path of our choosing because it mangles paths holding '?' when
    it names its write-ahead log; the finished file is copied next to ``path`` and renamed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tempfile.TemporaryDirectory(prefix="falassets-catalog-") as scratch:
            built = Path(scratch) / "lineage.duckdb"
            con = duckdb.connect(
                str(built), config={"storage_compatibility_version": STORAGE_COMPATIBILITY}
            )
            try:
                for statement in statements:
                    con.execute(statement)
                con.execute("CHECKPOINT")
            finally:
                con.close()
            shutil.copyfile(built, temporary)
        # A write-ahead log left by someone who once opened the catalog read-write would be
        # replayed against the new file; nobody holds it read-write now (we just checked).
        Path(f"{path}.wal").unlink(missing_ok=True)
        os.replace(temporary, path)
        log.info("lineage catalog written to %s", path)
    finally:
        temporary.unlink(missing_ok=True)


def _is_current(path: Path, sha: str) -> str:
    """'current', 'outdated' (missing, unreadable, other definition) or 'held' (read-write
    elsewhere: leave it alone; a run must not fail because a user opened it wrongly)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "outdated"
    if _verified.get((str(path), sha)) == (stat.st_ino, stat.st_mtime_ns):
        return "current"
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        if _is_lock_conflict(exc):
            log.warning(_held_read_write_message(path))
            return "held"
        return "outdated"
    try:
        found = con.execute("SELECT definition_sha FROM catalog_info").fetchone()
    except duckdb.Error:
        found = None
    finally:
        con.close()
    if found is None or found[0] != sha:
        return "outdated"
    _verified[(str(path), sha)] = (stat.st_ino, stat.st_mtime_ns)
    return "current"


def _remember(path: Path, sha: str) -> None:
    stat = path.stat()
    _verified[(str(path), sha)] = (stat.st_ino, stat.st_mtime_ns)


def _is_lock_conflict(exc: Exception) -> bool:
    return "lock" in str(exc).lower()


def _held_read_write_message(path: Path) -> str:
    return (
        f"{path} is held open read-write by another process (a DuckDB shell started without "
        "-readonly?). Runs keep recording to the journals meanwhile. Fix: close it and reopen "
        f"with `duckdb -readonly {path}`."
    )


# --- SQL text -------------------------------------------------------------------------------


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _glob_escape(text: str) -> str:
    """Make a folder name literal inside a DuckDB glob (pytest's ``test_x[a]`` folders, ...)."""
    return "".join(f"[{c}]" if c in "[*?" else c for c in text)
