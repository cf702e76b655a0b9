"""The review page's server: what it shows, what it records, what it starts, what it refuses.

Drafts here are seeded the way the pipeline leaves them (table, files, journal rows) so these
tests stay fast; the browser test renders real drafts through the emulator.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from falassets import campaigns, settings
from falassets.engine.pricing import price_usd
from falassets.lineage import decisions
from falassets.lineage.journal import Journal
from falassets.review.app import main
from falassets.review.exports import MARKS
from falassets.review.security import TOKEN_HEADER
from falassets_tests.review.test_review_support import ReviewServer, seed_drafts

PROMPTS = {
    "p1": "a red bicycle against a brick wall",
    "p2": '=HYPERLINK("http://evil.example","click")',
    "p3": "a green forest trail in fog",
    "p4": "a forbidden poster",
}


class RecordingSubmit:
    """Stands in for ``launch.submit_pass`` where only the confirm logic is under test."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, campaign: str, pass_name: str, **kwargs: Any) -> str:
        self.calls.append((campaign, pass_name, kwargs))
        return f"run-{len(self.calls)}"


@pytest.fixture
def seeded(data_dir: Path) -> Path:
    seed_drafts(data_dir, "spring", PROMPTS, failed={"p4": "content_policy_violation"})
    return data_dir


@pytest.fixture
def submit() -> RecordingSubmit:
    return RecordingSubmit()


@pytest.fixture
def server(seeded: Path, submit: RecordingSubmit):
    with ReviewServer(submit=submit, budget_usd=None) as running:
        yield running


def pick(server: ReviewServer, ids: list[str], decision: str = "pick") -> None:
    reply = server.request(
        "POST", "/api/campaigns/spring/decisions", {"prompt_ids": ids, "decision": decision}
    )
    assert reply.status == 200, reply.body


def test_board_shows_each_draft_with_its_lineage_and_final_price(server: ReviewServer) -> None:
    listed = server.request("GET", "/api/campaigns").json()["campaigns"]
    assert [(c["name"], c["counts"]["all"], c["counts"]["failed"]) for c in listed] == [
        ("spring", 4, 1)
    ]

    board = server.request("GET", "/api/campaigns/spring").json()
    items = {item["id"]: item for item in board["items"]}
    assert list(items) == ["p1", "p2", "p3", "p4"]  # campaign order
    assert items["p1"]["draft"]["request_id"] == "req-spring-p1"
    assert items["p1"]["draft"]["quality"] == "low"
    assert items["p1"]["draft"]["thumb"].startswith("/files/renders/spring/draft/thumbs/")
    assert items["p1"]["tags"] == {}
    assert items["p4"]["draft"]["status"] == "failed"
    assert items["p4"]["draft"]["error_type"] == "content_policy_violation"
    table = campaigns.read_table("spring", settings.tables_dir())
    high = price_usd(campaigns.render_input(table.rows[0], "high"))
    assert items["p1"]["final_cost_usd"] == high
    assert board["budget_usd"] is None

    unchanged = server.request("GET", f"/api/campaigns/spring?version={board['version']}")
    assert unchanged.json() == {"unchanged": True, "version": board["version"]}


def test_a_decision_is_on_disk_for_the_pipeline_when_the_page_hears_back(
    server: ReviewServer,
) -> None:
    pick(server, ["p3"])
    pick(server, ["p1"], "reject")
    pick(server, ["p1"], "undecided")  # what the page's undo sends
    assert decisions.current_decisions("spring") == {
        ("spring", "p3"): "pick",
        ("spring", "p1"): "undecided",
    }
    assert decisions.winners("spring") == ["p3"]
    board = server.request("GET", "/api/campaigns/spring").json()
    assert board["counts"]["picked"] == 1
    assert board["counts"]["projected_final_usd"] == board["items"][2]["final_cost_usd"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"prompt_ids": ["p1", "nope"], "decision": "pick"}, "nope"),
        ({"prompt_ids": ["p1"], "decision": "love"}, "love"),
        ({"prompt_ids": "p1", "decision": "pick"}, "list"),
    ],
)
def test_a_bad_decision_is_refused_and_records_nothing(
    server: ReviewServer, body: dict, named: str
) -> None:
    reply = server.request("POST", "/api/campaigns/spring/decisions", body)
    assert reply.status == 400
    assert named in reply.json()["error"]
    assert decisions.current_decisions("spring") == {}


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},  # token stolen somehow, but the page is elsewhere
        {"Origin": "null"},  # sandboxed iframe / file://
        {"Origin": None, "Referer": "http://evil.example/page"},
        {"Origin": None},  # neither Origin nor Referer
        {TOKEN_HEADER: None},  # a cross-origin form post cannot set the header
        {TOKEN_HEADER: "guessed"},
    ],
    ids=["evil-origin", "null-origin", "evil-referer", "no-origin", "no-token", "wrong-token"],
)
def test_cross_origin_or_tokenless_posts_are_refused(
    server: ReviewServer, submit: RecordingSubmit, headers: dict[str, str | None]
) -> None:
    sent = {"Origin": server.origin, TOKEN_HEADER: server.token, **headers}
    present = {k: v for k, v in sent.items() if v is not None}
    for path, body in [
        ("/api/campaigns/spring/decisions", {"prompt_ids": ["p1"], "decision": "pick"}),
        ("/api/campaigns/spring/retry-failed", {"expected": ["p4"]}),
    ]:
        reply = server.request("POST", path, body, headers=present, same_origin=False)
        assert reply.status == 403, (path, reply.body)
    assert decisions.current_decisions("spring") == {}
    assert submit.calls == []


def test_a_same_origin_referer_with_the_token_is_accepted(server: ReviewServer) -> None:
    headers = {"Referer": f"{server.origin}/#/c/spring", TOKEN_HEADER: server.token}
    body = {"prompt_ids": ["p1"], "decision": "pick"}
    reply = server.request(
        "POST", "/api/campaigns/spring/decisions", body, headers=headers, same_origin=False
    )
    assert reply.status == 200
    assert decisions.current_decisions("spring") == {("spring", "p1"): "pick"}


def test_a_foreign_host_name_is_refused(server: ReviewServer) -> None:
    """DNS rebinding: evil.example resolving to 127.0.0.1 still names itself in Host."""
    reply = server.request("GET", "/api/campaigns", headers={"Host": f"evil.example:{server.port}"})
    assert reply.status == 403
    assert b"spring" not in reply.body


def test_the_page_carries_its_token_and_a_strict_policy(server: ReviewServer) -> None:
    page = server.request("GET", "/")
    assert page.status == 200
    assert f'content="{server.token}"'.encode() in page.body
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert server.request("GET", "/static/").status == 404  # no listing
    assert server.request("GET", "/static/review.js").status == 200


def test_the_key_bar_says_that_p_x_u_move_on(server: ReviewServer) -> None:
    """P / X / U decide and then move to the next draft: the on-page key bar says so."""
    page = server.request("GET", "/").body.decode()
    bar = page[page.index('<span id="keys"') : page.index("</span>", page.index('id="keys"'))]
    text = " ".join(re.sub(r"<[^>]+>", " ", bar).split())
    assert "P pick X reject U clear (each moves to the next) Z undo" in text


def test_images_under_the_data_dir_are_served(server: ReviewServer) -> None:
    board = server.request("GET", "/api/campaigns/spring").json()
    for url in (board["items"][0]["draft"]["thumb"], board["items"][0]["draft"]["image"]):
        reply = server.request("GET", url)
        assert reply.status == 200
        assert reply.headers["content-type"] in ("image/jpeg", "image/png")
        assert reply.headers["x-content-type-options"] == "nosniff"
        Image.open(io.BytesIO(reply.body)).verify()


def test_paths_out_of_the_data_dir_are_refused(
    server: ReviewServer, seeded: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside")
    secret = outside / "secret.png"
    Image.new("RGB", (8, 8), "red").save(secret)
    renders = seeded / "renders"
    (renders / "escape.png").symlink_to(secret)
    (renders / "escape_dir").symlink_to(outside, target_is_directory=True)
    journal = next((seeded / "lineage").glob("requests-*.jsonl")).name
    depth = "/".join([".."] * (len(secret.parts) + 2))
    encoded = depth.replace("..", "%2e%2e")
    refused = [
        f"/files/{depth}{secret}",
        f"/files/renders/{depth}{secret}",
        f"/files/{encoded}{secret}",
        f"/files/renders/%2E%2E/%2E%2E{secret}",
        f"/files/{encoded.replace('/', '%2f')}{secret}",
        f"/files/{secret}",  # absolute: //tmp/...
        f"/files/{str(secret).replace('/', '%2F')}",
        "/files/renders/escape.png",  # symlink out
        "/files/renders/escape_dir/secret.png",  # symlinked folder out
        f"/files/lineage/{journal}",  # inside, but not an image
        "/files/renders",  # a folder: never listed
        "/files/renders/spring/draft/",
        "/files/renders/spring/draft/missing.png",
        "/files/renders/spring/draft/%00.png",
    ]
    for path in refused:
        reply = server.request("GET", path)
        assert reply.status in (403, 404), (path, reply.status)
        assert not reply.body.startswith(b"\x89PNG"), path
        assert b"req-spring" not in reply.body, path


def test_render_winners_starts_exactly_what_the_reviewer_confirmed(
    server: ReviewServer, submit: RecordingSubmit
) -> None:
    pick(server, ["p3"])
    pick(server, ["p1"])
    stale = server.request("POST", "/api/campaigns/spring/render-winners", {"expected": ["p3"]})
    assert stale.status == 409
    assert stale.json()["winners"] == 2
    assert submit.calls == []

    started = server.request(
        "POST", "/api/campaigns/spring/render-winners", {"expected": ["p1", "p3"]}
    )
    assert started.status == 200, started.body
    assert submit.calls == [
        ("spring", "final", {"partition_keys": ["spring-p3", "spring-p1"], "mode": "rerun"})
    ]
    launched = started.json()
    assert launched["run_id"] == "run-1"
    # The launch id tags every run of the pass: the link lists them in Dagster's run list.
    assert launched["dagster_url"].endswith("/runs?q%5B0%5D=tag%3Afalassets/launch%3Drun-1")
    assert launched["winners"] == 2
    board = server.request("GET", "/api/campaigns/spring").json()
    assert [x["run_id"] for x in board["launches"]] == ["run-1"]


def test_render_winners_over_budget_is_refused(seeded: Path, submit: RecordingSubmit) -> None:
    with ReviewServer(submit=submit, budget_usd=0.2) as server:
        pick(server, ["p1", "p3"])  # 2 x $0.15 at high
        assert server.request("GET", "/api/campaigns/spring").json()["budget_usd"] == 0.2
        reply = server.request(
            "POST", "/api/campaigns/spring/render-winners", {"expected": ["p1", "p3"]}
        )
    assert reply.status == 400
    assert "budget" in reply.json()["error"] and "$0.30" in reply.json()["error"]
    assert submit.calls == []


def test_retry_failed_rerenders_the_failed_drafts(
    server: ReviewServer, submit: RecordingSubmit
) -> None:
    nothing = server.request("POST", "/api/campaigns/spring/render-winners", {"expected": []})
    assert nothing.status == 400 and "no winners" in nothing.json()["error"]
    reply = server.request("POST", "/api/campaigns/spring/retry-failed", {"expected": ["p4"]})
    assert reply.status == 200
    assert submit.calls == [("spring", "draft", {"partition_keys": ["spring-p4"]})]


def test_decisions_csv_is_safe_to_open_in_a_spreadsheet(server: ReviewServer) -> None:
    pick(server, ["p2"])
    reply = server.request("GET", "/api/campaigns/spring/decisions.csv")
    assert reply.status == 200
    assert "attachment" in reply.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(reply.body.decode())))
    by_id = {row["prompt_id"]: row for row in rows}
    assert by_id["p2"]["decision"] == "pick"
    assert by_id["p2"]["prompt"] == "'" + PROMPTS["p2"]
    assert by_id["p4"]["draft_error_type"] == "content_policy_violation"
    assert not any(cell.startswith(("=", "+", "@")) for row in rows for cell in row.values())


def test_contact_sheet_is_a_png_of_the_filtered_drafts(server: ReviewServer) -> None:
    pick(server, ["p1", "p3"])
    url = "/api/campaigns/spring/contact-sheet.png"
    every = Image.open(io.BytesIO(server.request("GET", url).body))
    picked = Image.open(io.BytesIO(server.request("GET", url + "?filter=picked").body))
    assert every.format == picked.format == "PNG"
    assert picked.size[1] < every.size[1]  # one row of 2 against two rows of 2
    assert MARKS["pick"] in {colour for _, colour in picked.convert("RGB").getcolors(1 << 16)}
    assert server.request("GET", "/api/campaigns/spring/contact-sheet.png?filter=x").status == 400


def test_the_fal_key_never_reaches_the_page_or_exports(
    server: ReviewServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "fal-key-id:fal-key-secret-0123456789"
    monkeypatch.setenv("FAL_KEY", key)
    with Journal(settings.journal_dir(), "requests") as journal:
        journal.append(
            {
                "request_id": "req-leaky",
                "partition_key": "spring-p4",
                "campaign": "spring",
                "prompt_id": "p4",
                "pass": "draft",
                "status": "failed",
                "error_type": "auth",
                "error_message": f"401 for Key {key}",
                "submitted_at": "2030-01-01T00:00:00+00:00",
            }
        )
    board = server.request("GET", "/api/campaigns/spring")
    exported = server.request("GET", "/api/campaigns/spring/decisions.csv")
    assert json.loads(board.body)["items"][3]["draft"]["request_id"] == "req-leaky"
    for reply in (board, exported):
        assert key.encode() not in reply.body
        assert b"[redacted]" in reply.body


def test_unknown_campaigns_and_routes_answer_json_errors(server: ReviewServer) -> None:
    missing = server.request("GET", "/api/campaigns/autumn")
    assert missing.status == 404
    assert "falassets run" in missing.json()["error"]
    assert server.request("GET", "/api/campaigns/..%2f..").status == 404
    assert b"Traceback" not in missing.body


def test_command_refuses_bad_options_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "no data directory" in capsys.readouterr().err
    monkeypatch.setenv("FALASSETS_BUDGET_USD", "lots")
    assert main(["--data-dir", str(tmp_path)]) == 2
    assert "FALASSETS_BUDGET_USD" in capsys.readouterr().err
    monkeypatch.delenv("FALASSETS_BUDGET_USD")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["--data-dir", str(tmp_path), "--port", str(taken.getsockname()[1])]) == 2
    assert "--port" in capsys.readouterr().err
    assert os.environ["FALASSETS_DATA_DIR"] == str(tmp_path.resolve())
