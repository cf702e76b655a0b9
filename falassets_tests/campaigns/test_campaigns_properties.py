"""Property tests: whatever a user (or a broken exporter) puts in a campaign file, loading
either gives valid, unique partition keys and text every store can hold (the table, the
lineage's UTF-8 JSON), or a CampaignError whose message is itself printable; never another
exception."""

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

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, assume, example, given, settings
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
    render_input,
    split_partition_key,
    write_table,
)
from falassets.engine import model
from falassets.engine.jobs import TEXT_TO_IMAGE, canonical_json, job_key

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


def assert_storable(campaign: Campaign) -> None:
    """Valid keys, and every string is text the table, the lineage and fal's input can hold."""
    assert_valid_keys(campaign)
    for row in campaign.rows:
        job_key(TEXT_TO_IMAGE, render_input(row, "low"))  # encodes the input as UTF-8
        canonical_json(row.tags).encode("utf-8")
    with scratch() as directory:
        assert read_table(campaign.name, write_table(campaign, directory).parent) == campaign


def assert_clean_error(error: CampaignError, path: Path) -> None:
    message = str(error)
    message.encode("utf-8")  # printable on stderr, in Dagster, in the launch result file
    assert error.problems and message.startswith(str(path)) and ". Fix: " in message


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
                assert_clean_error(error, path)
                continue
            assert_storable(campaign)
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
@example(data=b'{"id": "a", "prompt": "x", "tag\\udfff": "v\\ud83d"}', suffix=".jsonl")
@example(data=b'{"id": "a", "prompt": "hello \\ud800 world"}', suffix=".jsonl")
@example(data=b'{"id": "a", "prompt": "x", "t": NaN}\n\xef\xbb\xbf{"id": "b"}', suffix=".jsonl")
@example(data=b"\xef\xbb\xbf\xef\xbb\xbfid,prompt,\xef\xbb\xbft\na,x\x1b,\xc2\x93\n", suffix=".csv")
def test_arbitrary_bytes_load_or_raise_campaign_error(data: bytes, suffix: str) -> None:
    with scratch() as directory:
        path = directory / f"fuzz{suffix}"
        path.write_bytes(data)
        try:
            campaign = load_campaign(path)
        except CampaignError as error:
            assert_clean_error(error, path)
        else:
            assert_storable(campaign)
        assert [p.name for p in directory.iterdir()] == [path.name]
        assert path.read_bytes() == data


# Any text JSON can carry: lone surrogates, NUL and other controls, BOMs, direction marks.
any_text = st.text(
    st.characters(exclude_categories=())
    | st.sampled_from(list("\x00\x07\x1b\x7f\x85\x93\ufeff\u200b\u202e\ud800\udfff\n\t ")),
    max_size=30,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=6,
)
json_keys = st.sampled_from(["id", "prompt", "ID", " prompt", "image_size", "output_format"])


def json_line(prompt_id: object, prompt: object, extra: list[tuple[str, object]]) -> str:
    """One object, written pair by pair so a key may repeat; NaN and Infinity as Python's json
    writes them (not JSON, but what pandas and others emit)."""
    pairs = [("id", prompt_id), ("prompt", prompt), *extra]
    return "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}\n"


@SETTINGS
@given(
    rows=st.lists(
        st.tuples(
            valid_ids | any_text,
            st.text(min_size=1, max_size=20) | any_text | json_values,
            st.lists(st.tuples(json_keys | any_text, json_values), max_size=4),
        ),
        min_size=1,
        max_size=5,
    )
)
@example(rows=[("a", "x", [("tag\udfff", "v\ud83d")])])
@example(rows=[("a", "hello \ud800 world", [])])
@example(rows=[("a", "x", [("t", float("nan")), ("u", 1e308 * 10), ("t\x00", "\ufeff")])])
@example(rows=[("a", "x", [("colour", "red"), (" colour", "blue")])])
def test_any_text_json_can_carry_loads_storable_or_raises_campaign_error(rows: list) -> None:
    with scratch() as directory:
        path = directory / "text.jsonl"
        path.write_text("".join(json_line(*row) for row in rows), encoding="ascii")
        try:
            campaign = load_campaign(path)
        except CampaignError as error:
            assert_clean_error(error, path)
        else:
            assert_storable(campaign)


parquet_columns = st.one_of(
    st.lists(st.none() | any_text, min_size=3, max_size=3),
    st.lists(st.none() | st.floats(), min_size=3, max_size=3),
    st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), min_size=3, max_size=3),
    st.lists(st.none() | st.binary(max_size=8), min_size=3, max_size=3),
    st.lists(st.none() | st.lists(st.integers(0, 9), max_size=3), min_size=3, max_size=3),
)


@FEWER
@given(
    columns=st.dictionaries(json_keys | any_text, parquet_columns, min_size=1, max_size=5).map(
        lambda c: {"id": ["a", "b", "c"], **c}
    )
)
@example(columns={"id": ["a", "b", "c"], "prompt": ["x", "y", "z"], "s": [float("nan"), 1.0, None]})
@example(columns={"id": ["a", "b", "c"], "prompt": [b"x", b"\xff", b"z"]})
@example(columns={"id": ["a", "b", "c"], "prompt": ["x", "y", "z"], "t\x00": [None, None, None]})
def test_any_parquet_columns_load_storable_or_raise_campaign_error(columns: dict) -> None:
    with scratch() as directory:
        path = directory / "columns.parquet"
        try:  # what pyarrow cannot write (lone surrogates) never reaches a Parquet file
            pq.write_table(pa.table(columns), path)
        except (pa.ArrowException, UnicodeError, OverflowError):
            assume(False)
        try:
            campaign = load_campaign(path)
        except CampaignError as error:
            assert_clean_error(error, path)
        else:
            assert_storable(campaign)


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
