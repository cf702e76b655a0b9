"""docs/deploy.md and docker-compose.yml stay true to the code (issue 13, item 6).

A user sets up a deployment from the docs: every ``FALASSETS_*`` variable the code reads must
be documented (in docs/deploy.md or the README), and every command the compose file runs must
be one the installed CLIs accept, with those arguments. Docker cannot run here, so this is
what keeps the compose file from rotting: its structure, its commands and its variables.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from falassets.cli import dispatch
from falassets.review import app as review_app
from falassets.sim import config as sim_config
from falassets_tests.cli.test_cli_support import write_csv

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "falassets"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
README = REPO / "README.md"
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
#: Wall-clock budget for one `falassets run` of three prompts on a loaded 2-core machine.
RUN_BUDGET_S = 300

VARIABLE = re.compile(r"\bFALASSETS_[A-Z0-9]+(?:_[A-Z0-9]+)*\b")
#: ``falassets SUBCOMMAND`` where a command is written: a code span or a fenced block.
CODE = re.compile(r"```.*?```|`[^`\n]+`", re.S)
SUBCOMMAND = re.compile(r"(?:^|[\s;|&(`])falassets\s+([a-z][a-z-]*)")


def variables_in(text: str) -> set[str]:
    return set(VARIABLE.findall(text))


def variables_read_by_code() -> dict[str, set[str]]:
    """Every FALASSETS_* name in the package's files -> the files that name it."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        for name in variables_in(path.read_text(errors="ignore")):
            found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


def undocumented(read: Mapping[str, set[str]], docs: str) -> dict[str, set[str]]:
    documented = variables_in(docs)
    return {name: files for name, files in read.items() if name not in documented}


def subcommands() -> set[str]:
    """The subcommands `falassets` dispatches (its argparse subparsers, delegated ones too)."""
    parser = dispatch.build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(action.choices)


def parse_falassets(argv: list[str]) -> None:
    """Parse a `falassets ...` command line as the CLI would; SystemExit on a usage error."""
    name, rest = argv[0], argv[1:]
    if name == "sim":
        if rest[:1] and rest[0] in dispatch.SIM_ACTIONS:
            return
        sim_config.config_from_args(sim_config.build_parser().parse_args(rest))
    elif name == "review":
        review_app.parse_args(rest)
    else:
        args = dispatch.build_parser().parse_args(argv)
        assert getattr(args, "handler", None) is not None, argv


def parse_console_script(argv: list[str]) -> None:
    """Parse a console script's command line (dagster-webserver, dagster-daemon ...) with its
    own click command, without running it; click.UsageError on a bad option."""
    [script] = entry_points(group="console_scripts", name=argv[0]) or [None]
    assert script is not None, f"{argv[0]} is not an installed command"
    command, args = script.load(), argv[1:]
    if not isinstance(command, click.Command):  # a main() that calls the module's click `cli`
        command = importlib.import_module(script.module).cli
    while isinstance(command, click.Group):
        sub = command.get_command(click.Context(command), args[0])
        assert sub is not None, f"{argv[0]}: no subcommand {args[0]!r}"
        command, args = sub, args[1:]
    command.make_context(argv[0], list(args))


#: Dagster's own command that creates (or migrates) an instance's schema.
MIGRATE = ["dagster", "instance", "migrate"]


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def command_lines(services: Mapping[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """(service, argv) of every command a service runs: command, entrypoint, healthcheck."""
    for name, service in services.items():
        for key in ("entrypoint", "command"):
            value = service.get(key)
            if value:
                yield name, shlex.split(value) if isinstance(value, str) else list(value)
        test = (service.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and test[:1] == ["CMD"]:
            yield name, test[1:]
        elif isinstance(test, list) and test[:1] == ["CMD-SHELL"]:
            yield name, shlex.split(test[1])


def written_subcommands(text: str) -> set[str]:
    """Subcommands named in code spans and fenced blocks (``falassets run ...``)."""
    return {word for block in CODE.findall(text) for word in SUBCOMMAND.findall(block)}


# -- variables ----------------------------------------------------------------------------------


def test_every_variable_the_code_reads_is_documented() -> None:
    read = variables_read_by_code()
    assert {"FALASSETS_POSTGRES_URL", "FALASSETS_RENDERS_URI", "FALASSETS_EXECUTOR"} <= set(read)
    docs = DEPLOY_DOC.read_text() + README.read_text()

    missing = undocumented(read, docs)

    assert not missing, "document these in docs/deploy.md: " + "; ".join(
        f"{name} (read in {', '.join(sorted(files))})" for name, files in sorted(missing.items())
    )


def test_the_check_names_a_variable_the_docs_leave_out() -> None:
    read = {"FALASSETS_POSTGRES_URL": {"a.py"}, "FALASSETS_EXECUTOR": {"b.py"}}

    missing = undocumented(read, "`FALASSETS_EXECUTOR`: celery; FALASSETS_POSTGRES_URLS")

    assert missing == {"FALASSETS_POSTGRES_URL": {"a.py"}}


def test_the_compose_file_sets_only_variables_the_code_reads() -> None:
    read = variables_read_by_code()
    services = compose()["services"]
    for name, service in services.items():
        environment = service.get("environment") or {}
        names = (
            environment
            if isinstance(environment, dict)
            else [item.split("=", 1)[0] for item in environment]
        )
        unknown = variables_in(" ".join(names)) - set(read)
        assert not unknown, f"{name} sets {sorted(unknown)}, which nothing in falassets/ reads"
    for path in sorted((REPO / "deploy").glob("*.env*")):  # env files, comments included
        unknown = variables_in(path.read_text()) - set(read)
        assert not unknown, f"{path.name} names {sorted(unknown)}, which nothing reads"


# -- commands -----------------------------------------------------------------------------------


def test_the_compose_file_has_the_deployment_on_one_shared_volume() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "fal-sim", "webserver", "daemon", "worker-1", "worker-2"} <= set(
        services
    )
    commands = {name: argv for name, argv in command_lines(services) if argv[0] != "pg_isready"}
    assert commands["worker-1"][:2] == commands["worker-2"][:2] == ["falassets", "worker"]
    falassets_services = [n for n, s in services.items() if s.get("image") == "falassets:local"]
    assert len(falassets_services) >= 5
    for name in falassets_services:  # one volume at one path: lineage's paths hold everywhere
        assert "falassets-data:/data" in services[name]["volumes"], name
        if name != "fal-sim":  # the emulator reads no falassets setting
            assert services[name]["environment"]["FALASSETS_DATA_DIR"] == "/data", name
    worker_names = [
        argv[argv.index("--name") + 1]
        for name, argv in command_lines(services)
        if argv[:2] == ["falassets", "worker"]
    ]
    assert len(worker_names) == len(set(worker_names)) >= 2  # runs ping a step's worker by name


def test_the_compose_file_creates_dagsters_schema_once_before_anything_opens_it() -> None:
    """`docker compose up` on a new database starts the webserver, the daemon and the workers
    at once: each would create Dagster's schema, and Postgres fails all but one. One service
    creates it first, and every service that opens the instance waits for it to succeed."""
    services = compose()["services"]
    creators = [n for n, argv in command_lines(services) if argv == MIGRATE]
    assert len(creators) == 1, "one service runs `dagster instance migrate`"
    creator = creators[0]
    assert services[creator].get("restart") == "no"  # a one-off: it exits when done
    assert services[creator]["depends_on"]["postgres"]["condition"] == "service_healthy"
    openers = [
        name
        for name, service in services.items()
        if name != creator and "FALASSETS_POSTGRES_URL" in service.get("environment", {})
    ]
    assert {"webserver", "daemon", "worker-1", "worker-2"} <= set(openers)
    for name in openers:
        waits = services[name].get("depends_on", {}).get(creator, {})
        assert waits.get("condition") == "service_completed_successfully", name


def test_every_command_in_the_compose_file_is_accepted_by_the_real_cli() -> None:
    known = subcommands()
    checked = set()
    for service, argv in command_lines(compose()["services"]):
        if argv[0] == "falassets":
            assert argv[1] in known, f"{service}: `falassets {argv[1]}` is not a subcommand"
            try:
                parse_falassets(argv[1:])
            except SystemExit as exit_:
                pytest.fail(f"{service}: `{shlex.join(argv)}` is refused (exit {exit_.code})")
        elif argv[0].startswith("dagster"):
            try:
                parse_console_script(argv)
            except click.UsageError as error:
                pytest.fail(f"{service}: `{shlex.join(argv)}` is refused: {error}")
        elif argv[0] == "python":
            compile(argv[argv.index("-c") + 1], service, "exec")
        checked.add(argv[0])
    assert {"falassets", "dagster-webserver", "dagster-daemon"} <= checked


def test_every_falassets_subcommand_the_files_name_is_real() -> None:
    known = subcommands()
    for path in (COMPOSE, DEPLOY_DOC, DOCKERFILE):
        named = written_subcommands(path.read_text())
        if path is COMPOSE:  # comments: commands a user types are in code spans there too
            named |= {
                argv[1]
                for _, argv in command_lines(compose()["services"])
                if argv[0] == "falassets"
            }
        assert named, f"{path.name} names no falassets command"
        unknown = named - known
        assert not unknown, f"{path.relative_to(REPO)} names `falassets {sorted(unknown)}`"


def test_the_check_refuses_a_subcommand_or_option_that_does_not_exist() -> None:
    assert "deploy" not in subcommands()
    assert written_subcommands("run `falassets deploy --now`") == {"deploy"}
    with pytest.raises(SystemExit):
        parse_falassets(["worker", "--hosts", "2"])
    with pytest.raises(SystemExit):
        parse_falassets(["sim", "--host", "0.0.0.0"])
    with pytest.raises(click.UsageError):
        parse_console_script(["dagster-daemon", "run", "--port", "3000"])


# -- moving from the embedded default (docs/deploy.md's recipe, run) -----------------------------


def falassets_run(campaign: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`falassets run CAMPAIGN` in a new process with only this deployment's variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FALASSETS_", "DAGSTER_"))}
    return subprocess.run(
        [sys.executable, "-m", "falassets.cli", "run", str(campaign), "--plain"],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_BUDGET_S,
    )


def test_moving_from_the_embedded_default_keeps_lineage_and_bills_nothing_again(
    sim, postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same data folder at the same path, a Postgres instance and a new DAGSTER_HOME: the
    pass again registers its partitions in the new instance and answers every render from
    lineage (no request to fal); the journals are kept; Dagster's history stays behind."""
    import dagster as dg

    from falassets.pipeline.assets.partitions import prompt_partitions

    data = tmp_path / "data"
    campaign = write_csv(
        tmp_path / "moving.csv", {f"p{i}": f"a lighthouse, study {i}" for i in (1, 2, 3)}
    )
    embedded = falassets_run(campaign, tmp_path, FALASSETS_DATA_DIR=str(data))
    assert embedded.returncode == 0, embedded.stdout + embedded.stderr
    accepted = {r["request_id"] for r in sim.ledger()["requests"]}
    assert len(accepted) == 3
    journals = {path: path.read_bytes() for path in (data / "lineage").glob("requests-*.jsonl")}
    url = postgres.new_database("moving")
    home = tmp_path / "host-home"

    moved = falassets_run(
        campaign,
        tmp_path,
        FALASSETS_DATA_DIR=str(data),
        FALASSETS_POSTGRES_URL=url,
        DAGSTER_HOME=str(home),
    )

    output = moved.stdout + moved.stderr
    assert moved.returncode == 0, output
    assert "3 reused from lineage" in output and "3 succeeded, 0 failed" in output
    assert {r["request_id"] for r in sim.ledger()["requests"]} == accepted  # nothing sent
    assert all(path.read_bytes() == content for path, content in journals.items())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("FALASSETS_POSTGRES_URL", url)
    keys = [f"moving-p{i}" for i in (1, 2, 3)]
    with dg.DagsterInstance.get() as instance:
        assert "Postgres" in type(instance.run_storage).__name__
        statuses = instance.get_status_by_partition(
            dg.AssetKey("draft_renders"), keys, prompt_partitions
        )
        assert {key: statuses[key].value for key in keys} == dict.fromkeys(keys, "MATERIALIZED")
        # Dagster's history did not move: the embedded run stayed in the old home.
        [old_run] = re.findall(r"Dagster run\(s\): ([0-9a-f-]{36})", embedded.stdout)
        assert instance.get_run_by_id(old_run) is None
        assert instance.get_runs_count() >= 1
