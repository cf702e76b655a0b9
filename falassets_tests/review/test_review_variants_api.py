"""The decisions endpoint with a chosen variant: a pick names one of the prompt's drafts, and
nothing else is recorded when the variant is not one of them."""

from __future__ import annotations

import json
from pathlib import Path

from falassets.lineage import decisions
from falassets_tests.review.test_review_support import ReviewServer, seed_drafts

PROMPTS = {"p1": "a red bicycle", "p2": "a blue mug"}
URL = "/api/campaigns/spring/decisions"


def test_a_pick_records_its_variant_and_refuses_one_the_prompt_lacks(data_dir: Path) -> None:
    seed_drafts(data_dir, "spring", PROMPTS)  # one variant per prompt
    with ReviewServer() as server:
        beyond = server.request(
            "POST", URL, {"prompt_ids": ["p1"], "decision": "pick", "variant": 2}
        )
        assert beyond.status == 400 and "1 draft variant, not 2" in beyond.json()["error"]
        reject = server.request(
            "POST", URL, {"prompt_ids": ["p1"], "decision": "reject", "variant": 1}
        )
        assert reject.status == 400 and "a variant goes with a pick" in reject.json()["error"]
        assert decisions.current_decisions("spring") == {}

        saved = server.request(
            "POST", URL, {"prompt_ids": ["p1"], "decision": "pick", "variant": 1}
        )
        assert saved.status == 200 and saved.json()["variant"] == 1
        assert decisions.picks("spring") == {"p1": 1}
        board = json.loads(server.request("GET", "/api/campaigns/spring").body)
        by_id = {item["id"]: item for item in board["items"]}
        assert (by_id["p1"]["variant"], by_id["p1"]["variants"]) == (1, 1)
        assert by_id["p2"]["variant"] is None
        assert [v["variant"] for v in by_id["p1"]["draft"]["variants"]] == [1]
