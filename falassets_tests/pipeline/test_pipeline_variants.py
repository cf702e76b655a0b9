"""Variants through Dagster: a prompt of three drafts is one partition materialised with all
three images; review_selections and the winners sensor follow the chosen variant."""

from __future__ import annotations

import dagster as dg
import pytest

from falassets.engine.jobs import EDIT
from falassets.engine.pricing import price_usd
from falassets.lineage import decisions, queries
from falassets.lineage.variants import request_images
from falassets.pipeline.assets.drafts import draft_renders
from falassets.pipeline.assets.finals import final_renders
from falassets.pipeline.assets.selections import review_selections
from falassets.pipeline.automation import winners_sensor
from falassets.pipeline.resources import FalRenderer
from falassets_tests.pipeline.test_pipeline_sensors import Ticker
from falassets_tests.pipeline.test_pipeline_support import (
    load_campaign,
    materialization_metadata,
    render,
    statuses,
)

PROMPTS = {"p1": "a red bicycle against a brick wall", "p2": "a blue mug on an oak desk"}
KEYS = [f"spring-{p}" for p in PROMPTS]


@pytest.fixture
def drafted(sim, data_dir):
    """Three variants per prompt (the file's column), every draft rendered."""
    folder = data_dir / "campaigns"
    folder.mkdir()
    lines = ["id,prompt,image_size,variants", *(f"{k},{v},square,3" for k, v in PROMPTS.items())]
    (folder / "spring.csv").write_text("\n".join(lines) + "\n")
    with dg.instance_for_test() as instance:
        load_campaign(instance, "spring")
        assert render(instance, draft_renders, KEYS).success
        yield instance


def images_of(key: str) -> list[dict]:
    return request_images(queries.latest_requests("spring", "draft")[(key, "draft")])


def test_a_prompt_of_three_variants_is_one_partition_with_three_images(sim, drafted) -> None:
    assert statuses(drafted, draft_renders, KEYS) == dict.fromkeys(KEYS, "MATERIALIZED")
    assert sim.ledger()["totals"]["accepted"] == 2  # one request per prompt
    metadata = materialization_metadata(drafted, draft_renders, "spring-p1")
    assert metadata["variants"] == 3
    assert [i["sha256"] for i in metadata["variant_images"]] == [
        i["sha256"] for i in images_of("spring-p1")
    ]
    assert metadata["cost_usd"] == pytest.approx(
        3 * price_usd({"image_size": "square", "quality": "low"})
    )


def test_the_winners_sensor_refines_again_when_the_chosen_variant_changes(
    sim, drafted, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = drafted
    monkeypatch.setenv("FALASSETS_AUTO_FINAL_MODE", "refine")
    ticker = Ticker(winners_sensor, instance)

    def finals_requested() -> list[dg.RunRequest]:
        return [r for r in ticker.tick() if r.job_name == "final_pass"]

    def run(request: dg.RunRequest) -> dict:
        before = sim.ledger()["totals"]["accepted"]
        result = dg.materialize(
            [final_renders],
            instance=instance,
            resources={"fal": FalRenderer()},
            partition_key=request.partition_key,
            run_config=request.run_config,
        )
        assert result.success
        [sent] = sim.ledger()["requests"][before:]
        return sent

    decisions.record_decisions("spring", ["p1"], "pick", variants={"p1": 2})
    [request] = finals_requested()
    sent = run(request)
    assert sent["endpoint"] == EDIT
    assert sent["input"]["image_urls"] == [images_of("spring-p1")[1]["output_url"]]

    # The same choice again: nothing to render. Another variant: the final is stale.
    decisions.record_decisions("spring", ["p1"], "pick", variants={"p1": 2})
    assert finals_requested() == []
    decisions.record_decisions("spring", ["p1"], "pick", variants={"p1": 3})
    [request] = finals_requested()
    sent = run(request)
    assert sent["input"]["image_urls"] == [images_of("spring-p1")[2]["output_url"]]
    final = queries.latest_requests("spring", "final")[("spring-p1", "final")]
    assert final["variant"] == f"refine:{images_of('spring-p1')[2]['sha256']}"

    # review_selections counts the refined final of the chosen variant as done...
    assert dg.materialize([review_selections], instance=instance, partition_key="spring").success
    metadata = materialization_metadata(instance, review_selections, "spring")
    assert metadata["remaining_final_cost_usd"] == 0
    # ...and a change of variant as a final still to pay for.
    decisions.record_decisions("spring", ["p1"], "pick", variants={"p1": 1})
    assert dg.materialize([review_selections], instance=instance, partition_key="spring").success
    metadata = materialization_metadata(instance, review_selections, "spring")
    assert metadata["remaining_final_cost_usd"] == metadata["projected_final_cost_usd"] > 0
