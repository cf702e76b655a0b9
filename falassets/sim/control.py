"""Start, configure, inspect and stop a `falassets sim` process from Python.

Used by tests and benchmarks (:class:`SimProcess`, one emulator per test session or per
crash test) and by falassets' entry points, which run the built-in emulator when there is no
FAL_KEY (:func:`ensure_builtin_emulator`, one detached emulator per machine and data dir;
the caller passes its address, CA file and folder, so this package imports nothing of ours).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import httpx

START_TIMEOUT_S = 30.0
NO_PROXY = "127.0.0.1,localhost"


def _sim_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "falassets.cli", "sim", *args]


def _admin_client(ca_file: Path) -> httpx.Client:
    """HTTPS to the emulator only: its CA, no proxies, no key."""
    context = ssl.create_default_context(cafile=str(ca_file))
    return httpx.Client(verify=context, trust_env=False, timeout=httpx.Timeout(30.0, connect=5.0))


def _healthy(host: str, ca_file: Path, timeout: float = 2.0) -> bool:
    """True when a falassets emulator answers at ``host`` with a certificate ``ca_file`` trusts."""
    if not ca_file.exists():
        return False
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
        response = httpx.get(
            f"https://{host}/_sim/health", verify=context, trust_env=False, timeout=timeout
        )
        return response.status_code == 200 and response.json().get("simulated") is True
    except (httpx.HTTPError, ssl.SSLError, ValueError, OSError):
        return False


def _wait_healthy(host: str, ca_file: Path, process: subprocess.Popen[Any], log: Path) -> None:
    """Block until the emulator answers; raise with its log when it dies or never answers."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"falassets sim exited with code {process.returncode} before answering; "
                f"its log ({log}) ends with:\n{_tail(log)}"
            )
        if _healthy(host, ca_file):
            return
        time.sleep(0.05)  # readiness probe interval, bounded by the deadline above
    raise RuntimeError(f"falassets sim did not answer at {host} within {START_TIMEOUT_S:.0f} s")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _read_exports(stream: IO[str], process: subprocess.Popen[Any], log: Path) -> dict[str, str]:
    """The three ``export NAME=value`` lines the emulator prints first."""
    exports: dict[str, str] = {}
    while len(exports) < 3:
        line = stream.readline()
        if not line:
            process.wait(timeout=10)
            raise RuntimeError(
                f"falassets sim exited (code {process.returncode}) before printing its address; "
                f"log {log}:\n{_tail(log)}"
            )
        if line.startswith("export "):
            name, _, value = line[len("export ") :].strip().partition("=")
            exports[name] = shlex.split(value)[0] if value else ""
    return exports


class SimProcess:
    """A `falassets sim` subprocess. ``host`` is ``127.0.0.1:PORT`` (FAL_QUEUE_RUN_HOST),
    ``cert_file`` the CA to trust (SSL_CERT_FILE)."""

    host: str
    cert_file: Path

    def __init__(self, args: list[str], port: int, env: dict[str, str] | None) -> None:
        self.args = list(args)
        self.port = port
        self.extra_env = dict(env or {})
        self._own_cert_dir: Path | None = None
        if "--cert-dir" not in self.args:
            # A private CA per emulator; kept across restart() so clients keep trusting it.
            self._own_cert_dir = Path(tempfile.mkdtemp(prefix="falassets-sim-cert-"))
            self.args += ["--cert-dir", str(self._own_cert_dir)]
        self.log_path = Path(tempfile.mkstemp(prefix="falassets-sim-", suffix=".log")[1])
        self.process: subprocess.Popen[str] | None = None
        self._http: httpx.Client | None = None

    @classmethod
    def start(cls, *args: str, port: int = 0, env: dict[str, str] | None = None) -> SimProcess:
        """Start ``falassets sim --port PORT *args`` and wait until it answers."""
        sim = cls(list(args), port, env)
        sim._launch()
        return sim

    def _launch(self) -> None:
        env = {**os.environ, **self.extra_env}
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                _sim_command("--port", str(self.port), *self.args),
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                text=True,
            )
        assert self.process.stdout is not None
        exports = _read_exports(self.process.stdout, self.process, self.log_path)
        self.host = exports["FAL_QUEUE_RUN_HOST"]
        self.cert_file = Path(exports["SSL_CERT_FILE"])
        self.port = int(self.host.rsplit(":", 1)[1])  # restart() comes back on this port
        _wait_healthy(self.host, self.cert_file, self.process, self.log_path)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    def env(self) -> dict[str, str]:
        """FAL_QUEUE_RUN_HOST, SSL_CERT_FILE and NO_PROXY for a client process."""
        return {
            "FAL_QUEUE_RUN_HOST": self.host,
            "SSL_CERT_FILE": str(self.cert_file),
            "NO_PROXY": NO_PROXY,
        }

    def _client(self) -> httpx.Client:
        if self._http is None:
            self._http = _admin_client(self.cert_file)
        return self._http

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._client().request(method, f"{self.url}{path}", json=body)
        if response.status_code == 400:
            raise ValueError(f"falassets sim refused {path}: {response.json().get('detail')}")
        response.raise_for_status()
        return response.json()

    def configure(self, **knobs: Any) -> None:
        """Change mode, concurrency, time scale or fault knobs at run time (admin endpoint).
        Knob names are :class:`falassets.sim.config.SimConfig` fields (e.g. ``mode="reject"``,
        ``concurrency=2``, ``error_5xx_rate=0.2``); a wrong name or value raises ValueError."""
        self._admin("POST", "/_sim/config", knobs)

    def config(self) -> dict[str, Any]:
        return self._admin("GET", "/_sim/config")

    def reset(self, *, force: bool = True) -> None:
        """Forget all requests and zero the ledger (between tests); knobs return to the
        start-up flags. The harness owns this emulator, so by default live requests are
        forgotten too (``force``); ``force=False`` raises instead while any are live, as
        ``POST /_sim/reset`` does for anyone else (409)."""
        response = self._client().post(
            f"{self.url}/_sim/reset", params={"force": "true"} if force else None
        )
        if response.status_code == 409:
            raise RuntimeError(f"falassets sim refused the reset: {response.json()['detail']}")
        response.raise_for_status()

    def ledger(self) -> dict[str, Any]:
        """Every accepted request with its outcome and cost, totals, peak running, 429s and
        HTTP requests served (see ``falassets.sim.ledger.ledger_view``)."""
        return self._admin("GET", "/_sim/ledger")

    def _close_client(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def kill(self) -> None:
        """SIGKILL (for crash tests); ``restart()`` brings it back on the same port."""
        self._close_client()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Same port, same arguments, same CA; stops the current process first if alive."""
        if self.process is not None and self.process.poll() is None:
            self._terminate()
        self._close_client()
        self._launch()

    def _terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the process and remove its private certificate directory and log."""
        self._close_client()
        if self.process is not None and self.process.poll() is None:
            self._terminate()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        if self._own_cert_dir is not None:
            shutil.rmtree(self._own_cert_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.log_path.unlink()

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the built-in emulator -----------------------------------------------------------------------


def ensure_builtin_emulator(host: str, ca_file: Path, directory: Path) -> None:
    """Make sure the built-in emulator answers at ``host`` (``127.0.0.1:PORT``, trusted
    through ``ca_file``), starting a detached one (pid file in ``directory``) if not. Safe
    when several processes race. The caller passes the paths (falassets' settings), so the
    emulator knows nothing of falassets.

    Extra emulator flags (e.g. ``--time-scale 0.05`` for a quick demo) come from
    ``FALASSETS_SIM_ARGS``. Accepted requests persist in ``requests.jsonl`` next to the pid
    file, so a restarted emulator still answers for requests recorded in lineage.
    """
    if _healthy(host, ca_file):
        return
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "start.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first process starts it; the others wait here
        if _healthy(host, ca_file):
            return
        port = host.rsplit(":", 1)[1]
        log_path = directory / "emulator.log"
        extra = shlex.split(os.environ.get("FALASSETS_SIM_ARGS", ""))
        command = _sim_command(
            "--port",
            port,
            "--cert-dir",
            str(ca_file.parent),
            "--state-file",
            str(directory / "requests.jsonl"),
            *extra,
        )
        with open(log_path, "a") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the process that started it
                close_fds=True,
            )
        (directory / "emulator.pid").write_text(f"{process.pid}\n")
        try:
            _wait_healthy(host, ca_file, process, log_path)
        except RuntimeError as error:
            raise RuntimeError(
                f"could not start the built-in fal emulator on {host}: {error}\n"
                "If another program uses that port, set FALASSETS_SIM_PORT to a free one."
            ) from None


def stop_builtin_emulator(directory: Path) -> bool:
    """SIGTERM the built-in emulator named in ``directory``'s pid file; True when one was
    running."""
    pid_file = directory / "emulator.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    with contextlib.suppress(OSError):
        pid_file.unlink()
    try:  # a stale pid file may name some other process by now: check before signalling
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if b"falassets.cli" not in cmdline or b"sim" not in cmdline:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True
