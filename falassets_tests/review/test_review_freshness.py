"""A final refined from the picked draft counts as current on the review page (issue 12).

A refined final sends the draft as ``image_urls`` beside the prompt's own input; the page must
judge it by the same rule as the pipeline and the CLI, or it counts the final as still to pay
for and refuses a final pass that is within budget.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from falassets import campaigns, settings
from falassets.engine.jobs import EDIT
from falassets.engine.pricing import price_usd
from falassets.lineage.journal import Journal
from falassets.lineage.passes import refine_reference
from falassets.lineage.schema import REQUEST_COLUMNS
from falassets.review.app import create_app
from falassets_tests.review.test_review_api import PROMPTS, RecordingSubmit, pick
from falassets_tests.review.test_review_support import ReviewServer, seed_drafts


def record_refined_final(
    campaign: str, prompt_id: str, draft: dict[str, Any], variant: str = "refine:0123abcd"
) -> None:
    """A completed final of ``prompt_id`` refined from ``draft`` (the image whose job variant
    is ``variant``), as the engine journals it."""
    table = campaigns.read_table(campaign, settings.tables_dir())
    row = next(r for r in table.rows if r.prompt_id == prompt_id)
    image = Path(draft["image_path"]).with_name(f"{prompt_id}-final.png")
    image.write_bytes(Path(draft["image_path"]).read_bytes())
    record: dict[str, Any] = dict.fromkeys(REQUEST_COLUMNS)
    record.update(
        request_id=f"req-final-{prompt_id}",
        partition_key=campaigns.partition_key(campaign, prompt_id),
        campaign=campaign,
        prompt_id=prompt_id,
        endpoint=EDIT,
        input={
            **campaigns.render_input(row, "high"),
            "image_urls": [f"https://v3.fal.media/files/{prompt_id}.png"],
        },
        variant=variant,
        status="completed",
        attempt=1,
        submitted_at="2025-01-01T00:02:00+00:00",
        completed_at="2025-01-01T00:02:30+00:00",
        image_path=str(image),
        width=64,
        height=64,
        simulated=True,
        run_id="seed",
    )
    record["pass"] = "final"
    with Journal(settings.journal_dir(), "requests") as journal:
        journal.append(record)


def test_a_refined_final_is_current_and_not_charged_again(data_dir: Path) -> None:
    drafts = seed_drafts(data_dir, "spring", PROMPTS)
    record_refined_final("spring", "p1", drafts["p1"])
    submit = RecordingSubmit()
    with ReviewServer(submit=submit, budget_usd=0.2) as server:
        pick(server, ["p1", "p3"])  # 2 x $0.15 at high; p1's final already exists
        board = server.request("GET", "/api/campaigns/spring").json()
        items = {item["id"]: item for item in board["items"]}
        assert items["p1"]["final_current"] is True
        assert items["p3"]["final_current"] is False
        reply = server.request(
            "POST", "/api/campaigns/spring/render-winners", {"expected": ["p1", "p3"]}
        )
    assert reply.status == 200, reply.body
    assert reply.json()["remaining_final_usd"] == 0.15
    assert submit.calls == [
        ("spring", "final", {"partition_keys": ["spring-p1", "spring-p3"], "mode": "rerun"})
    ]


def test_in_refine_mode_the_page_prices_the_edit_and_sends_refine(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FALASSETS_AUTO_FINAL_MODE=refine: "Render winners" refines the chosen drafts, as the
    winners sensor would. The page prices each winner as that edit (fal also bills the input
    image and prompt tokens), a final refined from the chosen image is current, and a final
    rendered any other way is not."""
    monkeypatch.setenv("FALASSETS_AUTO_FINAL_MODE", "refine")
    drafts = seed_drafts(data_dir, "spring", PROMPTS)
    with Journal(settings.journal_dir(), "requests") as journal:  # as the engine records them
        for prompt_id in ("p1", "p2", "p3"):
            drafts[prompt_id] = {
                **drafts[prompt_id],
                "sha256": hashlib.sha256(prompt_id.encode()).hexdigest(),
                "output_url": f"https://v3.fal.media/files/{prompt_id}-draft.png",
            }
            journal.append(drafts[prompt_id])
    record_refined_final("spring", "p1", drafts["p1"], refine_reference(drafts["p1"]["sha256"]))
    record_refined_final("spring", "p2", drafts["p2"], "")  # a plain rerun at high
    submit = RecordingSubmit()
    with ReviewServer(submit=submit, budget_usd=None) as server:
        pick(server, ["p1", "p2", "p3"])
        board = server.request("GET", "/api/campaigns/spring").json()
        items = {item["id"]: item for item in board["items"]}
        reply = server.request(
            "POST", "/api/campaigns/spring/render-winners", {"expected": ["p1", "p2", "p3"]}
        )

    assert board["final_mode"] == "refine"
    assert [items[pid]["final_current"] for pid in ("p1", "p2", "p3")] == [True, False, False]
    rows = campaigns.read_table("spring", settings.tables_dir()).rows
    table = {row.prompt_id: row for row in rows}
    edit = {
        **campaigns.render_input(table["p3"], "high"),
        "image_urls": [drafts["p3"]["output_url"]],
    }
    rerun = price_usd(campaigns.render_input(table["p3"], "high"))
    assert items["p3"]["final_cost_usd"] == price_usd(edit, endpoint=EDIT) > rerun
    assert reply.status == 200, reply.body
    assert reply.json()["remaining_final_usd"] == round(
        items["p2"]["final_cost_usd"] + items["p3"]["final_cost_usd"], 4
    )
    assert submit.calls == [
        (
            "spring",
            "final",
            {"partition_keys": ["spring-p1", "spring-p2", "spring-p3"], "mode": "refine"},
        )
    ]


def test_a_bad_final_mode_stops_the_page_before_it_serves(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALASSETS_AUTO_FINAL_MODE", "remaster")
    with pytest.raises(ValueError, match="FALASSETS_AUTO_FINAL_MODE"):
        create_app()
