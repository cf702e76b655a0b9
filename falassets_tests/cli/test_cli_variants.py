"""Variants end to end on the emulator, through real Dagster runs: a campaign asks for three
drafts per prompt, the reviewer picks one of them, and the refined final starts from exactly
that image; picking it again renders nothing, picking another makes the final stale."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from falassets.engine.jobs import EDIT
from falassets.engine.pricing import price_usd
from falassets.lineage import catalog, decisions, queries
from falassets_tests.cli.test_cli_support import (
    partition_statuses,
    run_cli,
    use_dagster_home,
    write_csv,
)

PROMPTS = {
    "hero_1": "a red bicycle against a brick wall",
    "hero_2": "a blue mug on an oak desk",
}
KEYS = [f"spring-{p}" for p in PROMPTS]


@pytest.fixture
def home(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_dagster_home(data_dir, monkeypatch)


def _images() -> dict[str, list[tuple]]:
    """partition key -> [(variant, sha256, image_path, thumbnail_path, output_url)] of drafts."""
    _, rows = catalog.query(
        "SELECT partition_key, variant, sha256, image_path, thumbnail_path, output_url "
        "FROM request_images WHERE pass = 'draft' ORDER BY partition_key, variant"
    )
    found: dict[str, list[tuple]] = {}
    for key, *rest in rows:
        found.setdefault(key, []).append(tuple(rest))
    return found


def _final_requests(sim, before: int) -> list[dict]:
    return sim.ledger()["requests"][before:]


@pytest.mark.timeout(600)
def test_three_variants_drafted_picked_refined_and_never_rendered_twice(
    sim, data_dir, home, capsys
) -> None:
    source = write_csv(data_dir / "incoming" / "spring.csv", PROMPTS)

    code, out, err = run_cli(capsys, "run", str(source), "--variants", "3", "--plain")

    assert code == 0, (out, err)
    # One request per prompt, asking fal for three images; one partition per prompt.
    ledger = sim.ledger()
    assert ledger["totals"]["accepted"] == len(PROMPTS)
    assert {r["input"]["num_images"] for r in ledger["requests"]} == {3}
    assert set(partition_statuses("draft_renders", KEYS).values()) == {"MATERIALIZED"}
    # Every variant downloaded and verified: its own file, sha256 and thumbnail.
    images = _images()
    assert sorted(images) == KEYS
    for key in KEYS:
        assert [variant for variant, *_ in images[key]] == [1, 2, 3]
        assert len({sha for _, sha, *_ in images[key]}) == 3
        for _, sha, path, thumb, url in images[key]:
            assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha
            assert Path(thumb).is_file() and url
    # Priced and billed as three images: 3 x the one-image draft price, per prompt.
    one = price_usd({"prompt": "x", "image_size": "landscape_4_3", "quality": "low"})
    drafts = queries.latest_requests("spring", "draft")
    assert [drafts[(key, "draft")]["cost_usd"] for key in KEYS] == [3 * one] * len(PROMPTS)
    assert [r["cost_usd"] for r in ledger["requests"]] == [3 * one] * len(PROMPTS)

    # The campaign remembers its three variants: running it again renders nothing.
    code, out, _ = run_cli(capsys, "run", "spring", "--plain")
    assert code == 0 and "Nothing to render" in out, out
    assert sim.ledger()["totals"]["accepted"] == len(PROMPTS)

    # The reviewer picks hero_1's second variant: the refine starts from exactly that image.
    code, out, _ = run_cli(capsys, "pick", "spring", "hero_1:2")
    assert code == 0, out
    assert decisions.picks("spring") == {"hero_1": 2}
    before = sim.ledger()["totals"]["accepted"]
    code, out, err = run_cli(
        capsys, "run", "spring", "--pass", "final", "--mode", "refine", "--plain"
    )
    assert code == 0, (out, err)
    [sent] = _final_requests(sim, before)
    second = images["spring-hero_1"][1]
    assert sent["endpoint"] == EDIT
    assert sent["input"]["image_urls"] == [second[4]]
    assert sent["input"]["num_images"] == 1 and sent["input"]["quality"] == "high"
    final = queries.latest_requests("spring", "final")[("spring-hero_1", "final")]
    assert final["variant"] == f"refine:{second[1]}"
    assert partition_statuses("final_renders", ["spring-hero_1"]) == {
        "spring-hero_1": "MATERIALIZED"
    }

    # Picking the same variant again renders nothing.
    assert run_cli(capsys, "pick", "spring", "hero_1:2")[0] == 0
    before = sim.ledger()["totals"]["accepted"]
    code, out, _ = run_cli(
        capsys, "run", "spring", "--pass", "final", "--mode", "refine", "--plain"
    )
    assert code == 0 and "Nothing to render" in out, out
    assert sim.ledger()["totals"]["accepted"] == before

    # Another variant makes the final stale: it is refined again, from that image.
    assert run_cli(capsys, "pick", "spring", "hero_1:3")[0] == 0
    code, out, err = run_cli(
        capsys, "run", "spring", "--pass", "final", "--mode", "refine", "--plain"
    )
    assert code == 0, (out, err)
    [again] = _final_requests(sim, before)
    assert again["input"]["image_urls"] == [images["spring-hero_1"][2][4]]


def test_a_bad_variants_cell_exits_2_naming_file_row_column_and_fix(
    sim, data_dir, home, capsys
) -> None:
    bad = data_dir / "incoming" / "spring.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("id,prompt,variants\nhero_1,a red bicycle,2\nhero_2,a blue mug,7\n")

    code, out, err = run_cli(capsys, "run", str(bad))

    assert code == 2, (out, err)
    assert str(bad) in err and "row 3" in err and "column 'variants'" in err
    assert "7" in err and "Fix:" in err and "1 to 4" in err
    assert "Traceback" not in err
    assert sim.ledger()["totals"]["accepted"] == 0
    assert not (data_dir / "campaigns").exists()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("--variants", "5"), ["--variants 5", "1 to 4", "Fix:"]),
        (("--variants", "0"), ["--variants 0", "Fix:"]),
        (("--variants", "2", "--pass", "final"), ["draft pass", "Fix:"]),
    ],
)
def test_a_bad_variants_option_exits_2_and_renders_nothing(
    argv, words, sim, data_dir, home, capsys
) -> None:
    source = write_csv(data_dir / "incoming" / "spring.csv", PROMPTS)

    code, out, err = run_cli(capsys, "run", str(source), *argv)

    assert code == 2, (out, err)
    for word in words:
        assert word in err, err
    assert sim.ledger()["totals"]["accepted"] == 0


def test_pick_refuses_a_variant_the_prompt_does_not_have(sim, data_dir, capsys) -> None:
    campaigns = data_dir / "campaigns"
    campaigns.mkdir()
    (campaigns / "spring.csv").write_text("id,prompt,variants\nhero_1,a red bicycle,3\n")

    code, _, err = run_cli(capsys, "pick", "spring", "hero_1:4")
    assert code == 2 and "3 draft variants, not 4" in err and "Fix:" in err
    code, _, err = run_cli(capsys, "pick", "spring", "hero_1:two")
    assert code == 2 and "not a variant number" in err
    code, _, err = run_cli(capsys, "pick", "spring", "--reject", "hero_1:2")
    assert code == 2 and "whole prompt" in err
    assert decisions.current_decisions("spring") == {}

    assert run_cli(capsys, "pick", "spring", "hero_1:3")[0] == 0
    assert decisions.picks("spring") == {"hero_1": 3}
