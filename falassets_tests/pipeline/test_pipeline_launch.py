"""How passes start and what they report: Dagster's public API only, per-partition failures
from Dagster's records (not from error text), and the finals' sha256 asset check."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import pytest

from falassets.lineage import decisions
from falassets.pipeline import launch
from falassets.pipeline.assets.checks import final_file_matches_sha256
from falassets.pipeline.assets.drafts import draft_renders
from falassets.pipeline.assets.finals import final_renders
from falassets.pipeline.resources import FalRenderer
from falassets_tests.cli.test_cli_support import partition_statuses, use_dagster_home, write_csv
from falassets_tests.pipeline.test_pipeline_support import (
    load_campaign,
    materialization_metadata,
    render,
    write_campaign,
)

PACKAGE = Path(__file__).resolve().parents[2] / "falassets"
#: The modules allowed to use Dagster's private API (the opt-in batched event logs).
PRIVATE_DAGSTER_ALLOWED = {
    PACKAGE / "pipeline" / "event_log.py",
    PACKAGE / "pipeline" / "event_log_postgres.py",
}


def _private_dagster_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dagster._"):
            found.append(node.module or "")
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("dagster._")]
    return found


def test_only_the_opt_in_event_log_imports_dagster_private_modules() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): imports
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in PRIVATE_DAGSTER_ALLOWED and (imports := _private_dagster_imports(path))
    }
    assert offenders == {}


@pytest.fixture
def home(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_dagster_home(data_dir, monkeypatch)


def test_every_failed_partition_keeps_its_error_type_beyond_the_listed_fifty(
    sim, data_dir, home
) -> None:
    """The Failure's text names 50 failures; the pass reports all of them, each with its type,
    and Dagster shows exactly those partitions failed."""
    sim.configure(policy_word="forbidden")
    prompts = {f"bad_{i:02d}": f"a forbidden lighthouse number {i}" for i in range(60)}
    prompts.update({"good_1": "a red bicycle", "good_2": "a blue mug"})
    write_csv(data_dir / "campaigns" / "spring.csv", prompts)

    result = launch.run_pass("spring", "draft", launch_id="launch-60")

    bad = {f"spring-{prompt_id}" for prompt_id in prompts if prompt_id.startswith("bad_")}
    assert set(result.failed) == bad
    assert set(result.succeeded) == {"spring-good_1", "spring-good_2"}
    assert set(result.failures) == bad
    assert {kind for kind, _ in result.failures.values()} == {"content_policy_violation"}
    states = partition_statuses("draft_renders", [f"spring-{p}" for p in prompts])
    assert {key for key, state in states.items() if state == "FAILED"} == bad
    tagged = dg.DagsterInstance.get().get_run_records(
        dg.RunsFilter(tags={launch.LAUNCH_TAG: "launch-60"})
    )
    assert set(result.run_ids) <= {record.dagster_run.run_id for record in tagged}


def test_the_final_file_check_flags_a_final_changed_on_disk(sim, data_dir) -> None:
    prompts = {"p1": "a red bicycle", "p2": "a blue mug", "p3": "a green trail"}
    keys = [f"spring-{p}" for p in prompts]
    with dg.instance_for_test() as instance:
        write_campaign(data_dir, "spring", prompts)
        load_campaign(instance, "spring")
        assert render(instance, draft_renders, keys).success
        decisions.record_decisions("spring", ["p1", "p3"], "pick")
        winners = ["spring-p1", "spring-p3"]
        instance.add_dynamic_partitions("winner", winners)
        assert render(instance, final_renders, winners).success

        def check() -> dg.AssetCheckEvaluation:
            result = dg.materialize(
                [final_renders, final_file_matches_sha256],
                selection=dg.AssetSelection.checks(final_file_matches_sha256),
                resources={"fal": FalRenderer()},
                instance=instance,
            )
            [evaluation] = result.get_asset_check_evaluations()
            return evaluation

        clean = check()
        assert clean.passed and clean.metadata["checked"].value == 2

        image = Path(materialization_metadata(instance, final_renders, "spring-p3")["image_path"])
        image.write_bytes(image.read_bytes() + b"tampered")
        tampered = check()

    assert not tampered.passed
    assert tampered.severity == dg.AssetCheckSeverity.WARN
    assert list(tampered.metadata["mismatches"].value) == ["spring-p3"]


def _fd_targets() -> tuple[str, str]:
    return os.readlink("/proc/self/fd/1"), os.readlink("/proc/self/fd/2")


@pytest.mark.parametrize(
    ("named", "beside_a_thread"),
    [(False, False), (True, False), (True, True)],
    ids=["every-prompt", "keys-named", "keys-named-beside-a-thread"],
)
def test_runs_of_at_most_k_partitions_go_at_once_and_report_every_partition(
    sim, data_dir, home, monkeypatch, named: bool, beside_a_thread: bool
) -> None:
    """FALASSETS_PARTITIONS_PER_RUN=2: seven prompts become four runs of at most two, going at
    once; every partition's success or failure (with its type) is exact, progress learns each
    run, and this process's stdout/stderr still point where they did (concurrent in-process
    runs would leave them redirected into a run's compute log). Keys named by the caller (as
    `falassets run` names them): the run processes start while `prompts` runs. A process with
    no other thread forks them (`falassets run` in test_two_hosts.py always does; here, earlier
    tests may have left a thread); beside another thread (the review page's launches) it
    spawns them, always."""
    monkeypatch.setenv("FALASSETS_PARTITIONS_PER_RUN", "2")
    sim.configure(policy_word="forbidden")
    prompts = {f"ok_{i}": f"a red bicycle number {i}" for i in range(5)}
    prompts.update({"bad_1": "a forbidden lighthouse", "bad_2": "a forbidden mug"})
    write_csv(data_dir / "campaigns" / "spring.csv", prompts)
    started: dict[str, list[str]] = {}
    fds = _fd_targets()
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    if beside_a_thread:
        other.start()

    try:
        result = launch.run_pass(
            "spring",
            "draft",
            partition_keys=[f"spring-{p}" for p in prompts] if named else None,
            launch_id="launch-k2",
            on_run_start=lambda run_id, keys: started.setdefault(run_id, list(keys)),
        )
    finally:
        stop.set()
        if beside_a_thread:
            other.join()

    assert _fd_targets() == fds
    bad = {"spring-bad_1", "spring-bad_2"}
    assert set(result.failed) == bad
    assert set(result.succeeded) == {f"spring-ok_{i}" for i in range(5)}
    assert {kind for kind, _ in result.failures.values()} == {"content_policy_violation"}
    assert len(result.run_ids) == 4 and set(started) == set(result.run_ids)
    assert sorted(len(keys) for keys in started.values()) == [1, 2, 2, 2]
    assert sorted(key for keys in started.values() for key in keys) == sorted(
        f"spring-{p}" for p in prompts
    )
    states = partition_statuses("draft_renders", [f"spring-{p}" for p in prompts])
    assert {key for key, state in states.items() if state == "FAILED"} == bad
    assert sim.ledger()["totals"]["accepted"] == len(prompts)


def test_run_processes_are_forked_only_from_a_process_with_one_thread() -> None:
    """A thread alive at a fork may hold a lock (a stream's, a connection's) that the forked
    run process would wait on forever: with one, run processes are spawned. Asked in a fresh
    interpreter, whose threads are known (this one's depend on the tests before)."""
    probe = (
        "import threading, sys\n"
        "from falassets.pipeline import launch\n"
        "alone = launch._start_method()\n"
        "stop = threading.Event()\n"
        "other = threading.Thread(target=stop.wait)\n"
        "other.start()\n"
        "print(alone, launch._start_method())\n"
        "stop.set()\n"
    )
    answer = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    assert answer == ["fork" if sys.platform == "linux" else "spawn", "spawn"]
