"""The normalised Parquet table: atomic writes, faithful read-back, change detection."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from falassets.campaigns import (
    Campaign,
    CampaignError,
    PromptRow,
    changed_prompts,
    input_fingerprint,
    load_campaign,
    read_table,
    removed_prompts,
    write_table,
)
from falassets.review.csv_safety import SafeCsvWriter, SafeDictWriter, safe_cell, safe_row


def sample(name: str = "spring") -> Campaign:
    rows = (
        PromptRow("a", "A red bicycle", "landscape_4_3", "png", {"channel": "web"}, 2),
        PromptRow("b-2", "=not a formula", {"width": 1536, "height": 1024}, "jpeg", {}, 3),
        PromptRow("c_3", "Ünïcödé 🚲", "auto", "webp", {"k": "v", "x": "y"}, 4),
    )
    return Campaign(name, Path(f"/campaigns/{name}.csv"), rows)


def test_table_round_trips_and_has_the_documented_columns(tmp_path: Path) -> None:
    campaign = sample()
    path = write_table(campaign, tmp_path / "tables")
    assert path == tmp_path / "tables" / "spring.parquet"
    assert read_table("spring", tmp_path / "tables") == campaign
    table = pq.read_table(path)
    assert table.column_names == [
        "prompt_id",
        "partition_key",
        "prompt",
        "image_size",
        "output_format",
        "tags",
        "row_number",
        "input_fingerprint",
    ]
    assert table["partition_key"].to_pylist() == ["spring-a", "spring-b-2", "spring-c_3"]
    assert table["image_size"].to_pylist() == ["landscape_4_3", "1536x1024", "auto"]
    assert table["tags"].to_pylist()[0] == '{"channel":"web"}'
    # DuckDB and other readers can use the fingerprint without our code
    assert table["input_fingerprint"].to_pylist()[1] == input_fingerprint(campaign.rows[1])


def test_rewrite_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    write_table(sample(), tmp_path)
    smaller = replace(sample(), rows=sample().rows[:1])
    write_table(smaller, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spring.parquet"]
    assert read_table("spring", tmp_path) == smaller


def test_failed_write_keeps_the_old_table(tmp_path: Path) -> None:
    write_table(sample(), tmp_path)
    broken = replace(sample(), rows=(PromptRow("BAD ID", "x", "auto", "png"),))
    with pytest.raises(ValueError):
        write_table(broken, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spring.parquet"]
    assert read_table("spring", tmp_path) == sample()


def test_read_table_refuses_missing_bad_names_and_tampered_tables(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match="no table for the campaign 'spring'"):
        read_table("spring", tmp_path)
    with pytest.raises(ValueError):
        read_table("../etc", tmp_path)
    path = write_table(sample(), tmp_path)
    table = pq.read_table(path)
    prompts = table["prompt"].to_pylist()
    prompts[0] = "edited by hand"
    pq.write_table(table.set_column(2, "prompt", [prompts]), path)
    with pytest.raises(CampaignError, match="does not match its stored fingerprint"):
        read_table("spring", tmp_path)


def test_changed_prompts_finds_new_and_edited_rows_only(tmp_path: Path) -> None:
    old = sample()
    a, b, c = old.rows
    new = replace(
        old,
        rows=(
            replace(a, tags={"channel": "print"}, row_number=9),  # tags/position: not a render
            replace(b, image_size={"width": 1024, "height": 1536}),
            c,
            PromptRow("d", "new", "auto", "png"),
        ),
    )
    assert changed_prompts(None, new) == ["a", "b-2", "c_3", "d"]
    assert changed_prompts(old, old) == []
    assert changed_prompts(old, new) == ["b-2", "d"]
    assert changed_prompts(old, replace(old, rows=(replace(c, output_format="png"),))) == ["c_3"]
    assert removed_prompts(old, replace(old, rows=(c,))) == ["a", "b-2"]


def test_editing_one_prompt_in_the_file_changes_only_that_prompt(tmp_path: Path) -> None:
    path = tmp_path / "edit.csv"
    path.write_text("id,prompt,tag\na,one,x\nb,two,y\nc,three,z\n", encoding="utf-8")
    tables = tmp_path / "tables"
    write_table(load_campaign(path), tables)
    path.write_text("id,prompt,tag\na,one,CHANGED\nb,two edited,y\nc,three,z\n", encoding="utf-8")
    assert changed_prompts(read_table("edit", tables), load_campaign(path)) == ["b"]


# -------------------------------------------------------------------------------------------
# csv_safety: what any CSV export of ours must do


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1+2", "@SUM(A1)", "\tx", "\rx", "=HYPERLINK()"])
def test_formula_triggers_get_an_apostrophe(text: str) -> None:
    assert safe_cell(text) == "'" + text


@pytest.mark.parametrize("value", ["plain", "a=b", " =x", "", "'quoted", "1-2"])
def test_ordinary_text_is_unchanged(value: str) -> None:
    assert safe_cell(value) == value


def test_numbers_stay_numbers_and_none_is_empty() -> None:
    assert safe_row([-5, 1.5, True, None]) == [-5, 1.5, True, ""]


def test_safe_writers_neutralise_every_cell_including_headers() -> None:
    buffer = io.StringIO()
    writer = SafeCsvWriter(buffer)
    writer.writerow(["=id", "prompt"])
    writer.writerows([["a", "=cmd|' /C calc'!A0"], ["b", -3]])
    dict_buffer = io.StringIO()
    dict_writer = SafeDictWriter(dict_buffer, ["id", "prompt"])
    dict_writer.writeheader()
    dict_writer.writerow({"id": "@x"})
    with pytest.raises(ValueError, match="not in fieldnames"):
        dict_writer.writerow({"other": 1})
    assert list(csv.reader(io.StringIO(buffer.getvalue()))) == [
        ["'=id", "prompt"],
        ["a", "'=cmd|' /C calc'!A0"],
        ["b", "-3"],
    ]
    assert list(csv.reader(io.StringIO(dict_buffer.getvalue()))) == [["id", "prompt"], ["'@x", ""]]


def test_interrupted_replace_removes_its_temp_file(tmp_path: Path) -> None:
    (tmp_path / "spring.parquet").mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(OSError):
        write_table(sample(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spring.parquet"]
