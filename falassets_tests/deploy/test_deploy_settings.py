"""Choosing the deployment by configuration (issue 13): the environment picks the executor,
the run size and the instance; bad values stop before anything runs, with the fix; the
embedded default is untouched when nothing is set."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from falassets.cli.dispatch import main
from falassets.pipeline import deployment, launch
from falassets_tests.cli.test_cli_support import write_csv

REPO = Path(__file__).resolve().parents[2]
DEPLOY_ENV = (
    "FALASSETS_EXECUTOR",
    "FALASSETS_CELERY_BROKER",
    "FALASSETS_CELERY_BACKEND",
    "FALASSETS_CELERY_WORKER_LOST_S",
    "FALASSETS_PARTITIONS_PER_RUN",
    "FALASSETS_POSTGRES_URL",
)

PROBE = """
import contextlib
import json
from falassets.pipeline.definitions import defs
names = ("draft_pass", "final_pass", "prompts_pass", "review_pass", "report_pass")
jobs = {name: defs.resolve_job_def(name).executor_def.name for name in names}
assets = {key.to_user_string(): node.backfill_policy.max_partitions_per_run
          for key, node in ((k, defs.resolve_asset_graph().get(k))
          for k in defs.resolve_asset_graph().get_all_asset_keys())
          if key.to_user_string() in ("draft_renders", "final_renders")}
print(json.dumps({"jobs": jobs, "assets": assets}))
"""


@pytest.fixture(autouse=True)
def no_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DEPLOY_ENV:
        monkeypatch.delenv(name, raising=False)


def _definitions(**env: str) -> dict:
    """What `dagster dev` would load with this environment (a fresh process: the choices are
    made when the definitions are imported)."""
    clean = {k: v for k, v in os.environ.items() if k not in DEPLOY_ENV}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_environment_chooses_executor_and_run_size_and_the_default_is_unchanged() -> None:
    default = _definitions()
    bookkeeping = {"prompts_pass": "in_process", "review_pass": "in_process"} | {
        "report_pass": "in_process"
    }
    assert (
        default["jobs"]
        == {"draft_pass": "multi_or_in_process_executor"}
        | {"final_pass": "multi_or_in_process_executor"}
        | bookkeeping
    )
    assert default["assets"] == {"draft_renders": None, "final_renders": None}  # single run

    chosen = _definitions(
        FALASSETS_EXECUTOR="celery",
        FALASSETS_CELERY_BROKER="redis://127.0.0.1:9/0",
        FALASSETS_PARTITIONS_PER_RUN="25",
    )
    # renders go to the worker hosts; the campaign's small bookkeeping steps stay in their run
    assert chosen["jobs"] == {"draft_pass": "celery", "final_pass": "celery"} | bookkeeping
    assert chosen["assets"] == {"draft_renders": 25, "final_renders": 25}


def test_the_celery_executor_config_names_variables_never_urls(monkeypatch) -> None:
    """The broker URL (maybe with a password) is read when a run starts, never baked into the
    definitions: resolving the same executor's config after the variable changed gives the
    new URL; the backend defaults to the broker."""
    monkeypatch.setenv("FALASSETS_EXECUTOR", "celery")
    monkeypatch.setenv("FALASSETS_CELERY_BROKER", "redis://:secret@broker:6379/0")
    executor = deployment.executor_def()
    assert executor is not None and executor.name == "celery"
    monkeypatch.setenv("FALASSETS_CELERY_BROKER", "redis://other:6379/1")
    config = executor.config_schema.resolve_config({}).value["config"]
    assert config["broker"] == config["backend"] == "redis://other:6379/1"
    assert config["config_source"]["task_track_started"] is True


@pytest.mark.parametrize(
    ("name", "value", "fix"),
    [
        ("FALASSETS_EXECUTOR", "kubernetes", "set it to in_process or celery"),
        ("FALASSETS_PARTITIONS_PER_RUN", "0", "set it to 1 or more"),
        ("FALASSETS_PARTITIONS_PER_RUN", "ten", "set it to 1 or more"),
    ],
)
def test_a_bad_setting_stops_falassets_run_with_the_fix(
    sim, data_dir, monkeypatch, capsys, name, value, fix
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(data_dir / "dagster_home"))
    monkeypatch.setenv(name, value)
    campaign = write_csv(data_dir / "spring.csv", {"p1": "a red bicycle", "p2": "a blue mug"})

    assert main(["run", str(campaign), "--plain"]) == 2

    error = capsys.readouterr().err
    assert f"{name}={value!r}" in error and fix in error
    assert "Traceback" not in error
    assert sim.ledger()["totals"]["accepted"] == 0


def test_celery_refuses_a_home_whose_runs_live_in_sqlite_on_this_machine(
    data_dir, monkeypatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(data_dir / "dagster_home"))
    monkeypatch.setenv("FALASSETS_EXECUTOR", "celery")
    monkeypatch.setenv("FALASSETS_CELERY_BROKER", "redis://127.0.0.1:9/0")
    with pytest.raises(launch.LaunchError, match=r"SQLite on this machine.*FALASSETS_POSTGRES_URL"):
        launch.run_pass("spring", "draft")


def test_a_new_home_gets_the_postgres_instance_and_a_users_file_is_kept(
    data_dir, monkeypatch
) -> None:
    monkeypatch.setenv("FALASSETS_POSTGRES_URL", "postgresql://dagster@db:5432/dagster")
    fresh = data_dir / "fresh_home"
    monkeypatch.setenv("DAGSTER_HOME", str(fresh))
    launch.prepare_dagster_home()
    written = (fresh / "dagster.yaml").read_text()
    assert written == deployment.POSTGRES_DAGSTER_YAML
    assert "db:5432" not in written  # the URL stays in the environment

    users = data_dir / "users_home"
    users.mkdir()
    (users / "dagster.yaml").write_text("telemetry:\n  enabled: true\n")
    monkeypatch.setenv("DAGSTER_HOME", str(users))
    launch.prepare_dagster_home()
    assert (users / "dagster.yaml").read_text() == "telemetry:\n  enabled: true\n"

    monkeypatch.delenv("FALASSETS_POSTGRES_URL")
    embedded = data_dir / "embedded_home"
    monkeypatch.setenv("DAGSTER_HOME", str(embedded))
    launch.prepare_dagster_home()
    assert "postgres" not in (embedded / "dagster.yaml").read_text()


def test_deploy_dagster_yaml_is_the_file_falassets_writes() -> None:
    assert (REPO / "deploy" / "dagster.yaml").read_text() == deployment.POSTGRES_DAGSTER_YAML


def test_runs_of_at_most_k_and_how_many_go_at_once() -> None:
    stretches = [["a", "b", "c", "d", "e"], ["x", "y"]]
    assert deployment.split_runs(stretches, None) == stretches
    assert deployment.split_runs(stretches, 2) == [["a", "b"], ["c", "d"], ["e"], ["x", "y"]]
    assert deployment.runs_at_once(8, 10, None) == 1  # no run size: one at a time, as always
    assert deployment.runs_at_once(8, 10, 25) == 2  # cap 10: two runs fill it twice over
    assert deployment.runs_at_once(40, 40, 25) == 4
    assert deployment.runs_at_once(3, 40, 5) == 3  # never more than there are runs
    assert deployment.runs_at_once(500, 1000, 1) == deployment.MAX_RUNS_AT_ONCE


@pytest.mark.parametrize(
    ("env", "fix"),
    [
        ({"FALASSETS_CELERY_BROKER": "redis://127.0.0.1:9/0"}, "FALASSETS_POSTGRES_URL is not set"),
        ({"FALASSETS_POSTGRES_URL": "postgresql://db/x"}, "FALASSETS_CELERY_BROKER is not set"),
    ],
)
def test_falassets_worker_without_its_deployment_stops_with_the_fix(
    data_dir, monkeypatch, capsys, env, fix
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(data_dir / "dagster_home"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert main(["worker"]) == 2

    error = capsys.readouterr().err
    assert fix in error and "Fix:" in error and "Traceback" not in error
    assert not (data_dir / "dagster_home").exists()  # nothing set up before the check


def test_falassets_worker_that_cannot_reach_postgres_stops_at_start_naming_its_host(
    data_dir, monkeypatch, capsys
) -> None:
    """Not a worker that starts and then fails every step it takes: it opens the deployment's
    storage before it starts, and says where it could not, never with the URL's password."""
    monkeypatch.setenv("DAGSTER_HOME", str(data_dir / "dagster_home"))
    monkeypatch.setenv("FALASSETS_POSTGRES_URL", "postgresql://studio:s3cret@127.0.0.1:1/dagster")
    monkeypatch.setenv("FALASSETS_CELERY_BROKER", "redis://127.0.0.1:9/0")

    assert main(["worker"]) == 2

    captured = capsys.readouterr()
    error = captured.err.strip().splitlines()[-1]
    assert "127.0.0.1:1" in error and "Fix:" in error
    assert "s3cret" not in captured.err + captured.out and "Traceback" not in captured.err


def has_runs_table(url: str) -> bool:
    """Whether Dagster's schema is in the database (its run storage's main table)."""
    import psycopg2

    with contextlib.closing(psycopg2.connect(url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'runs'")
        return cursor.fetchone() == (1,)


def test_hosts_opening_a_fresh_deployment_take_turns_creating_dagsters_schema(
    postgres, data_dir, monkeypatch
) -> None:
    """Workers and the launching host started together on a new database must not all create
    Dagster's schema at once (Postgres fails all but one on its catalog). An open waits while
    another host holds the deployment's schema lock, and creates the schema once it is free."""
    import psycopg2

    from falassets.engine.cap_postgres import SCHEMA_LOCK_KEY

    # pg_locks is the whole server's: only this database's advisory locks
    HERE = (
        "locktype = 'advisory' AND database = "
        "(SELECT oid FROM pg_database WHERE datname = 'schema_lock')"
    )
    url = postgres.new_database("schema_lock")
    monkeypatch.setenv("FALASSETS_POSTGRES_URL", url)
    monkeypatch.setenv("DAGSTER_HOME", str(data_dir / "dagster_home"))
    monkeypatch.setattr(launch, "_instances", {})
    other_host = psycopg2.connect(url)
    other_host.autocommit = True

    def query(sql: str) -> list[tuple]:
        with other_host.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall()

    query(f"SELECT pg_advisory_lock({SCHEMA_LOCK_KEY})")  # another host creating the schema
    opened: list[object] = []
    opener = threading.Thread(target=lambda: opened.append(launch.dagster_instance()))
    opener.start()
    try:
        waiting = f"SELECT count(*) FROM pg_locks WHERE {HERE} AND NOT granted"
        deadline = time.monotonic() + 60
        while query(waiting) != [(1,)]:  # the opener's session queues behind the lock
            assert opener.is_alive() and time.monotonic() < deadline, "the open did not wait"
            time.sleep(0.05)  # polling interval of a condition bounded by the deadline above
        assert not has_runs_table(url) and not opened  # nothing created while it waits
    finally:
        other_host.close()  # the other host is done: its lock goes with its session
        opener.join(120)
    assert opened and not opener.is_alive()
    assert has_runs_table(url)
    with contextlib.closing(psycopg2.connect(url)) as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM pg_locks WHERE {HERE}")
        assert cursor.fetchall() == [(0,)]  # the opener's session, and its lock, are gone
        cursor.execute(f"SELECT pg_advisory_lock({SCHEMA_LOCK_KEY})")
        monkeypatch.setattr(launch, "_instances", {})  # once the schema exists, opens never
        later = threading.Thread(target=launch.dagster_instance)  # queue behind the lock
        later.start()
        later.join(60)
        assert not later.is_alive(), "an open of an existing schema waited for the lock"


def test_falassets_dev_on_a_new_postgres_database_creates_dagsters_schema_first(
    postgres, data_dir, monkeypatch
) -> None:
    """`dagster dev` starts its webserver and daemon at the same moment, and on a new database
    each would create Dagster's schema. `falassets dev` creates it before starting them."""

    url = postgres.new_database("dev_schema")
    monkeypatch.setenv("FALASSETS_POSTGRES_URL", url)
    monkeypatch.setenv("DAGSTER_HOME", str(data_dir / "dagster_home"))
    monkeypatch.setattr(launch, "_instances", {})
    monkeypatch.chdir(data_dir)

    # An option `dagster dev` refuses: it exits before its webserver or daemon open anything.
    assert main(["dev", "--port", "0", "--", "--no-such-option"]) == 2

    assert has_runs_table(url)
