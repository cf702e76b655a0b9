"""Property tests: whatever a user (or a broken exporter) puts in a campaign file, loading
either gives valid, unique partition keys or a CampaignError, never another exception."""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from falassets.campaigns import (
    MAX_KEY_CHARS,
    Campaign,
    CampaignError,
    PromptRow,
    changed_prompts,
    load_campaign,
    partition_key,
    read_table,
    split_partition_key,
    write_table,
)
from falassets.fal import model

KEY_RE = re.compile(r"[a-z0-9_-]+")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(SETTINGS, max_examples=50)  # each example writes a Parquet file

valid_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", fullmatch=True)
valid_names = st.from_regex(r"[a-z0-9][a-z0-9_]{0,40}", fullmatch=True)
prompts = st.text(min_size=1, max_size=200).filter(lambda s: s.strip() and "\x00" not in s)
sizes = st.sampled_from(["auto", *model.PRESET_SIZES]) | st.sampled_from(
    [
        {"width": 1536, "height": 1024},
        {"width": 1024, "height": 1536},
        {"width": 2048, "height": 2048},
    ]
)
tags = st.dictionaries(
    st.text(min_size=1, max_size=10).filter(
        lambda s: (
            s.strip() == s and s.lower() not in ("id", "prompt", "image_size", "output_format")
        )
    ),
    st.text(min_size=1, max_size=20).filter(lambda s: s.strip() == s),
    max_size=3,
)


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh directory per example (pytest's tmp_path is shared across hypothesis examples)."""
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


def assert_valid_keys(campaign: Campaign) -> None:
    keys = campaign.partition_keys()
    assert len(keys) == len(set(keys))
    for key in keys:
        assert KEY_RE.fullmatch(key) and len(key) <= MAX_KEY_CHARS
        assert split_partition_key(key)[0] == campaign.name


@SETTINGS
@given(name=valid_names, prompt_id=valid_ids)
def test_any_valid_id_round_trips_through_its_key(name: str, prompt_id: str) -> None:
    key = partition_key(name, prompt_id.lower())
    assert KEY_RE.fullmatch(key) and len(key) <= MAX_KEY_CHARS
    assert split_partition_key(key) == (name, prompt_id.lower())


@SETTINGS
@given(ids=st.lists(st.text(max_size=80), min_size=1, max_size=8))
@example(ids=["a b", "a_b"])
@example(ids=["../x", "x"])
@example(ids=["Hero", "hero"])
@example(ids=["a,b", "a;b", "a/b"])
def test_arbitrary_text_ids_load_with_unique_valid_keys_or_fail_cleanly(ids: list[str]) -> None:
    with scratch() as directory:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["id", "prompt"])
        writer.writerows([prompt_id, f"prompt {n}"] for n, prompt_id in enumerate(ids))
        csv_path = directory / "ids.csv"
        csv_path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
        jsonl_path = directory / "ids.jsonl"
        jsonl_path.write_text(
            "".join(json.dumps({"id": i, "prompt": f"p{n}"}) + "\n" for n, i in enumerate(ids)),
            encoding="utf-8",
        )
        for path in (csv_path, jsonl_path):
            try:
                campaign = load_campaign(path)
            except CampaignError as error:
                assert str(error).startswith(str(path))
                assert ". Fix: " in str(error)
                continue
            assert_valid_keys(campaign)
            assert len(campaign.rows) == len(ids)


# Text built from the characters that matter to the parsers reaches far deeper than raw bytes.
csvish = st.text(alphabet=list('id,prompt_sze"\n\r\t ;=-/.xX0123456789é🚲\x00{}[]:'), max_size=300)
headed = st.sampled_from(["", "id,prompt\n", "id,prompt,image_size,output_format,tag\n", '{"id":'])
fuzz_bytes = st.binary(max_size=600) | st.builds(
    lambda head, body: (head + body).encode("utf-8"), headed, csvish
)


@SETTINGS
@given(data=fuzz_bytes, suffix=st.sampled_from([".csv", ".jsonl"]))
@example(data=b"id,prompt\n\xff\xfe", suffix=".csv")
@example(data=b'id,prompt\na,"b', suffix=".csv")
@example(data=b"id,prompt\r\na,b\rc,d", suffix=".csv")
@example(data=b"[" * 5000, suffix=".jsonl")
@example(data=b'{"id":"a","prompt":"x","n":1e400}', suffix=".jsonl")
@example(data=b'{"id":"a","prompt":"x","image_size":{"width":true,"height":1}}', suffix=".jsonl")
def test_arbitrary_bytes_load_or_raise_campaign_error(data: bytes, suffix: str) -> None:
    with scratch() as directory:
        path = directory / f"fuzz{suffix}"
        path.write_bytes(data)
        try:
            campaign = load_campaign(path)
        except CampaignError as error:
            assert error.problems and str(error).startswith(str(path))
        else:
            assert_valid_keys(campaign)
        assert [p.name for p in directory.iterdir()] == [path.name]
        assert path.read_bytes() == data


rows_strategy = st.lists(
    st.tuples(valid_ids, prompts, sizes, st.sampled_from(model.OUTPUT_FORMATS), tags),
    min_size=1,
    max_size=12,
    unique_by=lambda row: row[0].lower(),
)


def make_campaign(name: str, rows: list[tuple]) -> Campaign:
    return Campaign(
        name,
        Path(f"{name}.csv"),
        tuple(
            PromptRow(i.lower(), p.strip(), s, f, t, n)
            for n, (i, p, s, f, t) in enumerate(rows, start=2)
        ),
    )


@FEWER
@given(name=valid_names, rows=rows_strategy)
def test_write_table_read_table_round_trip(name: str, rows: list[tuple]) -> None:
    campaign = make_campaign(name, rows)
    with scratch() as directory:
        write_table(campaign, directory)
        assert read_table(name, directory) == campaign


@FEWER
@given(rows=rows_strategy, data=st.data())
def test_changed_prompts_finds_exactly_the_edited_rows(rows: list[tuple], data: st.DataObject):
    old = make_campaign("c", rows)
    edited = data.draw(st.sets(st.sampled_from(range(len(rows)))), label="edited")
    retagged = data.draw(st.sets(st.sampled_from(range(len(rows)))), label="retagged")
    new_rows = []
    for n, row in enumerate(old.rows):
        if n in edited:
            field = data.draw(st.sampled_from(["prompt", "image_size", "output_format"]))
            if field == "prompt":
                row = replace(row, prompt=row.prompt + " (edited)")
            elif field == "image_size":
                other = "square" if row.image_size != "square" else "square_hd"
                row = replace(row, image_size=other)
            else:
                other = "png" if row.output_format != "png" else "webp"
                row = replace(row, output_format=other)
        if n in retagged:
            row = replace(row, tags={**row.tags, "retagged": "yes"})
        new_rows.append(row)
    added = PromptRow("zz_added_row", "brand new", "auto", "png")
    new = replace(old, rows=(*new_rows, added))
    expected = [row.prompt_id for n, row in enumerate(old.rows) if n in edited]
    assert changed_prompts(old, new) == [*expected, "zz_added_row"]
