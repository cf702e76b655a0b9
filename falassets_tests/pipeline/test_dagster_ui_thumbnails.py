"""Thumbnails in the Dagster UI, seen in a real browser (Debian's Chromium through Playwright).

Drafts rendered by the emulator through `falassets run`'s code path and a campaign report, then
Dagster's UI over that home: the partition panel and the Events tab of ``draft_renders`` show a
loaded thumbnail in the ``thumbnail`` row, and the contact sheet preview of ``campaign_report``
(over the inline limit) shows a loaded image in its "Show Markdown" pop-up.

The UI is `dagster-webserver`: `dagster dev`'s UI without the daemon, whose sensors would
launch prompts and report runs that re-render the page mid-test. Dagster's markdown sanitizer
drops raw HTML, so an ``<img>`` tag leaves these empty; only the markdown image syntax shows.
Screenshots are written to the test's tmp dir.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from falassets.pipeline import launch
from falassets_tests.pipeline.test_dagster_dev_backfill import DagsterDev, wait_for
from falassets_tests.pipeline.test_pipeline_support import write_campaign
from falassets_tests.review.test_review_browser import CHROMIUM, CHROMIUM_ARGS

PROMPTS = {
    "p1": "a red bicycle against a brick wall",
    "p2": "a green forest trail in fog",
}
UI_TIMEOUT_S = 60  # the UI's first page load compiles nothing, but queries a cold code server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`",
    ),
]

# [naturalWidth, naturalHeight, src prefix] of an <img> the browser has decoded and shows
# (laid out, not faded: every ancestor fully opaque), else null.
_SHOWN_JS = """img => {
  if (!img || !img.complete || img.naturalWidth === 0) return null;
  const box = img.getBoundingClientRect();
  if (box.width === 0 || box.height === 0) return null;
  for (let node = img; node; node = node.parentElement)
    if (getComputedStyle(node).opacity !== '1') return null;
  return [img.naturalWidth, img.naturalHeight, img.getAttribute('src').slice(0, 22)];
}"""

# The image in the value cell of the first metadata row labelled ``label``.
ROW_IMAGE_JS = f"""label => {{
  const shown = {_SHOWN_JS};
  for (const row of document.querySelectorAll('tr'))
    if (row.cells.length > 1 && row.cells[0].innerText.trim() === label)
      return shown(row.cells[1].querySelector('img'));
  return null;
}}"""

# The image in the open dialog ("Show Markdown" pop-up).
DIALOG_IMAGE_JS = f"""() => {{
  const shown = {_SHOWN_JS};
  return shown(document.querySelector('[role="dialog"] img'));
}}"""


@pytest.fixture
def chromium(dagster_ui: DagsterDev) -> Iterator[Any]:
    """Started after the drafts rendered: Playwright's sync API runs an event loop in this
    thread, and an in-process Dagster run of an async asset cannot start while it runs."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def drafted_home(sim, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home with real draft materializations and a campaign report, as `falassets run`
    and the report sensor leave them; returns DAGSTER_HOME."""
    home = data_dir / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # restored afterwards
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    write_campaign(data_dir, "spring", PROMPTS)
    result = launch.run_pass("spring", "draft")
    assert result.succeeded == ["spring-p1", "spring-p2"], result
    launch.materialize_campaign_asset("spring", "campaign_report", launch_id=str(uuid.uuid4()))
    return home


@pytest.fixture
def dagster_ui(sim, data_dir: Path, drafted_home: Path, tmp_path: Path) -> Iterator[DagsterDev]:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(drafted_home),
        "FALASSETS_DATA_DIR": str(data_dir),
        **sim.env(),
    }
    env.pop("FAL_KEY", None)
    dev = DagsterDev(env, tmp_path / "dagster-webserver.log", webserver_only=True)
    try:
        wait_for("the code location to load", dev.partition_statuses, 180, dev.log)
        # What the community pop-up's "Skip" sends: it would cover the page otherwise.
        assert dev.graphql("mutation { setNuxSeen }")["setNuxSeen"] is True
        yield dev
    finally:
        dev.stop()


def ui_url(dev: DagsterDev, path: str) -> str:
    return f"http://127.0.0.1:{dev.port}{path}"


def loaded_image(page: Any, dev: DagsterDev, what: str, script: str, *args: str) -> list[Any]:
    """[natural width, natural height, src prefix] of the image once the browser shows it."""
    return wait_for(what, lambda: page.evaluate(script, *args), UI_TIMEOUT_S, dev.log)


@pytest.mark.timeout(480)
def test_thumbnails_show_in_the_dagster_ui(
    dagster_ui: DagsterDev, chromium: Any, tmp_path: Path
) -> None:
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})

    page.goto(ui_url(dagster_ui, "/assets/draft_renders?view=partitions&partition=spring-p1"))
    width, height, src = loaded_image(
        page, dagster_ui, "the thumbnail in the partition panel", ROW_IMAGE_JS, "thumbnail"
    )
    assert width > 0 and height > 0 and src.startswith("data:image/webp")
    page.screenshot(path=str(tmp_path / "partition-panel.png"))

    page.goto(ui_url(dagster_ui, "/assets/draft_renders?view=events"))
    width, height, src = loaded_image(
        page, dagster_ui, "the thumbnail in the Events tab", ROW_IMAGE_JS, "thumbnail"
    )
    assert width > 0 and height > 0 and src.startswith("data:image/webp")
    page.screenshot(path=str(tmp_path / "events-tab.png"))

    page.goto(ui_url(dagster_ui, "/assets/campaign_report?view=partitions&partition=spring"))
    preview_row = page.locator("tr", has_text="contact_sheet_preview")
    preview_row.get_by_text("[Show Markdown]").click(timeout=UI_TIMEOUT_S * 1000)
    width, height, src = loaded_image(
        page, dagster_ui, "the contact sheet in the Show Markdown pop-up", DIALOG_IMAGE_JS
    )
    assert width > 0 and height > 0 and src.startswith("data:image/jpeg")
    page.screenshot(path=str(tmp_path / "contact-sheet-pop-up.png"))
