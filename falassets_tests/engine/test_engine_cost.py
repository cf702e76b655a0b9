"""What a request costs (issue 11): fal's table for the output, plus input tokens for an edit,
recorded as billed when fal says how many units it billed, and a budget cap that holds even
when every request costs the most the pricing rules allow.

Engine figures are compared with the emulator's ledger: its own copy of fal's rules
(``falassets/sim/rules.py``), written independently of ``falassets/engine/pricing.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from falassets.engine import pricing
from falassets.engine.jobs import EDIT, RenderJob
from falassets.engine.model import custom_size_problem
from falassets.lineage import catalog
from falassets.pipeline.resources import FalRenderer
from falassets_tests.engine.engine_support import lineage_rows, make_jobs, render_all

#: The engine rounds a cost to 6 decimals; the emulator to its own: a refine's recorded cost
#: and the emulator's bill may differ by rounding only.
TOLERANCE_USD = 2e-6


def _refine_of(draft: dict, job: RenderJob, *, quality: str = "high") -> RenderJob:
    """The final-pass edit of a completed draft, as ``final_renders`` builds it."""
    return RenderJob(
        partition_key=job.partition_key,
        campaign=job.campaign,
        prompt_id=job.prompt_id,
        pass_name="final",
        input={**job.input, "quality": quality, "image_urls": [draft["output_url"]]},
        endpoint=EDIT,
        variant=f"refine:{draft['sha256']}",
    )


def _edit_jobs(n: int, url: str) -> list[RenderJob]:
    return [
        RenderJob(
            partition_key=job.partition_key,
            campaign=job.campaign,
            prompt_id=job.prompt_id,
            pass_name="final",
            input={**job.input, "image_urls": [url]},
            endpoint=EDIT,
        )
        for job in make_jobs(n, tag="edit", quality="high")
    ]


# -- the rules, without a request ----------------------------------------------------------------


def _valid_sizes() -> list[tuple[int, int]]:
    step = 64  # multiples of 16, thinned so the check stays fast
    return [
        (w, h)
        for w in range(512, 3841, step)
        for h in range(512, 3841, step)
        if custom_size_problem(w, h) is None
    ]


@pytest.mark.parametrize("quality", ["low", "medium", "high"])
def test_no_size_is_priced_below_a_smaller_table_size(quality: str) -> None:
    """The table is not monotone (1024x1536 is cheaper than 1024x1024): a custom size between
    rows must never be priced below a table size with fewer pixels."""
    rows = {(w, h): prices[quality] for (w, h), prices in pricing.PRICE_TABLE.items()}
    for width, height in _valid_sizes():
        if (width, height) in rows or (height, width) in rows:
            continue
        price = pricing.price_per_image(width, height, quality)
        smaller = [p for (w, h), p in rows.items() if w * h <= width * height]
        assert price >= max(smaller, default=0.0), (width, height, price)
    # 1024x1400 lies between 1024x1024 ($0.22 at high) and 1024x1536 ($0.17 at high).
    assert pricing.price_per_image(1024, 1400, "high") == 0.22


def test_table_sizes_cost_their_row_in_either_orientation() -> None:
    for (width, height), prices in pricing.PRICE_TABLE.items():
        for quality, usd in prices.items():
            assert pricing.price_per_image(width, height, quality) == usd
            assert pricing.price_per_image(height, width, quality) == usd


def test_an_edit_pays_its_input_image_and_prompt_within_its_bound() -> None:
    payload = {"prompt": "refine", "image_urls": ["https://x/a.png"], "quality": "high"}
    cost = pricing.estimate(payload, endpoint=EDIT)
    # auto output (estimated 1024x1024, $0.22) + a 1024x1024 input (765 tokens at $8/1M)
    # + "refine" (6 bytes: 2 tokens at $5/1M).
    assert cost.usd == pytest.approx(0.22 + 765 * 8e-6 + 2 * 5e-6)
    # At most: the dearest row (auto is not documented), 8,000 tokens for the input image,
    # one token per prompt byte plus template overhead for the request and the image.
    most = 0.41 + 8_000 * 8e-6 + (6 + 2 * pricing.TEXT_OVERHEAD_TOKENS_MAX) * 5e-6
    assert cost.max_usd == pytest.approx(most)
    two = pricing.estimate({**payload, "image_urls": ["a", "b"]}, endpoint=EDIT)
    assert two.usd == pytest.approx(cost.usd + 765 * 8e-6)


def test_every_caller_prices_with_the_same_rule() -> None:
    """The estimate never exceeds its bound, for any input the table or fal would see."""
    payloads = [
        {"prompt": "p", "quality": q, "image_size": s, "num_images": n}
        for q in ("low", "medium", "high")
        for s in ("square", "auto", "landscape_16_9", {"width": 1024, "height": 1408})
        for n in (1, 3)
    ]
    for payload in payloads:
        for endpoint in ("openai/gpt-image-2", EDIT):
            cost = pricing.estimate({**payload, "image_urls": ["u"]}, endpoint=endpoint)
            assert 0 < cost.usd <= cost.max_usd
    unpriceable = pricing.estimate({"prompt": "p", "quality": "ultra", "image_size": "huge"})
    assert 0.41 <= unpriceable.usd <= unpriceable.max_usd  # fal will judge it; assume the worst


# -- against the emulator ------------------------------------------------------------------------


async def test_a_refines_recorded_cost_is_the_emulators_bill(sim, data_dir: Path) -> None:
    (draft_job,) = make_jobs(1, tag="refine")
    size = {"width": 1536, "height": 1024}  # a custom size: the 1024x1536 row, turned
    draft_job = RenderJob(
        partition_key=draft_job.partition_key,
        campaign=draft_job.campaign,
        prompt_id=draft_job.prompt_id,
        pass_name="draft",
        input={**draft_job.input, "image_size": size},
    )
    (draft,) = await render_all([draft_job])
    assert draft.ok
    (refined,) = await render_all([_refine_of(lineage_rows()[draft.request_id], draft_job)])
    assert refined.ok

    bill = {r["request_id"]: r for r in sim.ledger()["requests"]}[refined.request_id]
    row = lineage_rows()[refined.request_id]
    # $0.17 for the output, plus the 1536x1024 draft as input (1,105 tokens at $8/1M) and
    # the prompt: the emulator bills all three, and so does the recorded cost.
    assert bill["cost_usd"] > 0.17 + 1_105 * 8e-6
    assert row["cost_usd"] == pytest.approx(bill["cost_usd"], abs=TOLERANCE_USD)
    assert refined.cost_usd == row["cost_usd"]
    assert (row["cost_source"], row["billable_units"]) == ("billed", 1)


async def test_cost_source_says_billed_only_when_fal_sent_billable_units(
    sim, data_dir: Path
) -> None:
    jobs = make_jobs(2, tag="source")
    jobs[1] = RenderJob(
        partition_key=jobs[1].partition_key,
        campaign=jobs[1].campaign,
        prompt_id=jobs[1].prompt_id,
        pass_name="draft",
        input={**jobs[1].input, "prompt": jobs[1].input["prompt"] + " SIM_5XX_ONCE"},
    )
    outcomes = {o.job.prompt_id: o for o in await render_all(jobs)}
    rows = lineage_rows()
    ok = rows[outcomes[jobs[0].prompt_id].request_id]
    assert (ok["cost_source"], ok["billable_units"], ok["cost_usd"]) == ("billed", 1, 0.01)
    failed_id = outcomes[jobs[1].prompt_id].request_ids[0]
    # A 5xx carries no x-fal-billable-units: its $0 is our reading of fal's rules.
    assert (rows[failed_id]["cost_source"], rows[failed_id]["billable_units"]) == (
        "estimated",
        None,
    )
    names, found = catalog.query(
        "SELECT request_id, cost_source, billable_units FROM requests ORDER BY request_id"
    )
    assert names == ["request_id", "cost_source", "billable_units"]
    assert dict((rid, (s, u)) for rid, s, u in found)[ok["request_id"]] == ("billed", 1.0)


async def test_budget_cap_never_lets_an_upper_bound_cross_it(sim, data_dir: Path) -> None:
    """Three edits at high: by their estimate all three fit a $0.50 cap (3 x ~$0.156), but the
    third would start with $0.31 spent and up to ~$0.21 more to come. The cap reserves each
    request's upper bound, so it stops after two: what fal bills can never cross it, even
    when the token assumptions are wrong."""
    jobs = _edit_jobs(3, "https://example.com/draft.png")
    cost = pricing.estimate(jobs[0].input, endpoint=EDIT)
    budget = 0.50
    assert 3 * cost.usd <= budget < 2 * cost.usd + cost.max_usd
    outcomes = await render_all(jobs, FalRenderer(concurrency=1, budget_usd=budget))

    assert [o.status for o in outcomes].count("completed") == 2
    assert {o.error_type for o in outcomes if not o.ok} == {"budget_exceeded"}
    assert sim.ledger()["totals"]["billed_usd"] == pytest.approx(2 * cost.usd, abs=TOLERANCE_USD)


async def test_budget_cap_refuses_a_request_whose_upper_bound_does_not_fit(
    sim, data_dir: Path
) -> None:
    (job,) = _edit_jobs(1, "https://example.com/draft.png")
    cost = pricing.estimate(job.input, endpoint=EDIT)
    budget = round((cost.usd + cost.max_usd) / 2, 4)  # the estimate fits, the bound does not
    (outcome,) = await render_all([job], FalRenderer(concurrency=1, budget_usd=budget))
    assert (outcome.status, outcome.error_type) == ("skipped", "budget_exceeded")
    assert sim.ledger()["totals"]["accepted"] == 0


async def test_dry_run_of_a_refine_pass_is_what_the_refines_cost(sim, data_dir: Path) -> None:
    """``falassets run --pass final --mode refine --dry-run`` prices each winner as the edit it
    will be (its draft as input image), with the rule the engine records."""
    from falassets import campaigns
    from falassets.cli.plan import plan_pass
    from falassets.lineage import decisions
    from falassets.pipeline.assets.final_jobs import final_job

    source = data_dir / "spring.csv"
    source.write_text(
        "id,prompt,image_size\n"
        "p1,a red bicycle against a brick wall,1536x1024\n"
        "p2,a blue mug on an oak desk,portrait_4_3\n",
        encoding="utf-8",
    )
    campaign = campaigns.load_campaign(source)
    keys = campaign.partition_keys()
    drafts = [
        RenderJob(key, campaign.name, row.prompt_id, "draft", campaigns.render_input(row, "low"))
        for key, row in zip(keys, campaign.rows, strict=True)
    ]
    assert all(o.ok for o in await render_all(drafts))
    decisions.record_decisions(campaign.name, ["p1", "p2"], "pick")

    plan = plan_pass(campaign, "final", mode="refine")

    rows = {r["partition_key"]: r for r in lineage_rows().values()}
    finals = [
        final_job(key, row, endpoint=drafts[0].endpoint, mode="refine", draft=rows[key])
        for key, row in zip(keys, campaign.rows, strict=True)
    ]
    outcomes = await render_all(finals)
    assert all(o.ok for o in outcomes)
    billed = sim.ledger()["requests"][-2:]
    assert plan.cost_usd == pytest.approx(sum(o.cost_usd for o in outcomes), abs=TOLERANCE_USD)
    assert plan.cost_usd == pytest.approx(sum(b["cost_usd"] for b in billed), abs=TOLERANCE_USD)
    assert plan.cost_usd < plan.max_cost_usd
