"""Review decisions feed the final pass: winners only, at quality=high, rerun or refined from
the chosen draft, rendered by the winners sensor without anyone clicking, and never twice."""

from __future__ import annotations

import dagster as dg
import pytest

from falassets.engine.jobs import EDIT, TEXT_TO_IMAGE
from falassets.engine.pricing import price_usd
from falassets.lineage import decisions, queries
from falassets.pipeline.assets.drafts import draft_renders
from falassets.pipeline.assets.finals import final_renders
from falassets.pipeline.assets.selections import review_selections
from falassets.pipeline.automation import winners_sensor
from falassets.pipeline.resources import FalRenderer
from falassets_tests.pipeline.test_pipeline_sensors import Ticker, covered
from falassets_tests.pipeline.test_pipeline_support import (
    load_campaign,
    materialization_metadata,
    render,
    statuses,
    write_campaign,
)

PROMPTS = {
    "p1": "a red bicycle against a brick wall",
    "p2": "a blue mug on an oak desk",
    "p3": "a green forest trail in fog",
    "p4": "an orange cat asleep on a windowsill",
}
KEYS = [f"spring-{p}" for p in PROMPTS]


@pytest.fixture
def drafted(sim, data_dir):
    """A campaign with every draft rendered, in a fresh instance."""
    sim.configure(time_scale=0.01)
    with dg.instance_for_test() as instance:
        write_campaign(data_dir, "spring", PROMPTS)
        load_campaign(instance, "spring")
        assert render(instance, draft_renders, KEYS).success
        yield instance


def test_winners_sensor_renders_exactly_the_winners_once(sim, drafted) -> None:
    instance = drafted
    ticker = Ticker(winners_sensor, instance)
    decisions.record_decisions("spring", ["p1", "p3"], "pick")
    decisions.record_decisions("spring", ["p2"], "reject")
    accepted = len(sim.ledger()["requests"])

    requests = ticker.tick()

    assert instance.get_dynamic_partitions("winner") == ["spring-p1", "spring-p3"]
    by_job = {r.job_name: r for r in requests}
    assert by_job["review_pass"].partition_key == "spring"
    finals = [r for r in requests if r.job_name == "final_pass"]
    ordered = instance.get_dynamic_partitions("winner")
    assert [k for r in finals for k in covered(r, ordered)] == ["spring-p1", "spring-p3"]

    assert render(instance, final_renders, ordered).success
    new = sim.ledger()["requests"][accepted:]
    assert sorted(r["input"]["prompt"] for r in new) == sorted([PROMPTS["p1"], PROMPTS["p3"]])
    assert {(r["endpoint"], r["input"]["quality"]) for r in new} == {(TEXT_TO_IMAGE, "high")}

    # More decisions later: the winners that already have finals are not rendered again.
    decisions.record_decisions("spring", ["p4"], "pick")
    again = [r for r in ticker.tick() if r.job_name == "final_pass"]
    ordered = instance.get_dynamic_partitions("winner")
    assert [k for r in again for k in covered(r, ordered)] == ["spring-p4"]
    assert render(instance, final_renders, ["spring-p4"]).success
    decisions.record_decisions("spring", ["p2"], "undecided")
    assert [r.job_name for r in ticker.tick()] == ["review_pass"]


def test_review_selections_registers_winners_and_projects_the_final_cost(drafted) -> None:
    instance = drafted
    decisions.record_decisions("spring", ["p2", "p4"], "pick")
    decisions.record_decisions("spring", ["p1"], "reject")

    assert dg.materialize([review_selections], instance=instance, partition_key="spring").success

    assert instance.get_dynamic_partitions("winner") == ["spring-p2", "spring-p4"]
    metadata = materialization_metadata(instance, review_selections, "spring")
    assert (metadata["picked"], metadata["rejected"], metadata["undecided"]) == (2, 1, 1)
    high = price_usd({"image_size": "square", "quality": "high", "num_images": 1})
    assert metadata["projected_final_cost_usd"] == pytest.approx(2 * high)

    decisions.record_decisions("spring", ["p4"], "reject")
    dg.materialize([review_selections], instance=instance, partition_key="spring")
    assert instance.get_dynamic_partitions("winner") == ["spring-p2"]


def test_rerun_renders_only_winners_and_refuses_a_non_winner(sim, drafted) -> None:
    instance = drafted
    decisions.record_decisions("spring", ["p1"], "pick")
    instance.add_dynamic_partitions("winner", ["spring-p1", "spring-p2"])  # p2: stale winner
    accepted = len(sim.ledger()["requests"])

    result = render(instance, final_renders, ["spring-p1", "spring-p2"])

    assert statuses(instance, final_renders, ["spring-p1", "spring-p2"]) == {
        "spring-p1": "MATERIALIZED",
        "spring-p2": "FAILED",
    }
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "spring-p2: not_a_winner" in failure.step_failure_data.error.message
    new = sim.ledger()["requests"][accepted:]
    assert [(r["input"]["prompt"], r["input"]["quality"]) for r in new] == [(PROMPTS["p1"], "high")]


def test_refine_sends_the_chosen_draft_to_the_edit_endpoint(sim, drafted) -> None:
    instance = drafted
    decisions.record_decisions("spring", ["p3"], "pick")
    instance.add_dynamic_partitions("winner", ["spring-p3"])
    draft = queries.latest_requests("spring", "draft")[("spring-p3", "draft")]
    accepted = len(sim.ledger()["requests"])

    assert render(instance, final_renders, ["spring-p3"], mode="refine").success

    [sent] = sim.ledger()["requests"][accepted:]
    assert sent["endpoint"] == EDIT
    assert sent["input"]["image_urls"] == [draft["output_url"]]
    assert sent["input"]["prompt"] == PROMPTS["p3"] and sent["input"]["quality"] == "high"
    final = queries.latest_requests("spring", "final")[("spring-p3", "final")]
    assert final["variant"] == f"refine:{draft['sha256']}"
    metadata = materialization_metadata(instance, final_renders, "spring-p3")
    assert metadata["mode"] == "refine"
    assert metadata["draft_request_id"] == draft["request_id"]


def test_winners_sensor_refines_when_the_deployment_asks_for_it(
    sim, drafted, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = drafted
    monkeypatch.setenv("FALASSETS_AUTO_FINAL_MODE", "refine")
    decisions.record_decisions("spring", ["p2"], "pick")
    draft = queries.latest_requests("spring", "draft")[("spring-p2", "draft")]
    accepted = len(sim.ledger()["requests"])

    [request] = [r for r in Ticker(winners_sensor, instance).tick() if r.job_name == "final_pass"]
    result = dg.materialize(
        [final_renders],
        instance=instance,
        resources={"fal": FalRenderer()},
        partition_key=request.partition_key,
        run_config=request.run_config,
    )

    assert result.success
    [sent] = sim.ledger()["requests"][accepted:]
    assert sent["endpoint"] == EDIT
    assert sent["input"]["image_urls"] == [draft["output_url"]]
    assert materialization_metadata(instance, final_renders, "spring-p2")["mode"] == "refine"


def test_a_bad_auto_final_mode_fails_the_tick_with_the_fix_and_registers_nothing(
    drafted, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = drafted
    monkeypatch.setenv("FALASSETS_AUTO_FINAL_MODE", "refined")
    decisions.record_decisions("spring", ["p2"], "pick")

    with pytest.raises(
        ValueError, match=r"FALASSETS_AUTO_FINAL_MODE='refined'.*Fix: .*rerun or refine"
    ):
        Ticker(winners_sensor, instance).tick()
    assert instance.get_dynamic_partitions("winner") == []
