"""Sensors split a pass into runs of at most FALASSETS_PARTITIONS_PER_RUN partitions, as the
launch path and the UI's backfill policy do (issue 13): a deployment on several hosts spreads
sensor-started passes too, instead of sending a whole campaign to one worker as one run."""

from __future__ import annotations

import dagster as dg
import pytest

from falassets.lineage import decisions
from falassets.pipeline.automation import campaign_file_sensor, winners_sensor
from falassets_tests.pipeline.test_pipeline_sensors import Ticker, covered
from falassets_tests.pipeline.test_pipeline_support import load_campaign, write_campaign

PROMPTS = {f"p{i}": f"a lighthouse number {i} at dusk" for i in range(1, 6)}
KEYS = [f"spring-{p}" for p in PROMPTS]


@pytest.fixture
def instance(data_dir):
    with dg.instance_for_test() as instance:
        yield instance


def pass_runs(requests: list[dg.RunRequest], job: str, ordered: list[str]) -> list[list[str]]:
    return [covered(r, ordered) for r in requests if r.job_name == job]


@pytest.mark.parametrize(
    ("per_run", "runs"),
    [
        ("2", [KEYS[0:2], KEYS[2:4], KEYS[4:5]]),
        (None, [KEYS]),  # unset: one run per contiguous range, as before
    ],
)
def test_winners_sensor_requests_runs_of_at_most_k_winners(
    data_dir, instance, monkeypatch: pytest.MonkeyPatch, per_run: str | None, runs
) -> None:
    if per_run is None:
        monkeypatch.delenv("FALASSETS_PARTITIONS_PER_RUN", raising=False)
    else:
        monkeypatch.setenv("FALASSETS_PARTITIONS_PER_RUN", per_run)
    write_campaign(data_dir, "spring", PROMPTS)
    load_campaign(instance, "spring")
    decisions.record_decisions("spring", list(PROMPTS), "pick")

    requests = Ticker(winners_sensor, instance).tick()

    ordered = instance.get_dynamic_partitions("winner")
    assert pass_runs(requests, "final_pass", ordered) == runs
    run_keys = [r.run_key for r in requests if r.job_name == "final_pass"]
    assert len(set(run_keys)) == len(runs)  # each run is requested once, none deduplicated away


def test_campaign_sensor_requests_draft_runs_of_at_most_k_prompts(
    data_dir, instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALASSETS_PARTITIONS_PER_RUN", "2")
    ticker = Ticker(campaign_file_sensor, instance)
    write_campaign(data_dir, "spring", PROMPTS)
    assert [r.job_name for r in ticker.tick()] == ["prompts_pass"]

    load_campaign(instance, "spring")
    requests = ticker.tick()

    ordered = instance.get_dynamic_partitions("prompt")
    assert pass_runs(requests, "draft_pass", ordered) == [KEYS[0:2], KEYS[2:4], KEYS[4:5]]
    assert len({r.run_key for r in requests}) == 3
