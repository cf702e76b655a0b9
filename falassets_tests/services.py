"""Real PostgreSQL and Redis servers for the distributed tests, from Debian's packages.

Each is a private instance on a free loopback port in a temporary directory, started once per
test session and stopped at its end: no shared system service, nothing left behind, no mocks.
``.ci/run`` installs the packages (``postgresql``, ``redis-server``). Without them a test that
needs a server is skipped with the command that installs them, except where
``FALASSETS_REQUIRE_SERVICES`` or ``CI`` is set (``.ci/run`` sets the first): there a missing
server fails the test, so CI never passes by skipping.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL_HINT = "apt-get install postgresql redis-server (as .ci/run does)"
START_TIMEOUT_S = 60.0
INITDB_OPTIONS = ("--auth=trust", "--no-sync", "-E", "UTF8")
# Loopback only; a throwaway cluster needs no fsync; two worker "hosts" open many connections.
SERVER_OPTIONS = (
    "-c",
    "listen_addresses=127.0.0.1",
    "-c",
    "fsync=off",
    "-c",
    "max_connections=300",
)
REDIS_OPTIONS = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def missing(what: str) -> None:
    """Skip (a developer's machine without the package) or fail (CI)."""
    message = f"{what} is not installed: {INSTALL_HINT}"
    if os.environ.get("FALASSETS_REQUIRE_SERVICES") or os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} in {START_TIMEOUT_S:.0f} s")


def _stop(process: subprocess.Popen, directory: Path) -> None:
    """SIGTERM, then SIGKILL after 30 s; then the server's files go."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    shutil.rmtree(directory, ignore_errors=True)


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PostgresServer:
    """A private cluster; ``url`` has a fresh database per :meth:`new_database`."""

    directory: Path
    port: int
    process: subprocess.Popen
    as_user: list[str]  # ["runuser", "-u", "postgres", "--"] when run as root

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def new_database(self, name: str) -> str:
        """Create database ``name`` (dropping an older one) and return its URL."""
        import psycopg2

        with contextlib.closing(psycopg2.connect(self.admin_url)) as connection:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                cursor.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        _stop(self.process, self.directory)  # SIGTERM: postgres's "smart" shutdown


def start_postgres() -> PostgresServer:
    bin_dir = _postgres_bin()
    if bin_dir is None:
        missing("PostgreSQL")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    directory = Path(tempfile.mkdtemp(prefix="falassets-pg-"))
    data = directory / "data"
    if as_user:  # PostgreSQL refuses to run as root
        shutil.chown(directory, "postgres", "postgres")
    subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", *INITDB_OPTIONS],
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = directory / "postgres.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *as_user,
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                *SERVER_OPTIONS,
                "-c",
                f"unix_socket_directories={directory}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = PostgresServer(directory, port, process, as_user)
    try:
        _wait_for_port(port, process, log)
        _wait_until_accepting(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_accepting(server: PostgresServer) -> None:
    """The port opens before start-up ends ("the database system is starting up")."""
    import psycopg2

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            psycopg2.connect(server.admin_url).close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        _stop(self.process, self.directory)


def start_redis() -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        missing("Redis")
    directory = Path(tempfile.mkdtemp(prefix="falassets-redis-"))
    port = free_port()
    log = directory / "redis.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--dir", str(directory), *REDIS_OPTIONS],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = RedisServer(port, process, directory)
    try:
        _wait_for_port(port, process, log)
    except BaseException:
        server.stop()
        raise
    return server
