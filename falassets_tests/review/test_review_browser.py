"""The review page in a real browser (Debian's Chromium through Playwright) on real drafts
rendered by the emulator: cull with the keyboard, undo, reload, confirm "Render winners" and
watch review_selections and the final renders follow, retry a failed draft, and a
cross-origin form post that changes nothing.

``FALASSETS_UPDATE_SCREENSHOT=1`` also writes the screenshot to docs/review.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

from falassets.lineage import decisions, queries
from falassets.pipeline import launch
from falassets_tests.review.test_review_support import (
    ReviewServer,
    seed_drafts,
    wait_for,
    wait_for_launch,
    write_campaign_csv,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "review.png"
PASS_TIMEOUT = 180  # seconds for a background Dagster pass (process start + render)

PROMPTS = {
    "p01": "a red bicycle against a brick wall",
    "p02": "a blue mug on an oak desk",
    "p03": "a green forest trail in fog",
    "p04": "an orange cat asleep on a windowsill",
    "p05": "a forbidden poster on a wall",  # the emulator's policy word: this draft fails
    "p06": "a lighthouse at dusk",
    "p07": "a bowl of ramen with steam",
    "p08": "a snowy mountain cabin",
    "p09": "a yellow taxi in the rain",
    "p10": "a violet tulip field",
    "p11": "a teal vintage camera",
    "p12": "a copper kettle on a stove",
}

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def chromium():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def drafted(sim, data_dir, monkeypatch):
    """Real drafts of the campaign, rendered by the emulator through a Dagster run."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # the data dir's own home
    write_campaign_csv(data_dir, "spring", PROMPTS, tags="calm")
    result = launch.run_pass("spring", "draft")
    assert result.failed == ["spring-p05"], result
    return data_dir


def wait_until(page, expression: str, *, timeout: float = 15) -> None:
    """Wait for a JS expression to hold. Polled from Python: Playwright's own
    wait_for_function evaluates strings in the page, which the page's CSP (rightly) forbids."""
    wait_for(
        lambda: page.evaluate(f"() => Boolean({expression})"), timeout=timeout, what=expression
    )


def open_confirm(page, button: str, title: str) -> str:
    """Click ``button`` and return the text of the confirm step once it shows ``title``
    (the page refreshes its numbers from the server before it opens the dialog)."""
    page.click(button)
    page.wait_for_selector(f"#confirm:not([hidden]) #confirm-title:has-text('{title}')")
    return page.inner_text("#confirm")


def ids_with(page, css: str) -> list[str]:
    return page.eval_on_selector_all(css, "tiles => tiles.map(t => t.dataset.id)")


# Three background Dagster launches (finals, then a retry) on a 2-core machine that may be
# loaded: each may take PASS_TIMEOUT; the test's budget is theirs, not pytest's default 300 s.
@pytest.mark.timeout(3 * PASS_TIMEOUT + 120)
def test_review_journey_on_real_renders(sim, drafted, chromium, tmp_path) -> None:
    errors: list[str] = []
    with ReviewServer(budget_usd=5.0) as server:
        page = chromium.new_page(viewport={"width": 1440, "height": 900})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.origin}/#/c/spring")
        wait_until(page, "document.querySelectorAll('.tile img').length === 11")

        # Cull with the keyboard: each decision moves on to the next draft, as the key bar says.
        assert "clear (each moves to the next)" in page.inner_text("#keys")
        for key in ["p", "x", "p", "z", "j", "p", "ArrowRight", "x", "p"]:
            page.keyboard.press(key)
        wait_until(page, "document.querySelectorAll('.tile.saving').length === 0")
        expected = {"p01": "pick", "p02": "reject", "p03": "undecided", "p04": "pick"}
        expected |= {"p06": "reject", "p07": "pick"}
        assert decisions.current_decisions("spring") == {
            ("spring", pid): decision for pid, decision in expected.items()
        }
        assert ids_with(page, ".tile.current") == ["p08"]

        # The large view has the prompt and the request id; Enter toggles it.
        page.keyboard.press("k")
        page.keyboard.press("Enter")
        assert page.is_visible("#viewer")
        viewer = page.inner_text("#viewer-panel")
        assert PROMPTS["p07"] in viewer
        p07 = queries.latest_requests("spring", "draft")[("spring-p07", "draft")]
        assert p07["request_id"] in viewer
        page.keyboard.press("Enter")
        assert not page.is_visible("#viewer")

        # A reload keeps every decision.
        page.reload()
        wait_until(page, "document.querySelectorAll('.tile img').length === 11")
        assert ids_with(page, ".tile.pick") == ["p01", "p04", "p07"]
        assert ids_with(page, ".tile.reject") == ["p02", "p06"]
        assert page.inner_text("[data-count=picked]") == "3"
        assert page.inner_text("#projected") == "$0.45"  # 3 x square at high
        assert page.inner_text("#budget") == "$5.00"

        # Filters: picked only, then the failed draft with its error type.
        page.keyboard.press("3")
        assert ids_with(page, ".tile:not([hidden])") == ["p01", "p04", "p07"]
        page.keyboard.press("5")
        assert ids_with(page, ".tile:not([hidden])") == ["p05"]
        assert "content_policy_violation" in page.inner_text("#panel")
        page.keyboard.press("1")

        # A cross-origin form post (from another page, Origin: null) is refused.
        evil = chromium.new_page()
        evil.set_content(
            f'<form method="post" action="{server.origin}/api/campaigns/spring/decisions" '
            'enctype="text/plain"><input name=\'{"prompt_ids":["p09"],"decision":"pick","x":"\' '
            "value='\"}'></form>"
        )
        with evil.expect_response(lambda r: "/decisions" in r.url) as refused:
            evil.eval_on_selector("form", "form => form.submit()")
        assert refused.value.status == 403
        evil.close()
        assert ("spring", "p09") not in decisions.current_decisions("spring")

        # Render winners: the page shows count and cost first; confirming starts the pass.
        dialog = open_confirm(page, "#render-winners", "Render 3 winners")
        assert "3 winners" in dialog and "$0.45" in dialog and "$5.00" in dialog
        page.click("#confirm-ok")
        launch_id = page.wait_for_selector("#launch-id").inner_text()
        assert f"final pass · launch {launch_id}" in page.inner_text("#launches")
        assert not page.is_visible("#confirm")

        winners = {f"spring-{pid}" for pid, d in expected.items() if d == "pick"}

        def finals_done() -> bool:
            finals = queries.latest_requests("spring", "final")
            return {k for (k, _), r in finals.items() if r["status"] == "completed"} == winners

        wait_for(finals_done, timeout=PASS_TIMEOUT, what="the winners' final renders")
        finals = queries.latest_requests("spring", "final")
        assert {k for k, _ in finals} == winners  # nothing else was rendered
        assert {r["input"]["quality"] for r in finals.values()} == {"high"}
        runs = wait_for_launch(launch_id, timeout=PASS_TIMEOUT)
        assert [run.job_name for run in runs if not run.is_success] == []
        assert {"review_pass", "final_pass"} <= {run.job_name for run in runs}
        assert launch.launch_result(launch_id)["exit_code"] == 0
        instance = launch.dagster_instance()
        assert "spring" in instance.get_materialized_partitions(dg.AssetKey("review_selections"))

        # The page follows the runs by itself.
        wait_until(page, "document.querySelectorAll('.tile .final').length === 3")
        page.click(".tile[data-id=p04]")
        shot = tmp_path / "review.png"
        page.screenshot(path=str(shot))
        if os.environ.get("FALASSETS_UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(shot, SCREENSHOT)

        # Retry the failed draft through the draft pass, now that the emulator allows it.
        sim.configure(policy_word="nothing-is-forbidden-now")
        dialog = open_confirm(page, "#retry-failed", "Retry 1 failed draft")
        assert "1 × content_policy_violation" in dialog
        page.click("#confirm-ok")
        wait_until(
            page, "document.querySelector('.tile[data-id=p05] img') !== null", timeout=PASS_TIMEOUT
        )
        retry_id = wait_for(
            lambda: (shown := page.inner_text("#launch-id")) != launch_id and shown,
            timeout=15,
            what="the retry's launch id on the page",
        )
        retry_runs = wait_for_launch(retry_id, timeout=PASS_TIMEOUT)
        assert [run.job_name for run in retry_runs if not run.is_success] == []
        draft = queries.latest_requests("spring", "draft")[("spring-p05", "draft")]
        assert draft["status"] == "completed"
        assert page.inner_text("[data-count=failed]") == "0"
        page.close()
    assert errors == []


def test_a_shared_review_page_opens_with_its_secret_link(data_dir, chromium) -> None:
    """Remote mode in a real browser: the printed link sets the cookie and leaves the address
    bar clean (the #/c/ part kept); a browser without the link gets only the explanation."""
    seed_drafts(data_dir, "spring", {"p1": "a red bicycle", "p2": "a blue mug"})
    secret = "browser-secret-0123456789"
    errors: list[str] = []
    with ReviewServer(access=secret, budget_usd=None) as server:
        stranger = chromium.new_page()
        stranger.goto(f"{server.origin}/#/c/spring")
        assert "secret link" in stranger.inner_text("body")
        stranger.close()

        page = chromium.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.origin}/?token={secret}#/c/spring")
        wait_until(page, "document.querySelectorAll('.tile img').length === 2")
        assert page.url == f"{server.origin}/#/c/spring"
        page.keyboard.press("p")
        wait_until(page, "document.querySelectorAll('.tile.saving').length === 0")
        assert decisions.current_decisions("spring") == {("spring", "p1"): "pick"}
        assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
        page.close()
    assert errors == []
