"""The campaign report: its figures are the lineage's figures (checked against the DuckDB
catalog a user would query), and its contact sheet shows every draft with its id."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from falassets import campaigns, settings
from falassets.engine.pricing import price_usd
from falassets.lineage import catalog, decisions
from falassets.pipeline.assets.drafts import draft_renders
from falassets.pipeline.assets.finals import final_renders
from falassets.pipeline.assets.reports import campaign_report
from falassets_tests.pipeline.test_pipeline_support import (
    load_campaign,
    materialization_metadata,
    render,
    write_campaign,
)

PROMPTS = {
    "p1": "a red bicycle against a brick wall",
    "p2": "a forbidden blue mug on an oak desk",
    "p3": "a green forest trail in fog",
    "p4": "an orange cat asleep on a windowsill",
    "p5": "a white sailboat at dawn",
}


def test_report_figures_match_the_lineage(sim, data_dir) -> None:
    sim.configure(policy_word="forbidden")
    keys = [campaigns.partition_key("spring", p) for p in PROMPTS]
    with dg.instance_for_test() as instance:
        write_campaign(data_dir, "spring", PROMPTS, size="landscape_4_3")
        load_campaign(instance, "spring")
        render(instance, draft_renders, keys)
        decisions.record_decisions("spring", ["p1", "p3"], "pick")
        decisions.record_decisions("spring", ["p4"], "reject")
        instance.add_dynamic_partitions("winner", ["spring-p1", "spring-p3"])
        assert render(instance, final_renders, ["spring-p1", "spring-p3"]).success

        assert dg.materialize([campaign_report], instance=instance, partition_key="spring").success
        report = materialization_metadata(instance, campaign_report, "spring")

    _, [(drafts_done, drafts_failed, finals_done, spend_draft, spend_final)] = catalog.query(
        "SELECT count(*) FILTER (pass = 'draft' AND status = 'completed'),"
        " count(*) FILTER (pass = 'draft' AND status = 'failed'),"
        " count(*) FILTER (pass = 'final' AND status = 'completed'),"
        " coalesce(sum(cost_usd) FILTER (pass = 'draft'), 0),"
        " coalesce(sum(cost_usd) FILTER (pass = 'final'), 0)"
        " FROM requests WHERE campaign = 'spring'"
    )
    assert (report["drafts_done"], report["drafts_failed"]) == (drafts_done, drafts_failed)
    assert (drafts_done, drafts_failed) == (4, 1)
    assert report["drafts_pending"] == 0
    assert (report["picked"], report["rejected"]) == (2, 1)
    assert (report["finals_done"], report["finals_failed"]) == (finals_done, 0) == (2, 0)
    assert report["failures_by_error_type"] == {"draft:content_policy_violation": 1}
    assert report["spend_draft_usd"] == pytest.approx(spend_draft)
    assert report["spend_final_usd"] == pytest.approx(spend_final)
    assert report["spend_total_usd"] == pytest.approx(spend_draft + spend_final)
    assert report["spend_total_usd"] == pytest.approx(sim.ledger()["totals"]["billed_usd"])
    high = price_usd({"image_size": "landscape_4_3", "quality": "high", "num_images": 1})
    assert report["all_high_counterfactual_usd"] == pytest.approx(5 * high)

    sheet_path = Path(report["contact_sheet"])
    assert sheet_path.is_relative_to(settings.data_dir())
    with Image.open(sheet_path) as sheet:
        assert sheet.format == "PNG" and sheet.width >= 3 * 160
    assert report["contact_sheet_preview"].startswith(
        "![spring contact sheet](data:image/jpeg;base64,"
    )
