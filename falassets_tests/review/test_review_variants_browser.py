"""Choosing among variants in a real browser (Debian's Chromium through Playwright), on drafts
the emulator rendered three at a time: H / L move between a prompt's variants, P picks the
one shown, Z undoes, and the pick is a (prompt, variant) in lineage, the CSV and the viewer."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path

import pytest

from falassets import campaigns, settings
from falassets.engine.jobs import TEXT_TO_IMAGE
from falassets.lineage import decisions, queries
from falassets.lineage.variants import request_images
from falassets.pipeline.assets.drafts import draft_job
from falassets_tests.engine.engine_support import render_all
from falassets_tests.review.test_review_browser import chromium, ids_with, wait_until  # noqa: F401
from falassets_tests.review.test_review_support import ReviewServer

PROMPTS = {
    "p1": "a red bicycle against a brick wall",
    "p2": "a blue mug on an oak desk",
    "p3": "a green forest trail in fog",
    "p4": "an orange cat asleep on a windowsill",
}

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def drafted(sim, data_dir: Path) -> dict[str, list[dict]]:
    """Three real draft variants per prompt (one request each), and the campaign table."""
    source = data_dir / "campaigns" / "spring.csv"
    source.parent.mkdir(parents=True)
    lines = ["id,prompt,image_size,variants"]
    lines += [f"{pid},{prompt},square,3" for pid, prompt in PROMPTS.items()]
    source.write_text("\n".join(lines) + "\n")
    table = campaigns.load_campaign(source)
    campaigns.write_table(table, settings.tables_dir())
    jobs = [
        draft_job(key, row, endpoint=TEXT_TO_IMAGE)
        for key, row in zip(table.partition_keys(), table.rows, strict=True)
    ]
    assert all(outcome.ok for outcome in asyncio.run(render_all(jobs)))
    drafts = queries.latest_requests("spring", "draft")
    return {pid: request_images(drafts[(f"spring-{pid}", "draft")]) for pid in PROMPTS}


def shown(page) -> str:
    return page.eval_on_selector(".tile.current", "tile => tile.dataset.shown")


def chosen(page, prompt_id: str) -> str | None:
    return page.eval_on_selector(
        f".tile[data-id={prompt_id}]",
        "tile => { const i = tile.querySelector('img.vchosen'); return i && i.dataset.v; }",
    )


def saved(page) -> None:
    wait_until(page, "document.querySelectorAll('.tile.saving').length === 0")


def test_variants_are_compared_side_by_side_and_picked_by_keyboard(drafted, chromium) -> None:  # noqa: F811
    errors: list[str] = []
    with ReviewServer(budget_usd=5.0) as server:
        page = chromium.new_page(viewport={"width": 1440, "height": 900})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.origin}/#/c/spring")
        wait_until(page, "document.querySelectorAll('.tile img[data-v]').length === 12")

        # One card per prompt with its three drafts side by side; the key bar names the keys.
        assert ids_with(page, ".tile") == list(PROMPTS)
        assert page.is_visible("#variant-keys")
        assert "variant" in page.inner_text("#variant-keys")
        assert ids_with(page, ".tile.current") == ["p1"] and shown(page) == "1"

        # L / H (and Shift+arrows) move between variants, wrapping; arrows alone move cards.
        for key, expected in [("l", "2"), ("l", "3"), ("l", "1"), ("h", "3"), ("h", "2")]:
            page.keyboard.press(key)
            assert shown(page) == expected, key
        assert page.inner_text("#variant-of").startswith("2 of 3")

        # P picks the variant shown and moves on to the next card.
        page.keyboard.press("p")
        assert ids_with(page, ".tile.current") == ["p2"]
        page.keyboard.press("Shift+ArrowRight")
        page.keyboard.press("Shift+ArrowRight")
        assert shown(page) == "3"
        page.keyboard.press("p")
        saved(page)
        assert decisions.picks("spring") == {"p1": 2, "p2": 3}
        assert (chosen(page, "p1"), chosen(page, "p2")) == ("2", "3")

        # Z undoes the last decision; picking another variant of a winner is a decision too.
        page.keyboard.press("z")
        saved(page)
        assert decisions.picks("spring") == {"p1": 2}
        page.keyboard.press("k")
        assert ids_with(page, ".tile.current") == ["p1"] and shown(page) == "2"
        page.keyboard.press("l")
        page.keyboard.press("p")
        saved(page)
        assert decisions.picks("spring") == {"p1": 3}
        page.keyboard.press("z")
        saved(page)
        assert decisions.picks("spring") == {"p1": 2}

        # A reload keeps the chosen variant; the large view shows the variant on the card.
        page.reload()
        wait_until(page, "document.querySelectorAll('.tile img[data-v]').length === 12")
        assert chosen(page, "p1") == "2" and chosen(page, "p2") is None
        assert ids_with(page, ".tile.current") == ["p1"] and shown(page) == "2"
        assert "variant 2" in page.inner_text("#panel")
        page.keyboard.press("Enter")
        second = Path(drafted["p1"][1]["image_path"]).name
        assert page.get_attribute("#viewer-img", "src").endswith(second)
        page.keyboard.press("l")
        third = Path(drafted["p1"][2]["image_path"]).name
        assert page.get_attribute("#viewer-img", "src").endswith(third)
        page.keyboard.press("Escape")

        # The decisions CSV says which variant won, with that image's sha256.
        exported = server.request("GET", "/api/campaigns/spring/decisions.csv")
        rows = {r["prompt_id"]: r for r in csv.DictReader(io.StringIO(exported.body.decode()))}
        assert (rows["p1"]["variant"], rows["p1"]["variants"]) == ("2", "3")
        assert rows["p1"]["draft_sha256"] == drafted["p1"][1]["sha256"]
        assert rows["p3"]["variant"] == "" and rows["p3"]["decision"] == "undecided"
        page.close()
    assert errors == []
