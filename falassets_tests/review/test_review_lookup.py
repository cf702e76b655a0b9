"""The review page's detail panel: Show asks the server for one request as lineage knows it
(``GET /api/requests/{id}``), Replay hands over the `falassets replay ID` command."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from falassets.sim.control import SimProcess
from falassets_tests.cli.test_cli_support import run_cli
from falassets_tests.engine.engine_support import make_jobs, render_all
from falassets_tests.review.test_review_support import ReviewServer, seed_drafts


def test_show_answers_what_lineage_knows_and_names_the_replay_command(
    sim: SimProcess, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (original,) = asyncio.run(render_all(make_jobs(1)))
    code, out, err = run_cli(capsys, "replay", original.request_id)
    assert code == 0, (out, err)

    with ReviewServer(budget_usd=None) as server:
        reply = server.request("GET", f"/api/requests/{original.request_id}")
        unknown = server.request("GET", "/api/requests/no-such-request")

    assert reply.status == 200, reply.body
    data = reply.json()
    assert data["request"]["request_id"] == original.request_id
    assert data["request"]["input"] == original.job.input  # exactly as sent
    assert data["request"]["status"] == "completed"
    (replay,) = data["replays"]
    assert replay["status"] == "completed" and replay["run_id"].startswith("cli-replay-")
    assert data["commands"] == {
        "show": f"falassets show {original.request_id}",
        "replay": f"falassets replay {original.request_id}",
    }
    assert unknown.status == 404
    assert "no request 'no-such-request' in lineage" in unknown.json()["error"]


@pytest.mark.browser
def test_the_detail_panel_offers_show_and_replay(data_dir: Path) -> None:
    chromium = "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip(f"{chromium} is missing: install it with `apt-get install -y chromium`")
    sync_api = pytest.importorskip("playwright.sync_api")
    rows = seed_drafts(data_dir, "spring", {"p1": "a red bicycle", "p2": "a blue mug"})
    first = rows["p1"]["request_id"]
    errors: list[str] = []
    with ReviewServer(budget_usd=None) as server, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.origin}/#/c/spring")
        page.click(f"#panel button[data-show='{first}']")
        page.wait_for_selector("#panel .lookup-text")
        shown = page.inner_text("#panel .lookup-text")
        page.click(f"#panel button[data-replay='{first}']")
        page.wait_for_selector(f"#panel .lookup-text:has-text('falassets replay {first}')")
        page.keyboard.press("j")  # the grid keeps its keys after a click in the panel
        page.wait_for_selector(f"#panel button[data-show='{rows['p2']['request_id']}']")
        browser.close()

    assert first in shown and "input as sent:" in shown
    assert '"prompt": "a red bicycle"' in shown
    assert f"falassets show {first}" in shown
    assert errors == []
