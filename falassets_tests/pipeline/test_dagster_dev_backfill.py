"""`dagster dev` (webserver and daemon) on loopback: the UI's "backfill failed and missing"
re-renders exactly the failed draft partitions, and they turn materialized.

The backfill is launched with the GraphQL mutation the UI sends (``launchPartitionBackfill``
with the asset selection and the failed partition names), and the test waits on GraphQL with a
deadline, never on a fixed sleep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from falassets.pipeline.assets.drafts import draft_renders
from falassets.pipeline.launch import prepare_dagster_home
from falassets_tests.pipeline.test_pipeline_support import (
    load_campaign,
    render,
    statuses,
    write_campaign,
)
from falassets_tests.sim.test_sim_support import free_port

REPO = Path(__file__).resolve().parents[2]
PROMPTS = {
    "p1": "a red bicycle against a brick wall",
    "p2": "a forbidden blue mug on an oak desk",
    "p3": "a green forest trail in fog",
    "p4": "a forbidden orange cat asleep on a windowsill",
    "p5": "a white sailboat at dawn",
}
KEYS = [f"spring-{p}" for p in PROMPTS]
FAILED = ["spring-p2", "spring-p4"]
#: Ctrl-C must stop webserver, daemon and code server; each shuts down in turn, which on a
#: loaded 2-core machine took over 60 s (measured under the suite plus a busy loop).
SHUTDOWN_S = 120

STATUS_QUERY = """
query Status($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode {
      assetPartitionStatuses {
        __typename
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions }
      }
    }
  }
}"""

LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on UnauthorizedError { message }
  }
}"""

BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
  }
}"""


def wait_for(what: str, check: Callable[[], Any], deadline_s: float, log: Path) -> Any:
    """Poll ``check`` until it returns something truthy; fail with the server log if not."""
    deadline = time.monotonic() + deadline_s
    delay = 0.2
    while True:
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            pytest.fail(f"timed out waiting for {what}; dagster dev log tail:\n{tail}")
        time.sleep(delay)  # polling interval of a deadline-bound wait, not a synchronisation
        delay = min(delay * 1.5, 2.0)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class DagsterDev:
    """`dagster dev` on a free loopback port; ``webserver_only`` runs `dagster-webserver`
    instead (the same UI over the same home, without the daemon's sensors launching runs)."""

    def __init__(self, env: dict[str, str], log: Path, *, webserver_only: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/graphql"
        self.log = log
        self._log_handle = log.open("wb")
        program = ["dagster-webserver"] if webserver_only else ["dagster", "dev"]
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name(program[0])),
                *program[1:],
                "-w",
                str(REPO / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            cwd=REPO,
            env=env,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: webserver, daemon, code server
            # Ctrl-C as in a terminal: a shell runs background jobs (a CI script, `nohup ... &`)
            # with SIGINT ignored, the child inherits that, and `dagster dev` then never sees
            # the interrupt (its subprocesses install handlers of their own and do).
            preexec_fn=_default_sigint,
        )
        self.client = httpx.Client(timeout=30, trust_env=False)

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = self.client.post(self.url, json={"query": query, "variables": variables})
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def partition_statuses(self) -> dict[str, list[str]] | None:
        node = self.graphql(STATUS_QUERY, key={"path": ["draft_renders"]})["assetNodeOrError"]
        if node["__typename"] != "AssetNode":
            return None
        return node["assetPartitionStatuses"]

    def stop(self) -> int:
        """Ctrl-C, as a user would; everything in the group must exit within the deadline."""
        self.client.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=SHUTDOWN_S)
            except subprocess.TimeoutExpired:
                left = subprocess.run(
                    ["ps", "-o", "pid,stat,etime,args", "-g", str(self.process.pid)],
                    capture_output=True,
                    text=True,
                ).stdout
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                self._log_handle.close()
                tail = self.log.read_text(errors="replace")[-6000:]
                pytest.fail(
                    f"dagster dev did not shut down within {SHUTDOWN_S} s of Ctrl-C; still "
                    f"running:\n{left}\nlog tail:\n{tail}"
                )
        self._log_handle.close()
        return self.process.returncode


@pytest.fixture
def dagster_home(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The home `falassets dev` prepares (batched event log); env changes undone afterwards."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    home = prepare_dagster_home()
    assert home == data_dir / "dagster_home"
    return home


@pytest.fixture
def failed_drafts(sim, data_dir: Path, dagster_home: Path) -> Iterator[None]:
    """A campaign in DAGSTER_HOME whose drafts ran once: two refused, three rendered."""
    sim.configure(policy_word="forbidden")
    with dg.DagsterInstance.get() as instance:
        write_campaign(data_dir, "spring", PROMPTS)
        load_campaign(instance, "spring")
        render(instance, draft_renders, KEYS)
        assert {
            k for k, s in statuses(instance, draft_renders, KEYS).items() if s == "FAILED"
        } == set(FAILED)
    yield


@pytest.mark.slow
@pytest.mark.timeout(540)
def test_backfill_failed_and_missing_from_the_ui_re_renders_only_those(
    sim, data_dir: Path, dagster_home: Path, failed_drafts: None, tmp_path: Path
) -> None:
    sim.configure(policy_word="nothing_in_these_prompts")  # the refusals would now pass
    accepted = len(sim.ledger()["requests"])
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "FALASSETS_DATA_DIR": str(data_dir),
        **sim.env(),
    }
    env.pop("FAL_KEY", None)
    dev = DagsterDev(env, tmp_path / "dagster-dev.log")
    try:
        before = wait_for("the code location to load", dev.partition_statuses, 180, dev.log)
        assert sorted(before["failedPartitions"]) == FAILED  # what the UI shows as failed
        assert sorted(before["materializedPartitions"]) == sorted(set(KEYS) - set(FAILED))

        launched = dev.graphql(
            LAUNCH_BACKFILL,
            backfillParams={
                "assetSelection": [{"path": ["draft_renders"]}],
                "partitionNames": before["failedPartitions"],
                "fromFailure": False,
                "tags": [],
            },
        )["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]

        def backfill_done() -> str | None:
            status = dev.graphql(BACKFILL_STATUS, id=backfill_id)["partitionBackfillOrError"]
            return status["status"] if status["status"] != "REQUESTED" else None

        assert (
            wait_for("the backfill to finish", backfill_done, 240, dev.log) == "COMPLETED_SUCCESS"
        )
        after = dev.partition_statuses()
        assert after is not None
        assert sorted(after["materializedPartitions"]) == sorted(KEYS)
        assert after["failedPartitions"] == []
    finally:
        dev.stop()

    new = sim.ledger()["requests"][accepted:]
    assert sorted(r["input"]["prompt"] for r in new) == sorted(
        PROMPTS[key.split("-", 1)[1]] for key in FAILED
    )
