"""The campaign sensor: a dropped or edited file loads the campaign, then renders exactly the
prompts that are new or whose render input changed. Evaluated tick by tick the way the daemon
does (dynamic partition requests applied, then the runs it asks for executed)."""

from __future__ import annotations

import csv

import dagster as dg
import pytest

from falassets.pipeline.assets.drafts import draft_renders
from falassets.pipeline.assets.partitions import RANGE_END_TAG, RANGE_START_TAG
from falassets.pipeline.automation import campaign_file_sensor
from falassets.pipeline.definitions import defs
from falassets_tests.pipeline.test_pipeline_support import load_campaign, render, write_campaign

PROMPTS = {
    "p1": "a red bicycle against a brick wall",
    "p2": "a blue mug on an oak desk",
    "p3": "a green forest trail in fog",
}


class Ticker:
    """Evaluates a sensor like the daemon: keeps the cursor, applies partition requests."""

    def __init__(self, sensor: dg.SensorDefinition, instance: dg.DagsterInstance) -> None:
        self.sensor, self.instance, self.cursor = sensor, instance, None

    def tick(self) -> list[dg.RunRequest]:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, definitions=defs
        )
        result = self.sensor(context)
        if isinstance(result, dg.SkipReason):
            return []
        for request in result.dynamic_partitions_requests or []:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                self.instance.add_dynamic_partitions(
                    request.partitions_def_name, list(request.partition_keys)
                )
        self.cursor = result.cursor
        return list(result.run_requests or [])


def covered(request: dg.RunRequest, ordered: list[str]) -> list[str]:
    if request.partition_key:
        return [request.partition_key]
    start, end = request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]
    return ordered[ordered.index(start) : ordered.index(end) + 1]


@pytest.fixture
def instance(data_dir):
    with dg.instance_for_test() as instance:
        yield instance


def test_a_new_file_loads_the_campaign_then_drafts_every_prompt(data_dir, instance) -> None:
    ticker = Ticker(campaign_file_sensor, instance)
    write_campaign(data_dir, "spring", PROMPTS)

    [load] = ticker.tick()
    assert (load.job_name, load.partition_key) == ("prompts_pass", "spring")
    assert instance.get_dynamic_partitions("campaign") == ["spring"]
    assert ticker.tick() == []  # nothing changed, nothing requested

    load_campaign(instance, "spring")
    [drafts] = ticker.tick()
    assert drafts.job_name == "draft_pass"
    ordered = instance.get_dynamic_partitions("prompt")
    assert covered(drafts, ordered) == ["spring-p1", "spring-p2", "spring-p3"]
    assert ticker.tick() == []


def test_editing_one_prompt_re_renders_that_prompt_only(sim, data_dir, instance) -> None:
    sim.configure(time_scale=0.01)
    ticker = Ticker(campaign_file_sensor, instance)
    path = write_campaign(data_dir, "spring", PROMPTS)
    ticker.tick()
    load_campaign(instance, "spring")
    [drafts] = ticker.tick()
    all_keys = covered(drafts, instance.get_dynamic_partitions("prompt"))
    assert render(instance, draft_renders, all_keys).success
    accepted = len(sim.ledger()["requests"])

    write_campaign(data_dir, "spring", {**PROMPTS, "p2": "a blue mug on a marble counter"})
    [reload] = ticker.tick()
    assert (reload.job_name, reload.partition_key) == ("prompts_pass", "spring")
    load_campaign(instance, "spring")
    [redraft] = ticker.tick()

    assert (redraft.job_name, redraft.partition_key) == ("draft_pass", "spring-p2")
    assert render(instance, draft_renders, ["spring-p2"]).success
    new = sim.ledger()["requests"][accepted:]
    assert [r["input"]["prompt"] for r in new] == ["a blue mug on a marble counter"]
    assert path.exists()


def test_a_tag_only_edit_renders_nothing(sim, data_dir, instance) -> None:
    sim.configure(time_scale=0.01)
    ticker = Ticker(campaign_file_sensor, instance)
    write_campaign(data_dir, "spring", PROMPTS)
    ticker.tick()
    load_campaign(instance, "spring")
    [drafts] = ticker.tick()
    render(instance, draft_renders, covered(drafts, instance.get_dynamic_partitions("prompt")))

    path = data_dir / "campaigns" / "spring.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "prompt", "image_size", "output_format", "channel"])
        for prompt_id, text in PROMPTS.items():
            writer.writerow([prompt_id, text, "square", "png", "social"])
    [reload] = ticker.tick()
    assert reload.job_name == "prompts_pass"
    load_campaign(instance, "spring")
    assert ticker.tick() == []


def test_a_file_whose_name_cannot_be_a_campaign_is_skipped_with_a_warning(
    data_dir, instance
) -> None:
    ticker = Ticker(campaign_file_sensor, instance)
    write_campaign(data_dir, "spring", PROMPTS)
    (data_dir / "campaigns" / "Bad Name!.csv").write_text("id,prompt\na,b\n")

    requests = ticker.tick()

    assert [(r.job_name, r.partition_key) for r in requests] == [("prompts_pass", "spring")]
    assert instance.get_dynamic_partitions("campaign") == ["spring"]
