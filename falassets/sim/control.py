"""Start, configure, inspect and stop a `falassets sim` process from Python.

INTERFACE STUB: owned by the emulator work; signatures are the contract. Used by tests,
benchmarks and by the engine to run the built-in emulator when there is no FAL_KEY.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class SimProcess:
    """A `falassets sim` subprocess. ``host`` is ``127.0.0.1:PORT`` (FAL_QUEUE_RUN_HOST),
    ``cert_file`` the CA to trust (SSL_CERT_FILE)."""

    host: str
    cert_file: Path

    @classmethod
    def start(cls, *args: str, port: int = 0, env: dict[str, str] | None = None) -> SimProcess:
        """Start ``falassets sim --port PORT *args`` and wait until it answers."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """FAL_QUEUE_RUN_HOST, SSL_CERT_FILE and NO_PROXY for a client process."""
        raise NotImplementedError

    def configure(self, **knobs: Any) -> None:
        """Change mode, concurrency, time scale or fault knobs at run time (admin endpoint)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget all requests and zero the ledger (between tests)."""
        raise NotImplementedError

    def ledger(self) -> dict[str, Any]:
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL (for crash tests); ``restart()`` brings it back on the same port."""
        raise NotImplementedError

    def restart(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


def ensure_builtin_emulator() -> None:
    """Make sure the built-in emulator answers at settings.default_sim_address(), starting a
    detached one (pid file under state_dir) if not. Safe when several processes race."""
    raise NotImplementedError
