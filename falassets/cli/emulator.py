"""The built-in fal emulator's life cycle, seen from outside: `falassets sim status|stop`, the
line a command prints when it leaves the emulator running, and `falassets dev` stopping the
one it started.

The emulator itself is started (detached, so runs can share it) by
:func:`falassets.sim.control.ensure_builtin_emulator`, which writes its pid file under the
data dir's state folder. Everything here works from that pid file and the emulator's own
admin endpoint, so it needs nothing from the server beyond what it already offers.
"""

from __future__ import annotations

import argparse
import os
import select
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from falassets import settings
from falassets.cli.errors import UserError

STOP_TIMEOUT_S = 15.0  # the server's graceful shutdown is 2 s; this is only a backstop


@dataclass(frozen=True)
class EmulatorStatus:
    """What `falassets sim status` reports about the built-in emulator."""

    address: str  # where falassets expects it (FALASSETS_SIM_PORT)
    answering: bool  # a falassets emulator answered there over HTTPS
    pid: int | None  # the pid file's process, when it is a live `falassets sim`
    running: int | None = None
    queued: int | None = None
    accepted: int | None = None
    other_listener: bool = False  # something listens there that is not this data dir's one

    @property
    def in_flight(self) -> int:
        return (self.running or 0) + (self.queued or 0)


def pid_file() -> Path:
    return settings.builtin_sim_dir() / "emulator.pid"


def recorded_pid() -> int | None:
    """The built-in emulator's pid from its pid file, only when that process is alive and is
    a `falassets sim` (a stale file may name some other process by now). Cheap: two reads."""
    try:
        pid = int(pid_file().read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if b"falassets.cli" in cmdline and b"sim" in cmdline else None


def _counts(address: str, timeout: float) -> dict[str, int] | bool:
    """The emulator's running/queued/accepted counts when this data dir's emulator answers at
    ``address`` (its certificate is the one under the state folder); else whether something
    else listens there (True) or nothing does (False)."""
    ca_file = settings.sim_cert_file()
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file.exists() else None
    try:
        response = httpx.get(
            f"https://{address}/_sim/health",
            verify=context or True,
            trust_env=False,
            timeout=timeout,
        )
        response.raise_for_status()
        health = response.json()
        counts = {"running": health["running"], "queued": health["queued"]}
        return {**counts, "accepted": health["requests"]} if context else True
    except (httpx.ConnectError, httpx.ConnectTimeout) as error:
        return _caused_by_tls(error)  # refused or timed out: nothing listens
    except (httpx.HTTPError, ssl.SSLError, ValueError, KeyError, TypeError, OSError):
        return True


def _caused_by_tls(error: BaseException) -> bool:
    """A connection that failed in the TLS handshake reached a listener (httpx wraps the
    ssl error two levels down)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def status(timeout: float = 3.0) -> EmulatorStatus:
    address = settings.default_sim_address()
    totals = _counts(address, timeout)
    if not isinstance(totals, dict):
        return EmulatorStatus(address, False, recorded_pid(), other_listener=totals)
    return EmulatorStatus(
        address,
        True,
        recorded_pid(),
        running=totals.get("running"),
        queued=totals.get("queued"),
        accepted=totals.get("accepted"),
    )


def describe(state: EmulatorStatus) -> str:
    if state.answering:
        pid = f"pid {state.pid}" if state.pid else "pid unknown: no pid file names it"
        return (
            f"the built-in fal emulator is running on {state.address} ({pid}); "
            f"{state.in_flight} request(s) in flight ({state.running} running, {state.queued} "
            f"queued), {state.accepted} accepted since it started. Log: "
            f"{pid_file().with_name('emulator.log')}"
        )
    if state.other_listener:
        return (
            f"the built-in fal emulator of {settings.data_dir()} is not running: something "
            f"else answers on {state.address} (another data dir's emulator, or another "
            "program). Fix: set FALASSETS_SIM_PORT to a free port"
        )
    if state.pid:
        return (
            f"a built-in fal emulator process runs (pid {state.pid}) but does not answer on "
            f"{state.address} (started with another FALASSETS_SIM_PORT or FALASSETS_DATA_DIR?)"
        )
    return f"the built-in fal emulator is not running (nothing answers on {state.address})"


def stop_builtin(*, force: bool = False) -> str:
    """Stop the built-in emulator cleanly (SIGTERM, then wait for it to exit); return what
    happened. Refuses while requests are in flight unless ``force``: a run waiting on them
    would see its renders fail."""
    state = status()
    if state.answering and state.in_flight and not force:
        raise UserError(
            f"the built-in fal emulator on {state.address} has {state.in_flight} request(s) in "
            "flight; stopping it now fails those renders. Fix: wait for the runs to finish, or "
            "pass --force"
        )
    pid = state.pid
    if pid is None:
        if state.answering:
            raise UserError(
                f"an emulator answers on {state.address} but no pid file under "
                f"{pid_file().parent} names it, so falassets will not guess which process to "
                f"stop. Fix: find it with `ss -ltnp 'sport = :{state.address.rsplit(':', 1)[1]}'`"
                " and stop it with kill PID"
            )
        return describe(state)
    try:
        pidfd = os.pidfd_open(pid)  # held across the signal: no pid-reuse race
    except ProcessLookupError:
        return describe(state)
    try:
        from falassets.pipeline.fal_environment import stop_builtin_emulator

        stop_builtin_emulator()
        readable, _, _ = select.select([pidfd], [], [], STOP_TIMEOUT_S)
    finally:
        os.close(pidfd)
    if not readable:
        raise UserError(
            f"the built-in fal emulator (pid {pid}) did not exit within {STOP_TIMEOUT_S:.0f} s "
            f"of SIGTERM. Fix: kill -9 {pid}"
        )
    return f"stopped the built-in fal emulator on {state.address} (pid {pid})"


def leftover_notice(pid_before: int | None) -> str | None:
    """The line a command prints when it started the built-in emulator and leaves it running
    (it is detached so later commands share it, which no one would otherwise know)."""
    if not settings.uses_builtin_emulator():
        return None
    pid = recorded_pid()
    if pid is None or pid == pid_before:
        return None
    return (
        f"the fal emulator is still running on {settings.default_sim_address()} (pid {pid}); "
        "stop it with `falassets sim stop`"
    )


def main(argv: list[str]) -> int:
    """`falassets sim status` (exit 0 running, 1 not) and `falassets sim stop [--force]`."""
    parser = argparse.ArgumentParser(
        prog="falassets sim",
        description=(
            "The built-in fal emulator that falassets starts when FAL_KEY is unset (on "
            f"{settings.default_sim_address()}, FALASSETS_SIM_PORT). `falassets sim [options]`"
            " without a subcommand runs an emulator in the foreground instead."
        ),
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("status", help="is it answering; its pid, port and requests in flight")
    stop = sub.add_parser("stop", help="stop it cleanly (waits until it has exited)")
    stop.add_argument("--force", action="store_true", help="stop even with requests in flight")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    try:
        if args.action == "status":
            state = status()
            print(describe(state))
            return 0 if state.answering else 1
        print(stop_builtin(force=args.force))
        return 0
    except UserError as error:
        print(f"falassets sim {args.action}: error: {error}", file=sys.stderr)
        return error.exit_code
