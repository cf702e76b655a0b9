"""The DAGSTER_HOME falassets prepares: a batched SQLite event log that stores exactly what
Dagster's own stores (so partition states, and "backfill failed and missing", are unchanged)
in far fewer transactions, and that takes over an existing home without losing its runs."""

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy

from falassets.pipeline import launch
from falassets.pipeline.assets.partitions import RANGE_END_TAG, RANGE_START_TAG
from falassets.pipeline.event_log import EVENT_BATCH_SIZE, BatchedSqliteEventLogStorage

PARTITIONS = dg.DynamicPartitionsDefinition(name="event_log_prompts")
KEYS = [f"p{i:03d}" for i in range(60)]
FAILING = {key for key in KEYS if key.endswith("7")}


@dg.asset(
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    output_required=False,
)
def renders(context: dg.AssetExecutionContext) -> Iterator[dg.AssetMaterialization]:
    """The draft pass's shape: one materialization per success, then Failure naming the rest."""
    for key in context.partition_keys:
        if key not in FAILING:
            yield dg.AssetMaterialization(
                asset_key=context.asset_key, partition=key, metadata={"key": key}
            )
    raise dg.Failure(description=f"{len(FAILING)} renders failed")


@dg.asset(
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    output_required=False,
)
def refused(context: dg.AssetExecutionContext) -> Iterator[dg.AssetMaterialization]:
    """A pass where nothing renders: only the planned events speak for the run."""
    raise dg.Failure(description=f"{len(context.partition_keys)} renders failed")
    yield  # a generator, like the draft pass


@pytest.fixture
def home(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DAGSTER_HOME under the test's data dir; env changes are undone after the test."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    return data_dir / "dagster_home"


def run_range(
    instance: dg.DagsterInstance, counted: tuple[type, str] = (sqlalchemy.engine.Engine, "commit")
) -> tuple[dict[str, str], list[tuple], int]:
    """One single-run backfill over KEYS: partition states, the run's asset events as
    (type, partition), and how many ``counted`` SQLAlchemy events (target, name) it caused:
    by default the transactions it committed."""
    instance.add_dynamic_partitions(PARTITIONS.name, KEYS)
    seen = itertools.count()

    def count(*_: object) -> None:
        next(seen)

    sqlalchemy.event.listen(*counted, count)
    try:
        result = dg.materialize(
            [renders],
            instance=instance,
            tags={RANGE_START_TAG: KEYS[0], RANGE_END_TAG: KEYS[-1]},
            raise_on_error=False,
        )
    finally:
        sqlalchemy.event.remove(*counted, count)
    assert not result.success
    [record] = instance.get_asset_records([renders.key])
    assert record.asset_entry.last_run_id == result.run_id  # the UI lists the asset with it
    states = instance.get_status_by_partition(renders.key, KEYS, PARTITIONS)
    events = [
        (record.event_log_entry.dagster_event_type.value, record.partition_key)
        for record in instance.get_records_for_run(result.run_id).records
        if record.event_log_entry.dagster_event_type
        in {
            dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
            dg.DagsterEventType.ASSET_MATERIALIZATION,
        }
    ]
    return {key: state.value for key, state in states.items()}, events, next(seen)


def test_a_range_run_stores_the_same_events_and_states_in_far_fewer_transactions(
    home: Path, tmp_path: Path
) -> None:
    baseline_home = tmp_path / "baseline_home"
    baseline_home.mkdir()
    with dg.DagsterInstance.from_config(str(baseline_home)) as instance:
        baseline_states, baseline_events, baseline_commits = run_range(instance)

    launch.prepare_dagster_home()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, BatchedSqliteEventLogStorage)
        states, events, commits = run_range(instance)

    assert states == baseline_states
    assert {key for key, state in states.items() if state == "FAILED"} == FAILING
    assert {key for key, state in states.items() if state == "MATERIALIZED"} == set(KEYS) - FAILING
    assert events == baseline_events
    assert events.count(("ASSET_MATERIALIZATION_PLANNED", None)) == 0  # one per partition
    # Dagster's storage commits at least once per planned event; the batched one twice in all.
    assert commits <= baseline_commits - len(KEYS)


def test_a_home_made_by_an_earlier_version_switches_and_keeps_its_runs(home: Path) -> None:
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(launch._OLD_DAGSTER_YAML)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert not isinstance(instance.event_log_storage, BatchedSqliteEventLogStorage)
        earlier_states, _, _ = run_range(instance)

    launch.prepare_dagster_home()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, BatchedSqliteEventLogStorage)
        states = instance.get_status_by_partition(renders.key, KEYS, PARTITIONS)
        assert {key: state.value for key, state in states.items()} == earlier_states
        assert len(instance.get_runs()) == 1


def test_a_dagster_yaml_the_user_edited_is_left_alone(home: Path) -> None:
    home.mkdir(parents=True)
    edited = "telemetry:\n  enabled: true\n"
    (home / "dagster.yaml").write_text(edited)
    launch.prepare_dagster_home()
    assert (home / "dagster.yaml").read_text() == edited


def test_any_process_opening_the_home_batches_unless_the_user_chose_a_batch_size(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launch.prepare_dagster_home()
    with dg.DagsterInstance.from_config(str(home)):
        assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == EVENT_BATCH_SIZE
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "50")
    with dg.DagsterInstance.from_config(str(home)):
        assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == "50"


def test_a_run_where_nothing_rendered_still_marks_every_partition_failed(home: Path) -> None:
    launch.prepare_dagster_home()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(PARTITIONS.name, KEYS)
        result = dg.materialize(
            [refused],
            instance=instance,
            tags={RANGE_START_TAG: KEYS[0], RANGE_END_TAG: KEYS[-1]},
            raise_on_error=False,
        )
        states = instance.get_status_by_partition(refused.key, KEYS, PARTITIONS)
        [record] = instance.get_asset_records([refused.key])

    assert not result.success
    assert {state.value for state in states.values()} == {"FAILED"}
    # The asset's row was written from the batch: the UI lists the asset with this run.
    assert record.asset_entry.last_run_id == result.run_id


def test_batch_writes_false_in_dagster_yaml_switches_back_to_dagsters_own_writes(
    home: Path, tmp_path: Path
) -> None:
    """The opt-in is one setting: ``batch_writes: false`` stores event by event, as Dagster's
    own storage does, with the same states and events."""
    baseline_home = tmp_path / "baseline_home"
    baseline_home.mkdir()
    with dg.DagsterInstance.from_config(str(baseline_home)) as instance:
        baseline_states, baseline_events, baseline_commits = run_range(instance)

    launch.prepare_dagster_home()
    config = home / "dagster.yaml"
    assert "batch_writes: true" in config.read_text()
    config.write_text(config.read_text().replace("batch_writes: true", "batch_writes: false"))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert not instance.event_log_storage.batch_writes
        assert "DAGSTER_EVENT_BATCH_SIZE" not in os.environ
        states, events, commits = run_range(instance)

    assert states == baseline_states
    assert events == baseline_events
    # One by one, like Dagster's storage (batched, it saves a commit per planned event).
    assert commits > baseline_commits - len(KEYS) // 2
