"""Every string a campaign file holds (ids, prompts, tag names and values; CSV, JSONL and
Parquet) is text that UTF-8, the table, the lineage and Dagster can store: anything else is
refused with the file, row, column and fix, and a message that is itself printable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from falassets.campaigns import CampaignError, load_campaign, write_table
from falassets.engine.jobs import canonical_json


def parquet(table: pa.Table) -> Callable[[Path], None]:
    return lambda path: pq.write_table(table, path)


# (name, file name, content, (row, column) of the headline, fragments of the message)
REFUSED: list[tuple[str, str, bytes | Callable[[Path], None], tuple, tuple[str, ...]]] = [
    (
        "lone surrogate in a prompt",
        "c.jsonl",
        b'{"id": "a", "prompt": "hello \\ud800 world"}\n',
        (1, "prompt"),
        ("lone surrogate \\ud800", "at character 7", "write the whole pair"),
    ),
    (
        "lone surrogates in a tag name and value",
        "c.jsonl",
        b'{"id": "a", "prompt": "x", "tag\\udfff": "v\\ud83d"}\n',
        (1, None),
        ('field name "tag\\udfff"', "\\udfff", "column 'tag\\udfff'", '"v\\ud83d"'),
    ),
    (
        "lone surrogate inside a nested tag value",
        "c.jsonl",
        b'{"id": "a", "prompt": "x", "meta": {"k": ["\\udc00"]}}\n',
        (1, "meta"),
        ("lone surrogate \\udc00",),
    ),
    (
        "lone surrogate in an id",
        "c.jsonl",
        b'{"id": "hero\\ud83d", "prompt": "x"}\n',
        (1, "id"),
        ('"hero\\ud83d" contains "\\ud83d"', "e.g. 'hero'"),
    ),
    (
        "NUL escape in a tag value",
        "c.jsonl",
        b'{"id": "a", "prompt": "x", "t": "a\\u0000b"}\n',
        (1, "t"),
        ("NUL character at character 2", "UTF-16 or binary"),
    ),
    (
        "line break in a field name",
        "c.jsonl",
        b'{"id": "a", "prompt": "x", "colour\\nname": "red"}\n',
        (1, None),
        ('field name "colour\\nname" contains a line break', "one line of visible text"),
    ),
    (
        "escape character in a prompt",
        "c.csv",
        b"id,prompt\na,red \x1b[2Jbike\n",
        (2, "prompt"),
        ("escape character (ESC) at character 5", "rewrite a terminal"),
    ),
    (
        "C1 control in a tag value (mojibake)",
        "c.csv",
        "id,prompt,note\na,x,\u0093quoted\u0094\n".encode(),
        (2, "note"),
        ("U+0093", "Windows-1252", "re-export the file as UTF-8"),
    ),
    (
        "byte order mark in a column name",
        "c.csv",
        "id,prompt,\ufeffcolour\na,x,red\n".encode(),
        (1, None),
        ('column name "\\ufeffcolour" contains a byte order mark', "joined"),
    ),
    (
        "byte order mark starting a later JSONL line (files joined)",
        "c.jsonl",
        b'{"id": "a", "prompt": "x"}\n\xef\xbb\xbf{"id": "b", "prompt": "y"}\n',
        (2, None),
        ("line 2 starts with a byte order mark", "joined"),
    ),
    (
        "NaN in JSONL",
        "c.jsonl",
        b'{"id": "a", "prompt": "x", "score": NaN}\n',
        (1, None),
        ("NaN is not a JSON value", "write null"),
    ),
    (
        "Infinity in JSONL",
        "c.jsonl",
        b'{"id": "a", "prompt": "x", "score": -Infinity}\n',
        (1, None),
        ("-Infinity is not a JSON value",),
    ),
    (
        "number overflowing to infinity",
        "c.jsonl",
        b'{"id": "a", "prompt": "x", "score": 1e400}\n',
        (1, "score"),
        ("the value inf is not a finite number",),
    ),
    (
        "duplicate key in one object",
        "c.jsonl",
        b'{"id": "a", "prompt": "x", "prompt": "y"}\n',
        (1, None),
        ('the key "prompt" appears twice in one object', "keep one of them"),
    ),
    (
        "keys differing only in surrounding spaces",
        "c.jsonl",
        b'{"id": "a", "prompt": "x", "colour": "red", " colour": "blue"}\n',
        (1, None),
        ('the field "colour" appears twice', "keep one of them"),
    ),
    (
        "parquet: binary tag that is not UTF-8",
        "c.parquet",
        parquet(pa.table({"id": ["a"], "prompt": ["x"], "blob": pa.array([b"\xff\xfe"])})),
        (1, "blob"),
        ("binary data that is not UTF-8 text", "string column"),
    ),
    (
        "parquet: NUL in a column name",
        "c.parquet",
        parquet(pa.table({"id": ["a"], "prompt": ["x"], "t\x00": ["v"]})),
        (None, None),
        ('column name "t\\u0000" contains a NUL character',),
    ),
    (
        "parquet: infinity in a tag",
        "c.parquet",
        parquet(pa.table({"id": ["a"], "prompt": ["x"], "score": [float("inf")]})),
        (1, "score"),
        ("not a finite number",),
    ),
    (
        "parquet: control character in a prompt",
        "c.parquet",
        parquet(pa.table({"id": ["a"], "prompt": ["x\x07"]})),
        (1, "prompt"),
        ("control character U+0007",),
    ),
]


@pytest.mark.parametrize(
    ("file_name", "content", "where", "fragments"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_text_no_store_can_hold_is_refused_with_row_column_and_fix(
    tmp_path: Path,
    file_name: str,
    content: bytes | Callable[[Path], None],
    where: tuple,
    fragments: tuple[str, ...],
) -> None:
    path = tmp_path / file_name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        content(path)
    with pytest.raises(CampaignError) as caught:
        load_campaign(path)
    message = str(caught.value)
    message.encode("utf-8")  # printable anywhere: stderr, Dagster, the launch result file
    assert message.startswith(str(path)) and ". Fix: " in message.splitlines()[0]
    assert (caught.value.row, caught.value.column) == where, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_text_that_is_fine_loads_and_stores(tmp_path: Path) -> None:
    """Tabs and line breaks in prompts, emoji (a real surrogate pair in JSON), right-to-left
    text, a doubled BOM, UTF-8 text in a binary Parquet column, and NaN as an empty cell."""
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(
        b'{"id": "a", "prompt": "line one\\n\\tline two \\ud83d\\udeb2", '
        b'"lang": "\\u05e9\\u05dc"}\n'
    )
    csv_file = tmp_path / "b.csv"
    csv_file.write_bytes(b"\xef\xbb\xbf\xef\xbb\xbfid,prompt\na,x\n")
    pq_file = tmp_path / "c.parquet"
    pq.write_table(
        pa.table(
            {
                "id": pa.array([b"a", b"b"], pa.binary()),
                "prompt": pa.array(["caf\u00e9".encode(), b"y"], pa.binary()),
                "score": [float("nan"), 1.5],
            }
        ),
        pq_file,
    )
    a, b, c = (load_campaign(path) for path in (jsonl, csv_file, pq_file))
    assert a.rows[0].prompt == "line one\n\tline two \U0001f6b2"
    assert a.rows[0].tags == {"lang": "\u05e9\u05dc"}
    assert [row.prompt_id for row in b.rows] == ["a"]
    assert [(row.prompt, row.tags) for row in c.rows] == [
        ("caf\u00e9", {}),
        ("y", {"score": "1.5"}),
    ]
    for campaign in (a, b, c):
        write_table(campaign, tmp_path / "tables")
        canonical_json([row.tags for row in campaign.rows]).encode("utf-8")


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("outside")


@pytest.fixture
def campaigns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FALASSETS_DATA_DIR", str(tmp_path))
    folder = tmp_path / "campaigns"
    folder.mkdir()
    return folder


def test_a_link_to_outside_the_data_directory_locates_problems_but_quotes_nothing(
    campaigns: Path, outside: Path
) -> None:
    secret = outside / "passwd"
    secret.write_text("secretuser:x:0:0:hunter2:/home/secretuser:/bin/sh\n")
    rows = outside / "rows.csv"
    rows.write_text("id,prompt,image_size\nsecret id,x,\nb,y,hunter2_size\n")
    for target, row in ((secret, 1), (rows, 2)):
        link = campaigns / f"{target.stem}.csv"
        link.symlink_to(target)
        with pytest.raises(CampaignError) as caught:
            load_campaign(link)
        message = str(caught.value)
        assert message.startswith(f"{link}, row {row}"), message
        assert f"a link to {target}, outside the data directory" in message
        for content in ("secret", "hunter2"):
            assert content not in message.replace(str(outside), ""), message


def test_a_link_inside_the_data_directory_is_quoted_and_named_after_the_link(
    campaigns: Path,
) -> None:
    target = campaigns.parent / "exports" / "export_v7.csv"
    target.parent.mkdir()
    target.write_text("name,text\na,b\n")
    link = campaigns / "spring.csv"
    link.symlink_to(target)
    with pytest.raises(CampaignError) as caught:
        load_campaign(link)
    assert 'the header has: "name", "text"' in str(caught.value)
    target.write_text("id,prompt\na,b\n")
    assert load_campaign(link).name == "spring"
