"""Draft pass through Dagster: one run for a whole campaign, each partition on its own.

A user relies on Dagster's partition view being the truth: a prompt whose render failed shows
as failed (so "backfill failed and missing" retries it), every other prompt is materialized
with the metadata a reviewer looks for, and nothing is billed twice on a re-run.
"""

from __future__ import annotations

import dagster as dg
import pytest

from falassets import campaigns
from falassets.lineage import queries
from falassets.pipeline.assets.drafts import draft_renders
from falassets_tests.pipeline.test_pipeline_support import (
    load_campaign,
    materialization_metadata,
    render,
    statuses,
    write_campaign,
)

PROMPTS = {
    "ok_1": "a red bicycle against a brick wall",
    "ok_2": "a blue mug on an oak desk",
    "refused": "a forbidden picture of a lighthouse",
    "ok_3": "a green forest trail in fog",
    "flaky": "a yellow raincoat SIM_5XX_ONCE on a hanger",
    "broken": "a white sailboat SIM_5XX at dawn",
    "ok_4": "an orange cat asleep on a windowsill",
}


@pytest.fixture
def instance(data_dir):
    with dg.instance_for_test() as instance:
        yield instance


def keys(campaign: str = "spring") -> list[str]:
    return [campaigns.partition_key(campaign, prompt_id) for prompt_id in PROMPTS]


def test_failed_partitions_are_exactly_the_failed_renders(sim, data_dir, instance) -> None:
    sim.configure(time_scale=0.01, policy_word="forbidden")
    write_campaign(data_dir, "spring", PROMPTS)
    assert load_campaign(instance, "spring").success
    assert instance.get_dynamic_partitions("prompt") == keys()

    result = render(instance, draft_renders, keys())

    assert not result.success
    state = statuses(instance, draft_renders, keys())
    failed = {key for key, status in state.items() if status == "FAILED"}
    assert failed == {"spring-refused", "spring-broken"}
    assert {k for k, s in state.items() if s == "MATERIALIZED"} == set(keys()) - failed
    # The run says which partitions failed and why.
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.message
    assert "spring-refused: content_policy_violation" in message
    assert "spring-broken" in message
    # Lineage agrees with Dagster, partition by partition.
    latest = queries.latest_requests("spring", "draft")
    for key in keys():
        expected = "failed" if key in failed else "completed"
        assert latest[(key, "draft")]["status"] == expected, key


def test_materialized_partitions_carry_request_cost_image_and_thumbnail(
    sim, data_dir, instance
) -> None:
    sim.configure(time_scale=0.01)
    write_campaign(data_dir, "spring", {"ok_1": PROMPTS["ok_1"], "ok_2": PROMPTS["ok_2"]})
    load_campaign(instance, "spring")
    assert render(instance, draft_renders, ["spring-ok_1", "spring-ok_2"]).success

    metadata = materialization_metadata(instance, draft_renders, "spring-ok_1")
    row = queries.latest_requests("spring", "draft")[("spring-ok_1", "draft")]
    assert metadata["request_id"] == row["request_id"]
    assert metadata["cost_usd"] == pytest.approx(row["cost_usd"]) and row["cost_usd"] > 0
    assert metadata["sha256"] == row["sha256"]
    assert metadata["image_path"] == row["image_path"]
    assert metadata["simulated"] is True
    assert metadata["thumbnail"].startswith("![ok_1](data:image/webp;base64,")
    assert len(metadata["thumbnail"]) < 1000  # Dagster shows it inline below 1,000 characters
    ledger = sim.ledger()["requests"]
    assert [r["input"]["quality"] for r in ledger] == ["low", "low"]


def test_rerunning_the_failed_partitions_renders_only_those(sim, data_dir, instance) -> None:
    sim.configure(time_scale=0.01, policy_word="forbidden")
    write_campaign(data_dir, "spring", PROMPTS)
    load_campaign(instance, "spring")
    render(instance, draft_renders, keys())
    accepted = len(sim.ledger()["requests"])

    # The refusal is lifted (say, the policy changed); retry the failed one alone.
    sim.configure(policy_word="nothing_matches_this")
    assert render(instance, draft_renders, ["spring-refused"]).success

    new = sim.ledger()["requests"][accepted:]
    assert [r["input"]["prompt"] for r in new] == [PROMPTS["refused"]]
    assert statuses(instance, draft_renders, ["spring-refused"]) == {
        "spring-refused": "MATERIALIZED"
    }


def test_a_rerun_of_a_rendered_campaign_bills_nothing(sim, data_dir, instance) -> None:
    sim.configure(time_scale=0.01)
    write_campaign(data_dir, "spring", {"ok_1": PROMPTS["ok_1"], "ok_2": PROMPTS["ok_2"]})
    load_campaign(instance, "spring")
    assert render(instance, draft_renders, ["spring-ok_1", "spring-ok_2"]).success
    billed = sim.ledger()["totals"]["billed"]

    assert render(instance, draft_renders, ["spring-ok_1", "spring-ok_2"]).success

    assert sim.ledger()["totals"]["billed"] == billed
    assert materialization_metadata(instance, draft_renders, "spring-ok_2")["reused"] is True


def test_keys_of_several_campaigns_render_in_one_run(sim, data_dir, instance) -> None:
    sim.configure(time_scale=0.01)
    write_campaign(data_dir, "spring", {"a": "a red kite over a beach"})
    write_campaign(data_dir, "autumn", {"a": "a brown leaf on wet stone", "b": "a pumpkin"})
    load_campaign(instance, "spring")
    load_campaign(instance, "autumn")
    all_keys = ["spring-a", "autumn-a", "autumn-b"]
    assert instance.get_dynamic_partitions("prompt") == all_keys

    assert render(instance, draft_renders, all_keys).success

    prompts_sent = sorted(r["input"]["prompt"] for r in sim.ledger()["requests"])
    assert prompts_sent == ["a brown leaf on wet stone", "a pumpkin", "a red kite over a beach"]


def test_a_partition_whose_prompt_was_removed_fails_with_the_fix(sim, data_dir, instance) -> None:
    sim.configure(time_scale=0.01)
    write_campaign(data_dir, "spring", {"a": "a red kite", "b": "a blue kite"})
    load_campaign(instance, "spring")
    write_campaign(data_dir, "spring", {"a": "a red kite"})
    load_campaign(instance, "spring")

    result = render(instance, draft_renders, ["spring-a", "spring-b"])

    assert statuses(instance, draft_renders, ["spring-a", "spring-b"]) == {
        "spring-a": "MATERIALIZED",
        "spring-b": "FAILED",
    }
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "spring-b: prompt_removed" in failure.step_failure_data.error.message
    assert len(sim.ledger()["requests"]) == 1


def test_a_wrong_key_fails_the_run_with_a_clear_message_and_no_key(sim, data_dir, instance) -> None:
    from falassets.pipeline.resources import FalRenderer

    sim.configure(time_scale=0.01, valid_key="the-right-key")
    write_campaign(data_dir, "spring", {"a": "a red kite"})
    load_campaign(instance, "spring")

    result = dg.materialize(
        [draft_renders],
        instance=instance,
        resources={"fal": FalRenderer(fal_key="a-wrong-key-1234")},
        partition_key="spring-a",
        raise_on_error=False,
    )

    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.message
    assert "fal refused the key" in message and "FAL_KEY" in message
    assert "a-wrong-key-1234" not in message
    logs = instance.all_logs(result.run_id)
    assert not any("a-wrong-key-1234" in (entry.user_message or "") for entry in logs)
    assert statuses(instance, draft_renders, ["spring-a"]) == {"spring-a": "FAILED"}
