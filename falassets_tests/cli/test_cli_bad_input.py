"""Bad input to `falassets run` and `falassets pick`: exit 2, one clear line naming the file,
the row and the fix; nothing sent to fal (the emulator's ledger stays empty) and nothing
already on disk changed (renders, journals, the campaign file of the same name)."""

from __future__ import annotations

from pathlib import Path

import pytest

from falassets_tests.cli.test_cli_support import run_cli, snapshot, use_dagster_home, write_csv

GOOD = "id,prompt,image_size\nhero_1,a red bicycle,landscape_4_3\nhero_2,a blue mug,square_hd\n"

# name -> (file name, content, words the message must contain)
BAD_FILES: dict[str, tuple[str, bytes, list[str]]] = {
    "missing columns": ("spring.csv", b"name,text\nhero_1,a red bicycle\n", ["'id'", "prompt"]),
    "empty prompt": ("spring.csv", b"id,prompt\nhero_1,a red bicycle\nhero_2,\n", ["row 3"]),
    "duplicate ids": ("spring.csv", b"id,prompt\nhero_1,a\nhero_1,b\n", ["row 3", "hero_1"]),
    "id not a key": ("spring.csv", b"id,prompt\nhero_1,a\nhero 2/x,b\n", ["row 3", "id"]),
    "unknown size": (
        "spring.csv",
        b"id,prompt,image_size\nhero_1,a,landscape_4_3\nhero_2,b,poster_a3\n",
        ["row 3", "image_size", "poster_a3"],
    ),
    "prompt too long": (
        "spring.csv",
        b"id,prompt\nhero_1," + b"x" * 32_001 + b"\n",
        ["row 2", "32,000"],
    ),
    "unreadable parquet": ("spring.parquet", b"this is not parquet at all\n" * 10, []),
    "not utf-8": ("spring.csv", b"id,prompt\nhero_1,caf\xe9 \xff\xfe\n", []),
}


@pytest.fixture
def home(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_dagster_home(data_dir, monkeypatch)


@pytest.fixture
def existing_state(data_dir: Path) -> Path:
    """A campaign already rendered: its file, a render and a journal that must survive."""
    write_bytes(data_dir / "campaigns" / "spring.csv", GOOD.encode())
    write_bytes(data_dir / "renders" / "spring" / "draft" / "hero_1-abc.png", b"\x89PNG fake")
    write_bytes(data_dir / "lineage" / "requests-host-1-x.jsonl", b'{"request_id":"r1"}\n')
    return data_dir


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def lower(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_campaign_file_exits_2_names_file_row_fix_and_changes_nothing(
    case, sim, existing_state, home, capsys
) -> None:
    name, content, words = BAD_FILES[case]
    bad = existing_state / "incoming" / name
    write_bytes(bad, content)
    before = snapshot(existing_state)

    code, out, err = run_cli(capsys, "run", str(bad))

    assert code == 2, (out, err)
    assert str(bad) in err
    assert "Fix:" in err
    for word in words:
        assert lower(word) in lower(err), (word, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert sim.ledger()["totals"]["accepted"] == 0
    assert snapshot(existing_state) == before
    assert not home.exists()  # no Dagster run was even started


def test_missing_file_exits_2(sim, data_dir, home, capsys) -> None:
    code, _, err = run_cli(capsys, "run", str(data_dir / "nope.csv"))
    assert code == 2
    assert "nope.csv" in err and "Fix:" in err
    assert sim.ledger()["totals"]["accepted"] == 0


def test_different_campaign_with_the_same_name_is_refused_without_replace(
    sim, existing_state, home, capsys
) -> None:
    other = write_csv(existing_state / "elsewhere" / "spring.csv", {"other_1": "a green lamp"})
    before = snapshot(existing_state / "campaigns")

    code, _, err = run_cli(capsys, "run", str(other))

    assert code == 2
    assert "--replace" in err and "spring" in err
    assert snapshot(existing_state / "campaigns") == before
    assert sim.ledger()["totals"]["accepted"] == 0


def test_pick_unknown_campaign_exits_2_and_records_nothing(sim, existing_state, capsys) -> None:
    journals = snapshot(existing_state / "lineage")
    code, _, err = run_cli(capsys, "pick", "autumn", "hero_1")
    assert code == 2
    assert "unknown campaign 'autumn'" in err
    assert "spring" in err  # the campaigns that do exist
    assert "Fix:" in err
    assert snapshot(existing_state / "lineage") == journals


def test_pick_unknown_prompt_id_exits_2_names_it_and_says_how_to_list_ids(
    sim, existing_state, capsys
) -> None:
    journals = snapshot(existing_state / "lineage")
    code, _, err = run_cli(capsys, "pick", "spring", "hero_1", "hero_9")
    assert code == 2
    assert "hero_9" in err and "hero_1," not in err.split("Fix:")[0]
    assert "falassets lineage" in err and "Nothing was recorded" in err
    assert snapshot(existing_state / "lineage") == journals


def test_bad_options_exit_2_without_traceback(sim, existing_state, home, capsys) -> None:
    campaign = str(existing_state / "campaigns" / "spring.csv")
    for argv in (
        ["run", campaign, "--mode", "refine"],  # --mode without --pass final
        ["run", campaign, "--concurrency", "0"],
        ["run", campaign, "--pass", "sketch"],
        ["run", campaign, "--only", "hero_7"],
    ):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, argv
        assert "Traceback" not in err
    assert sim.ledger()["totals"]["accepted"] == 0


# A lone surrogate escape is valid JSON but not text: it cannot be written as UTF-8 anywhere
# (table, lineage, Dagster), so it must be refused with the file before anything happens.
LONE_SURROGATES: dict[str, tuple[bytes, list[str]]] = {
    "in a tag": (
        b'{"id": "a", "prompt": "x", "tag\\udfff": "v\\ud83d"}\n',
        ["row 1", "surrogate", '"tag\\udfff"', '"v\\ud83d"'],
    ),
    "in a prompt": (
        b'{"id": "a", "prompt": "hello \\ud800 world"}\n',
        ["row 1", "column 'prompt'", "surrogate", "\\ud800"],
    ),
}


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("case", sorted(LONE_SURROGATES))
def test_a_lone_surrogate_exits_2_before_anything_is_copied_registered_or_run(
    case, dry_run, sim, existing_state, home, capsys
) -> None:
    content, words = LONE_SURROGATES[case]
    bad = existing_state / "incoming" / "autumn.jsonl"
    write_bytes(bad, content)
    before = snapshot(existing_state)

    code, out, err = run_cli(capsys, "run", str(bad), *(["--dry-run"] if dry_run else []))

    assert code == 2, (out, err)
    err.encode("utf-8")  # the message itself is printable text
    assert f"{bad}, row 1" in err and "Fix:" in err
    for word in words:
        assert word in err, (word, err)
    assert "Traceback" not in err
    assert snapshot(existing_state) == before  # nothing copied into campaigns/, no state
    assert not home.exists()  # no Dagster run, so no failed run to pile up on a rerun
    assert sim.ledger()["totals"]["accepted"] == 0


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder outside the data directory."""
    return tmp_path_factory.mktemp("outside")


def test_a_symlinked_campaign_is_named_after_the_link_by_path_and_by_name(
    sim, data_dir, outside, home, capsys
) -> None:
    target = write_csv(outside / "export_2026_03_v2.csv", {"hero_1": "a red bicycle"})
    in_folder = data_dir / "campaigns" / "spring.csv"
    in_folder.parent.mkdir(parents=True)
    in_folder.symlink_to(target)
    elsewhere = outside / "autumn.csv"
    elsewhere.symlink_to(target)

    for argument, name in (
        (str(in_folder), "spring"),
        ("spring", "spring"),
        (str(elsewhere), "autumn"),
    ):
        code, out, err = run_cli(capsys, "run", argument, "--dry-run")
        assert code == 0, (argument, out, err)
        assert f"campaign '{name}'" in out, (argument, out)
    assert sim.ledger()["totals"]["accepted"] == 0


def test_an_error_in_a_file_reached_through_a_link_quotes_none_of_its_content(
    sim, data_dir, outside, home, capsys
) -> None:
    secret = outside / "passwd"
    secret.write_text("secretuser:x:0:0:hunter2:/home/secretuser:/bin/sh\nFAL_KEY=sk-live-123\n")
    link = data_dir / "campaigns" / "passwd.csv"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)

    for argument in (str(link), "passwd"):
        code, out, err = run_cli(capsys, "run", argument)
        assert code == 2, (argument, out, err)
        assert f"error: {link}, row 1:" in err, err  # the name typed, not the target's
        assert "'id'" in err and "'prompt'" in err and "Fix:" in err
        for content in ("secretuser", "hunter2", "sk-live"):
            assert content not in out + err, (content, err)
    assert not home.exists()
