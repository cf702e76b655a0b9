"""Shared test set-up: one fal emulator for the whole session, and a data dir per test.

fal_client reads ``FAL_QUEUE_RUN_HOST`` once, at import, so this file starts ONE emulator
(``falassets sim``, time scale 0.01: a "high" render takes ~0.25 s) when it is imported,
before any test module can import fal_client, and points ``FAL_QUEUE_RUN_HOST``,
``SSL_CERT_FILE`` and ``NO_PROXY`` at it. ``FAL_KEY`` is removed for the whole session (no
test may reach fal or leak a key), and ``FALASSETS_DATA_DIR`` defaults to a session temp dir
so nothing is written under ``./data``.

Fixtures
- ``sim`` (function): the session emulator (:class:`falassets.sim.control.SimProcess`), reset
  to the defaults first: queue mode, concurrency 10, time scale 0.01, no faults, no requests,
  an empty ledger. Change behaviour with ``sim.configure(mode="reject", concurrency=2,
  error_5xx_rate=0.5, ...)`` and read what it was asked and billed with ``sim.ledger()``.
  Do not kill or restart it: crash tests start their own ``SimProcess.start(...)``.
- ``sim_session`` (session): the same process without the reset (rarely needed).
- ``data_dir`` (function): a fresh ``tmp_path`` set as ``FALASSETS_DATA_DIR``; returns it.
- ``postgres`` / ``redis`` (session): private real servers from Debian's packages
  (:mod:`falassets_tests.services`), started on first use; ``postgres.new_database(name)``
  gives a test its own database URL.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SESSION_TIME_SCALE = "0.01"

if "fal_client" in sys.modules:  # pragma: no cover - a plugin imported it before us
    raise RuntimeError(
        "fal_client was imported before falassets_tests/conftest.py could point it at the test "
        "emulator; it would talk to the wrong host. Remove the early import."
    )

os.environ.pop("FAL_KEY", None)
_SESSION_DATA = Path(tempfile.mkdtemp(prefix="falassets-test-data-"))
os.environ["FALASSETS_DATA_DIR"] = str(_SESSION_DATA)

from falassets.sim.control import SimProcess  # noqa: E402 (after the environment is set)
from falassets_tests import services  # noqa: E402

_SIM = SimProcess.start(
    "--time-scale", SESSION_TIME_SCALE, "--concurrency", "10", "--mode", "queue"
)
os.environ.update(_SIM.env())


def _shutdown() -> None:
    _SIM.stop()
    shutil.rmtree(_SESSION_DATA, ignore_errors=True)


atexit.register(_shutdown)


def pytest_unconfigure(config: pytest.Config) -> None:
    _shutdown()
    atexit.unregister(_shutdown)


@pytest.fixture(scope="session")
def sim_session() -> SimProcess:
    return _SIM


@pytest.fixture
def sim(sim_session: SimProcess) -> Iterator[SimProcess]:
    """The session emulator, reset to defaults (see the module docstring)."""
    if sim_session.process is not None and sim_session.process.poll() is not None:
        sim_session.restart()  # a test broke the rule; keep the rest of the session going
    sim_session.reset()
    yield sim_session


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data dir for this test, as ``FALASSETS_DATA_DIR``."""
    monkeypatch.setenv("FALASSETS_DATA_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="session")
def postgres() -> Iterator[services.PostgresServer]:
    server = services.start_postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis() -> Iterator[services.RedisServer]:
    server = services.start_redis()
    yield server
    server.stop()
