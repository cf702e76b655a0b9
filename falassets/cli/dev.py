"""`falassets dev`: the built-in emulator (when FAL_KEY is unset) plus `dagster dev`."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from falassets import settings
from falassets.cli.errors import UserError

WORKSPACE_YAML = """\
load_from:
  - python_module:
      module_name: falassets.pipeline.definitions
"""


def _dagster_executable() -> str:
    beside = Path(sys.executable).parent / "dagster"
    if beside.exists():
        return str(beside)
    found = shutil.which("dagster")
    if found is None:
        raise UserError("the `dagster` command is not installed. Fix: pip install -e '.[dev]'")
    return found


def start_builtin_emulator() -> int | None:
    """Make sure the built-in emulator answers; return its pid when this call started it."""
    from falassets.cli import emulator
    from falassets.pipeline.fal_environment import ensure_builtin_emulator

    before = emulator.recorded_pid()
    try:
        ensure_builtin_emulator()
    except RuntimeError as error:
        raise UserError(str(error).replace("\n", " ")) from None
    after = emulator.recorded_pid()
    return after if after != before else None


def _stop_started_emulator(pid: int) -> None:
    """`falassets dev` stops the emulator it started, unless renders are still waiting on it."""
    from falassets.cli import emulator

    try:
        print(f"falassets dev: {emulator.stop_builtin()}")
    except UserError as error:
        print(f"falassets dev: left the fal emulator (pid {pid}) running: {error}", file=sys.stderr)


def command_dev(args: argparse.Namespace) -> int:
    from falassets.cli.dagster_notices import dagster_dev_env
    from falassets.pipeline.launch import prepare_dagster_home

    home = prepare_dagster_home()
    if settings.postgres_url():  # a deployment's home: its schema before dagster dev opens it
        from falassets.cli.deployment_storage import open_deployment

        open_deployment()
    started: int | None = None
    if settings.is_simulated():
        if settings.uses_builtin_emulator():
            started = start_builtin_emulator()
            print(
                f"FAL_KEY is unset: using the built-in emulator at {settings.default_sim_address()}"
                + (" (started now; stopped when this command ends)" if started else "")
            )
        else:
            print(f"FAL_KEY is unset: using the emulator at {os.environ['FAL_QUEUE_RUN_HOST']}")
    else:
        print("FAL_KEY is set: renders go to fal.ai and are billed")
    workspace = Path.cwd() / "workspace.yaml"
    temporary: Path | None = None
    if not workspace.is_file():
        handle, name = tempfile.mkstemp(prefix="falassets-workspace-", suffix=".yaml")
        os.close(handle)
        temporary = workspace = Path(name)
        workspace.write_text(WORKSPACE_YAML)
    command = [_dagster_executable(), "dev", "-w", str(workspace), "--host", args.host]
    extra = list(args.dagster_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    command += ["--port", str(args.port), *extra]
    print(f"DAGSTER_HOME={home}; Dagster UI on http://{args.host}:{args.port} (Ctrl-C stops it)")
    try:
        return _run_until_stopped(
            command, dagster_dev_env({**os.environ, "DAGSTER_HOME": str(home)})
        )
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        if started is not None:
            _stop_started_emulator(started)


def _run_until_stopped(command: list[str], env: dict[str, str]) -> int:
    """Run `dagster dev` and stop it gracefully on Ctrl-C, SIGTERM or SIGHUP.

    The child gets its own process group, so a Ctrl-C reaches it once (from us) rather than
    twice (a second interrupt would cut its shutdown of the webserver and daemon short), and
    our handlers are installed before it starts so it never inherits an ignored SIGINT (as a
    background job would), which would make it deaf to the stop request.
    """
    child: subprocess.Popen[bytes] | None = None
    stopping = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        if child is not None and child.poll() is None and not stopping:
            stopping = True
            child.send_signal(signal.SIGINT)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, forward) for signum in handled}
    try:
        child = subprocess.Popen(command, env=env, process_group=0)
        code = child.wait()
        return 0 if stopping else code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if child is not None and child.poll() is None:  # we are dying for another reason
            child.terminate()
            child.wait(timeout=30)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    dev = subparsers.add_parser(
        "dev",
        help="the emulator (when FAL_KEY is unset) plus `dagster dev`, wired together",
        description=(
            "Start the built-in fal emulator when FAL_KEY is unset, point DAGSTER_HOME at "
            f"{settings.dagster_home()} (runs from `falassets run` show up there) and run "
            "`dagster dev` with ./workspace.yaml, or with falassets.pipeline.definitions when "
            "there is none. Arguments after `--` go to `dagster dev`."
        ),
    )
    dev.add_argument("--host", default="127.0.0.1", help="address of the UI (default 127.0.0.1)")
    dev.add_argument("--port", type=int, default=3000, help="port of the UI (default 3000)")
    dev.add_argument("dagster_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    dev.set_defaults(handler=command_dev)
