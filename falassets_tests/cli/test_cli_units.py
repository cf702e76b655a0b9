"""The CLI's own logic without a render: partition ranges, staging campaign files, reading
progress from journals, tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from falassets.cli.errors import UserError
from falassets.cli.progress import JournalTail
from falassets.cli.run import stage
from falassets.cli.table import format_table
from falassets.pipeline.launch import LaunchError, contiguous_runs

ORDER = ["a-1", "a-2", "b-1", "a-3", "a-4", "a-5", "b-2", "a-6"]


def test_contiguous_runs_follow_the_partition_order() -> None:
    assert contiguous_runs(ORDER, ["a-4", "a-1", "a-2", "a-5"]) == [["a-1", "a-2"], ["a-4", "a-5"]]


def test_a_gap_is_bridged_only_when_every_key_in_it_is_up_to_date() -> None:
    # a-2 is up to date: one run a-1..a-3 would not render anything nobody asked for...
    assert contiguous_runs(["a-1", "a-2", "a-3"], ["a-1", "a-3"], {"a-2"}) == [
        ["a-1", "a-2", "a-3"]
    ]
    # ...but another campaign's key (b-1) in the gap is never pulled into the run.
    assert contiguous_runs(ORDER, ["a-2", "a-3"], {"a-1"}) == [["a-2"], ["a-3"]]


def test_unregistered_keys_are_refused_by_name() -> None:
    with pytest.raises(LaunchError, match="a-9"):
        contiguous_runs(ORDER, ["a-1", "a-9"])


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_stage_copies_a_file_into_the_campaigns_folder_and_updates_it_from_the_same_path(
    data_dir,
) -> None:
    source = write(data_dir / "mine" / "spring.csv", "id,prompt\na,one\n")
    staged = stage(source, "spring", replace=False)
    assert staged == data_dir / "campaigns" / "spring.csv"
    assert staged.read_text() == "id,prompt\na,one\n"

    write(source, "id,prompt\na,one edited\n")  # the same file, edited: its new version
    assert stage(source, "spring", replace=False).read_text() == "id,prompt\na,one edited\n"


def test_stage_refuses_a_different_file_of_the_same_name_unless_replace(data_dir) -> None:
    write(data_dir / "mine" / "spring.csv", "id,prompt\na,one\n")
    stage(data_dir / "mine" / "spring.csv", "spring", replace=False)
    other = write(data_dir / "theirs" / "spring.csv", "id,prompt\nb,two\n")

    with pytest.raises(UserError, match="--replace"):
        stage(other, "spring", replace=False)
    assert (data_dir / "campaigns" / "spring.csv").read_text() == "id,prompt\na,one\n"

    stage(other, "spring", replace=True)
    assert (data_dir / "campaigns" / "spring.csv").read_text() == "id,prompt\nb,two\n"


def test_stage_refuses_two_files_for_one_campaign(data_dir) -> None:
    write(data_dir / "campaigns" / "spring.jsonl", '{"id": "a", "prompt": "one"}\n')
    source = write(data_dir / "campaigns" / "spring.csv", "id,prompt\na,one\n")
    with pytest.raises(UserError, match=r"spring\.jsonl"):
        stage(source, "spring", replace=False)


def test_journal_tail_reads_only_new_complete_lines(tmp_path) -> None:
    journal = tmp_path / "requests-host-1.jsonl"
    journal.write_text(json.dumps({"request_id": "old"}) + "\n")
    tail = JournalTail(tmp_path)  # starts at the current end: history is not this run's
    assert tail.read() == []

    with journal.open("a") as handle:
        handle.write(json.dumps({"request_id": "r1"}) + "\n" + '{"request_id": "r2"')
    assert [row["request_id"] for row in tail.read()] == ["r1"]  # r2 is still being written

    with journal.open("a") as handle:
        handle.write("}\n")
    write(tmp_path / "requests-host-2.jsonl", json.dumps({"request_id": "r3"}) + "\n")
    assert [row["request_id"] for row in tail.read()] == ["r2", "r3"]
    assert tail.read() == []


def test_format_table_aligns_and_shortens() -> None:
    text = format_table(["name", "n"], [["spring", 3], ["x" * 80, 12]])
    lines = text.splitlines()
    assert lines[0].split() == ["name", "n"]
    assert lines[2].endswith(" 3") and lines[3].endswith("12")
    assert "…" in lines[3] and len(lines[3]) < 80
