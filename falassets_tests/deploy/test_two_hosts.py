"""One campaign on two worker hosts (issue 13): Dagster's celery executor, Postgres storage, a
Redis broker and the fal cap in Postgres, against the emulator (queue mode, account limit 10).

Each "host" is a process tree of its own (``falassets worker`` in a new session: a Celery main
process and its pool process), with its own DAGSTER_HOME, TMPDIR, HOME and working directory;
the hosts share only PostgreSQL, the broker and FALASSETS_DATA_DIR. The "daemon host" is a
third process tree: ``falassets run`` with FALASSETS_PARTITIONS_PER_RUN=25, the normal launch
path. Waits are on conditions with deadlines (a worker answering Celery's ping, a journal row),
never fixed sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from falassets.sim.control import SimProcess
from falassets_tests.deploy.worker_hosts import Host, wait_for_workers

PROMPTS = 200
PER_RUN = 25
LOST_AFTER_S = 10  # how long a silent worker keeps its step (FALASSETS_CELERY_WORKER_LOST_S)
START_S = 180.0  # a worker imports Dagster and the definitions: slow on a loaded 2-core box
RUN_S = 420.0
PY = sys.executable


@dataclass
class Cluster:
    sim: SimProcess
    shared: Path
    daemon: Path
    env: dict[str, str]
    hosts: dict[str, Host]
    broker: str

    def campaign(self, name: str) -> Path:
        path = self.daemon / f"{name}.csv"
        rows = "".join(f"p{i:03d},{name} lighthouse number {i} at dusk\n" for i in range(PROMPTS))
        path.write_text("id,prompt\n" + rows)
        return path

    @property
    def daemon_env(self) -> dict[str, str]:
        """The daemon host's environment: the cluster's, with its own DAGSTER_HOME."""
        return {**self.env, "DAGSTER_HOME": str(self.daemon / "dagster_home")}

    def start_on_daemon_host(self, argv: list[str], log: Path) -> subprocess.Popen:
        """``argv`` on the daemon host, in a session of its own, its output in ``log``."""
        with log.open("wb") as out:
            return subprocess.Popen(
                argv,
                env=self.daemon_env,
                cwd=self.daemon,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def run(self, campaign: Path) -> Launch:
        """`falassets run` on the daemon host (its own DAGSTER_HOME and folders)."""
        log = self.daemon / f"run-{time.time_ns()}.log"
        argv = [PY, "-m", "falassets.cli", "run", str(campaign), "--plain"]
        return Launch(self.start_on_daemon_host(argv, log), log)

    def journal_rows(self) -> list[dict[str, Any]]:
        rows = []
        for path in sorted((self.shared / "lineage").glob("requests-*.jsonl")):
            for line in path.read_text().splitlines():
                if line.strip():
                    rows.append(json.loads(line))
        return rows


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)  # polling interval of a condition bounded by the deadline above


@dataclass
class Launch:
    process: subprocess.Popen
    log: Path

    def finish(self, timeout_s: float = RUN_S) -> tuple[int, str]:
        """Exit status and output of the launch; kills its tree if it outlives the timeout."""
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
            message = f"falassets run outlived {timeout_s:.0f} s:\n{self.output()}"
            raise AssertionError(message) from None
        return code, self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def latest_by_request(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        request_id = row.get("request_id")
        if request_id and str(row.get("recorded_at", "")) >= str(
            latest.get(request_id, {}).get("recorded_at", "")
        ):
            latest[request_id] = row
    return latest


def writer_pid(row: dict[str, Any]) -> int:
    return int(str(row["writer"]).rsplit("-", 1)[1])


def assert_billed_once_and_recorded_once(cluster: Cluster, campaign: str) -> dict[str, Any]:
    """The emulator's ledger against the shared lineage: every accepted request is in the
    lineage exactly once (one request per partition), and no prompt was billed twice."""
    ledger = cluster.sim.ledger()
    accepted = [r for r in ledger["requests"] if campaign in r["input"]["prompt"]]
    latest = latest_by_request(
        [row for row in cluster.journal_rows() if row.get("campaign") == campaign]
    )
    assert {r["request_id"] for r in accepted} == set(latest)
    per_partition = Counter(row["partition_key"] for row in latest.values())
    assert len(per_partition) == PROMPTS and set(per_partition.values()) == {1}
    assert {row["status"] for row in latest.values()} == {"completed"}
    billed = Counter(r["input"]["prompt"] for r in accepted if r["billed"])
    assert len(billed) == PROMPTS and set(billed.values()) == {1}
    return ledger


@pytest.fixture(scope="module")
def cluster(postgres, redis, tmp_path_factory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("two_hosts")
    shared, daemon = root / "shared", root / "daemon"
    shared.mkdir()
    daemon.mkdir()
    sim = SimProcess.start("--time-scale", "0.1", "--concurrency", "10", "--mode", "queue")
    broker = redis.url.rsplit("/", 1)[0] + "/3"  # a database of its own on the session Redis
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FALASSETS_", "DAGSTER_"))}
    base.pop("FAL_KEY", None)
    env = {
        **base,
        **sim.env(),
        "FALASSETS_DATA_DIR": str(shared),
        "FALASSETS_POSTGRES_URL": postgres.new_database("two_hosts"),
        "FALASSETS_EXECUTOR": "celery",
        "FALASSETS_CELERY_BROKER": broker,
        "FALASSETS_PARTITIONS_PER_RUN": str(PER_RUN),
        "FALASSETS_CELERY_WORKER_LOST_S": str(LOST_AFTER_S),
    }
    hosts = {name: Host(name, root / name, env) for name in ("host-a", "host-b")}
    cluster = Cluster(sim, shared, daemon, env, hosts, broker)
    try:
        for host in hosts.values():
            host.start()
        wait_for_workers(hosts.values(), broker, START_S)
        yield cluster
    finally:
        for host in hosts.values():
            host.stop()
        sim.stop()


def open_submits(cluster: Cluster, pids: set[int]) -> int:
    """Submits these processes started and never resolved (the engine's intent notes)."""
    sent: set[str] = set()
    resolved: set[str] = set()
    for path in (cluster.shared / ".state" / "intents").glob("intents-*.jsonl"):
        for line in path.read_text().splitlines():
            note = json.loads(line) if line.strip() else {}
            if note.get("phase") == "sent" and writer_pid(note) in pids:
                sent.add(note["intent"])
            elif note.get("phase") == "resolved":
                resolved.add(note.get("intent", ""))
    return len(sent - resolved)


def kill_between_submits(cluster: Cluster, host: Host) -> None:
    """SIGKILL the host's tree while it has requests at fal and no submit half-done.

    The tree is frozen (SIGSTOP) while the journals are read, so what they show is what it
    dies with. A kill inside a submit (POST sent, answer not yet journalled) is the engine's
    own crash case (falassets_tests/engine/test_faults_crash*.py): that render stays
    unconfirmed rather than risk a second bill, which is not what this test is about."""
    assert host.process is not None
    pids = host.remember_pids()
    deadline = time.monotonic() + RUN_S
    while time.monotonic() < deadline:
        pending = any(
            row.get("campaign") == "bravo"
            and row.get("status") == "pending"
            and writer_pid(row) in pids
            for row in cluster.journal_rows()
        )
        if pending:
            os.killpg(host.process.pid, signal.SIGSTOP)
            if open_submits(cluster, pids) == 0:
                host.kill()
                return
            os.killpg(host.process.pid, signal.SIGCONT)
        time.sleep(0.05)  # polling interval of a condition bounded by the deadline above
    raise AssertionError(f"{host.name} never had requests at fal between two submits")


def test_one_campaign_renders_across_two_hosts_under_one_cap(cluster: Cluster) -> None:
    cluster.sim.reset()
    code, output = cluster.run(cluster.campaign("alpha")).finish()

    assert code == 0, output
    assert f"{PROMPTS} succeeded, 0 failed" in output
    ledger = assert_billed_once_and_recorded_once(cluster, "alpha")
    assert ledger["peak_running"] <= 10  # the Postgres cap (engine/cap_postgres.py)
    rows = [row for row in cluster.journal_rows() if row.get("campaign") == "alpha"]
    writers = {writer_pid(row) for row in rows}
    for host in cluster.hosts.values():
        assert writers & host.remember_pids(), f"{host.name} rendered nothing"
    assert writers <= set().union(*(h.remember_pids() for h in cluster.hosts.values()))
    for host in cluster.hosts.values():  # each host set up its own home, nobody else's
        assert (host.root / "dagster_home" / "dagster.yaml").exists()


def test_a_host_killed_mid_run_the_other_finishes_and_a_rerun_renders_only_what_is_missing(
    cluster: Cluster,
) -> None:
    cluster.sim.reset()
    cluster.sim.configure(time_scale=0.5)  # drafts take ~0.75 s: the dead host's requests drain
    dead, alive = cluster.hosts["host-a"], cluster.hosts["host-b"]
    campaign = cluster.campaign("bravo")
    launch = cluster.run(campaign)
    dead_pids = dead.remember_pids()
    kill_between_submits(cluster, dead)
    code, output = launch.finish()

    assert code == 1, output  # the dead host's step is lost: its run fails, the others succeed
    assert "has not answered" in output or "Failed (" in output
    rows = [row for row in cluster.journal_rows() if row.get("campaign") == "bravo"]
    completed = {row["partition_key"] for row in rows if row.get("status") == "completed"}
    missing = {f"bravo-p{i:03d}" for i in range(PROMPTS)} - completed
    # The dead host held one step (--concurrency 1): what is missing is part of one run of
    # K consecutive partitions, and only the dead host had written rows for that run.
    [lost_run] = {int(key[-3:]) // PER_RUN for key in missing}
    in_lost_run = {f"bravo-p{i:03d}" for i in range(lost_run * PER_RUN, (lost_run + 1) * PER_RUN)}
    assert {writer_pid(row) for row in rows if row["partition_key"] in in_lost_run} <= dead_pids
    alive_pids = alive.remember_pids()  # the living host finished everything it took
    assert {row["partition_key"] for row in rows if writer_pid(row) in alive_pids} <= completed
    assert cluster.sim.ledger()["peak_running"] <= 10  # while the dead host's requests drained
    accepted_before = {r["request_id"] for r in cluster.sim.ledger()["requests"]}

    code, output = cluster.run(campaign).finish()

    assert code == 0, output
    ledger = assert_billed_once_and_recorded_once(cluster, "bravo")
    assert ledger["peak_running"] <= 10
    latest = latest_by_request(cluster.journal_rows())
    new = {r["request_id"] for r in ledger["requests"]} - accepted_before
    assert {latest[request_id]["partition_key"] for request_id in new} <= missing
    rerun_writers = {writer_pid(latest[request_id]) for request_id in new}
    assert rerun_writers <= alive.remember_pids()


DAEMON_PROMPTS = 30
DAEMON_S = 300.0
DAGSTER_DAEMON = str(Path(PY).parent / "dagster-daemon")  # the daemon host's command
FINISHED = {  # a run's terminal states
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
}


def test_the_daemon_host_renders_a_dropped_campaign_and_its_winners_on_the_workers(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """The deployed topology without `falassets run`: `dagster-daemon` on the daemon host
    (Postgres storage, QueuedRunCoordinator, DefaultRunLauncher from deploy/dagster.yaml) runs
    the sensors; a campaign dropped into the shared folder is drafted, picked winners are
    rendered at high, every render step on a worker host through the broker."""
    from falassets.pipeline import deployment
    from falassets.pipeline.assets.partitions import prompt_partitions
    from falassets.pipeline.jobs import CAMPAIGN_TAG

    cluster.sim.reset()
    home = cluster.daemon / "dagster_home"
    home.mkdir(exist_ok=True)
    if not (home / "dagster.yaml").exists():  # this test alone: as `falassets` would write it
        (home / "dagster.yaml").write_text(deployment.POSTGRES_DAGSTER_YAML)
    env = cluster.daemon_env
    for name, value in env.items():  # read the daemon host's instance (env: in its yaml)
        if name.startswith(("FALASSETS_", "DAGSTER_")):
            monkeypatch.setenv(name, value)
    instance = dg.DagsterInstance.get()
    request.addfinalizer(instance.dispose)

    def charlie_runs() -> list[dg.DagsterRun]:
        """Render passes carry the campaign tag; `prompts` is partitioned by campaign."""
        return [
            run
            for run in instance.get_runs()
            if "charlie" in (run.tags.get(CAMPAIGN_TAG), run.tags.get("dagster/partition"))
        ]

    def runs_settled() -> bool:
        """Lineage shows a render before its run ends (the step still stores it, the run
        still collects the step): stopping the daemon host then would interrupt the run."""
        runs = charlie_runs()
        return any(run.job_name == "final_pass" for run in runs) and all(
            run.status in FINISHED for run in runs
        )

    daemon_log = cluster.daemon / "daemon.log"
    daemon = cluster.start_on_daemon_host(
        [DAGSTER_DAEMON, "run", "-m", "falassets.pipeline.definitions"], daemon_log
    )
    try:
        campaigns = cluster.shared / "campaigns"
        campaigns.mkdir(exist_ok=True)
        rows = "".join(f"p{i:03d},charlie lighthouse {i} at dawn\n" for i in range(DAEMON_PROMPTS))
        (campaigns / "charlie.csv.tmp").write_text("id,prompt\n" + rows)
        (campaigns / "charlie.csv.tmp").rename(campaigns / "charlie.csv")

        def completed(pass_name: str) -> set[str]:
            latest = latest_by_request(cluster.journal_rows())
            return {
                row["partition_key"]
                for row in latest.values()
                if row.get("campaign") == "charlie"
                and row.get("pass") == pass_name
                and row.get("status") == "completed"
            }

        def daemon_says() -> str:
            return daemon_log.read_text(errors="replace")[-3000:]

        wait_until(
            lambda: len(completed("draft")) == DAEMON_PROMPTS,
            DAEMON_S,
            f"the daemon's sensor to draft charlie (daemon log tail:\n{daemon_says()})",
        )
        pick = subprocess.run(
            [PY, "-m", "falassets.cli", "pick", "charlie", "p000", "p001"],
            env=env,
            cwd=cluster.daemon,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert pick.returncode == 0, pick.stdout + pick.stderr
        wait_until(
            lambda: completed("final") == {"charlie-p000", "charlie-p001"},
            DAEMON_S,
            f"the winners sensor's final pass (daemon log tail:\n{daemon_says()})",
        )
        wait_until(runs_settled, DAEMON_S, f"charlie's runs to end (log:\n{daemon_says()})")
        # What the daemon host did, judged before stopping it: a run a sensor launches from
        # here on (a report refresh) is interrupted by the stop, which is not the pipeline's.
        finished = charlie_runs()
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(30)

    ledger = cluster.sim.ledger()
    accepted = [r for r in ledger["requests"] if "charlie" in r["input"]["prompt"]]
    assert len(accepted) == DAEMON_PROMPTS + 2  # each draft once, two finals
    assert Counter(r["input"]["quality"] for r in accepted) == {"low": 30, "high": 2}
    assert all(r["billed"] for r in accepted) and ledger["peak_running"] <= 10
    rows = [row for row in cluster.journal_rows() if row.get("campaign") == "charlie"]
    workers = set().union(*(h.remember_pids() for h in cluster.hosts.values()))
    assert {writer_pid(row) for row in rows} <= workers  # rendered on the worker hosts

    by_job = Counter(run.job_name for run in finished)
    assert {"prompts_pass", "draft_pass", "final_pass"} <= set(by_job), by_job
    assert {run.status for run in finished} == {dg.DagsterRunStatus.SUCCESS}
    assert all("dagster/sensor_name" in run.tags for run in finished)  # the daemon made them
    keys = [f"charlie-p{i:03d}" for i in range(DAEMON_PROMPTS)]
    states = instance.get_status_by_partition(dg.AssetKey("draft_renders"), keys, prompt_partitions)
    assert {state.value for state in states.values()} == {"MATERIALIZED"}


UI_PROMPTS = 50
UI_REFUSED = (7, 18, 31, 44)  # in both runs of K=25


def test_the_ui_on_postgres_backfills_exactly_the_failed_drafts_on_the_workers(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The Dagster UI on the deployment (`dagster dev`: webserver and daemon over the
    Postgres home): it shows the drafts a distributed pass failed, and "backfill failed and
    missing" (the GraphQL mutation the UI sends) re-renders exactly those, on the worker
    hosts, in runs of at most K (BackfillPolicy.multi_run)."""
    from falassets_tests.pipeline.test_dagster_dev_backfill import (
        BACKFILL_STATUS,
        LAUNCH_BACKFILL,
        DagsterDev,
        wait_for,
    )

    cluster.sim.reset()
    cluster.sim.configure(policy_word="forbidden")  # fal's content policy refuses these
    prompts = {
        f"delta-p{i:03d}": f"delta {'forbidden ' if i in UI_REFUSED else ''}lighthouse {i}"
        for i in range(UI_PROMPTS)
    }
    path = cluster.daemon / "delta.csv"
    path.write_text("id,prompt\n" + "".join(f"{k[6:]},{p}\n" for k, p in prompts.items()))
    code, output = cluster.run(path).finish()
    assert code == 1, output
    failed = {f"delta-p{i:03d}" for i in UI_REFUSED}
    cluster.sim.configure(policy_word="nothing_in_these_prompts")  # a retry would now pass
    accepted_before = {r["request_id"] for r in cluster.sim.ledger()["requests"]}

    def delta(statuses: dict[str, list[str]] | None, kind: str) -> set[str]:
        return {key for key in (statuses or {}).get(kind, []) if key.startswith("delta-")}

    dev = DagsterDev(cluster.daemon_env, tmp_path / "dagster-dev.log")
    try:
        shown = wait_for(
            "the UI to show delta's failed drafts",
            lambda: delta(dev.partition_statuses(), "failedPartitions"),
            180,
            dev.log,
        )
        assert shown == failed
        launched = dev.graphql(
            LAUNCH_BACKFILL,
            backfillParams={
                "assetSelection": [{"path": ["draft_renders"]}],
                "partitionNames": sorted(shown),
                "fromFailure": False,
                "tags": [],
            },
        )["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched

        def backfill_done() -> str | None:
            status = dev.graphql(BACKFILL_STATUS, id=launched["backfillId"])
            state = status["partitionBackfillOrError"]["status"]
            return state if state != "REQUESTED" else None

        assert wait_for("the backfill", backfill_done, 300, dev.log) == "COMPLETED_SUCCESS"
        after = dev.partition_statuses()
        assert delta(after, "materializedPartitions") == set(prompts)
        assert delta(after, "failedPartitions") == set()
    finally:
        dev.stop()

    new = [r for r in cluster.sim.ledger()["requests"] if r["request_id"] not in accepted_before]
    assert sorted(r["input"]["prompt"] for r in new) == sorted(prompts[key] for key in failed)
    latest = latest_by_request(cluster.journal_rows())
    workers = set().union(*(h.remember_pids() for h in cluster.hosts.values()))
    assert {writer_pid(latest[r["request_id"]]) for r in new} <= workers
