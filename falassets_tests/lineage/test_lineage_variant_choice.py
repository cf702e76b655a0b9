"""A winner is a (prompt, variant): the freshness rule, the images of a request and the
decisions journal agree on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from falassets.lineage import decisions
from falassets.lineage.passes import Freshness, RequestRow, freshness, refine_reference
from falassets.lineage.variants import request_images, variant_image, variants_asked

HIGH = {"prompt": "a red bicycle", "image_size": "square", "quality": "high", "num_images": 1}


def final(variant: str, status: str = "completed") -> RequestRow:
    payload = {**HIGH, "image_urls": ["https://x/1.png"]} if variant else HIGH
    return RequestRow("spring-p1", "final", status, payload, variant=variant)


def test_a_refined_final_is_current_only_for_the_variant_it_was_refined_from() -> None:
    two, three = refine_reference("sha-2"), refine_reference("sha-3")
    refined = final(two)

    assert freshness(HIGH, refined, reference=two) is Freshness.CURRENT
    assert freshness(HIGH, refined, reference=three) is Freshness.STALE  # choice changed
    assert freshness(HIGH, refined, reference=two, refine=True) is Freshness.CURRENT
    assert freshness(HIGH, refined, reference=three, refine=True) is Freshness.STALE
    assert freshness(HIGH, refined) is Freshness.CURRENT  # choice unknown: as before


def test_a_rerun_final_does_not_depend_on_the_chosen_variant() -> None:
    rerun = final("")

    assert freshness(HIGH, rerun, reference=refine_reference("sha-3")) is Freshness.CURRENT
    # ...but when a refine is wanted, a rerun is not a refine of the chosen variant.
    wanted = refine_reference("sha-3")
    assert freshness(HIGH, rerun, reference=wanted, refine=True) is Freshness.STALE
    assert freshness(HIGH, final(wanted, "pending"), reference=wanted) is Freshness.IN_FLIGHT


def test_request_images_lists_every_variant_and_reads_rows_from_before_variants() -> None:
    listed = {
        "input": '{"prompt": "p", "num_images": 2}',
        "image_path": "/r/a.png",
        "sha256": "a",
        "images": '[{"variant": 2, "image_path": "/r/b.png", "sha256": "b"},'
        ' {"variant": 1, "image_path": "/r/a.png", "sha256": "a"}]',
    }
    assert [(i["variant"], i["sha256"]) for i in request_images(listed)] == [(1, "a"), (2, "b")]
    assert variant_image(listed, 2)["image_path"] == "/r/b.png"
    assert variant_image(listed, 3) is None
    assert variants_asked(listed) == 2

    before = {"image_path": "/r/old.png", "sha256": "o", "width": 8, "output_url": "u"}
    [only] = request_images(before)
    assert (only["variant"], only["sha256"], only["output_url"]) == (1, "o", "u")
    assert request_images({"status": "failed"}) == [] and variants_asked(before) == 1


def test_a_pick_records_its_variant_and_refuses_one_the_prompt_lacks(data_dir: Path) -> None:
    decisions.record_decisions("spring", ["a", "b"], "pick", variants={"b": 3})
    assert decisions.picks("spring") == {"a": 1, "b": 3}
    assert decisions.winners("spring") == ["a", "b"]

    with pytest.raises(decisions.DecisionError, match="2 draft variants, not 3"):
        decisions.record_decisions(
            "spring", ["a"], "pick", variants={"a": 3}, known_variants={"a": 2}
        )
    with pytest.raises(decisions.DecisionError, match="not a draft variant"):
        decisions.record_decisions("spring", ["a"], "pick", variants={"a": 0})
    assert decisions.picks("spring") == {"a": 1, "b": 3}  # nothing was recorded

    decisions.record_decisions("spring", ["b"], "reject")
    assert decisions.picks("spring") == {"a": 1}
    assert decisions.chosen_variants("spring") == {("spring", "a"): 1}
