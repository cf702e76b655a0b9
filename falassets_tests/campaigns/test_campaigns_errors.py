"""Every kind of bad campaign file gives one CampaignError naming the file, the row and the fix,
and loading it leaves the directory exactly as it was."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from falassets.campaigns import MAX_LISTED_PROBLEMS, MAX_PROMPT_CHARS, CampaignError, load_campaign


def snapshot(directory: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``directory`` with its size, mtime and content hash."""
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path.relative_to(directory))] = (stat.st_size, stat.st_mtime_ns, digest)
    return found


def load_error(path: Path) -> CampaignError:
    """Load ``path``, expecting a CampaignError, and check nothing on disk changed."""
    before = snapshot(path.parent)
    with pytest.raises(CampaignError) as caught:
        load_campaign(path)
    assert snapshot(path.parent) == before
    return caught.value


def parquet_bytes(table: pa.Table) -> Callable[[Path], None]:
    return lambda path: pq.write_table(table, path)


CSV_HEADER = "id,prompt,image_size,output_format\n"

# (name, file name, content, row named in the headline or None, fragments of the message)
CASES: list[tuple[str, str, bytes | Callable[[Path], None], int | None, tuple[str, ...]]] = [
    (
        "missing prompt column",
        "c.csv",
        b"id,text\na,b\n",
        1,
        ("'prompt' is missing", '"id", "text"', "rename \"text\" to 'prompt'"),
    ),
    (
        "missing both columns",
        "c.csv",
        b"name,body\na,b\n",
        1,
        ("'id' and 'prompt' are missing", "rename \"name\" to 'id'"),
    ),
    ("semicolon separated", "c.csv", b"id;prompt\na;b\n", 1, ("semicolons", "comma-separated")),
    (
        "duplicate column",
        "c.csv",
        b"id,prompt,prompt\na,b,c\n",
        1,
        ("appears twice (columns 2 and 3)", "delete or rename"),
    ),
    ("empty file", "c.csv", b"", None, ("the file is empty", "header row 'id,prompt'")),
    ("header only", "c.csv", b"id,prompt\n", None, ("no prompts", "add one row per prompt")),
    ("blank file", "c.csv", b"\n\n ,\n", None, ("no header row", "header row")),
    (
        "empty prompt",
        "c.csv",
        CSV_HEADER.encode() + b"a,   ,,\n",
        2,
        ("column 'prompt'", "prompt is empty", "write the text"),
    ),
    ("empty id", "c.csv", CSV_HEADER.encode() + b",hello,,\n", 2, ("id is empty", "unique id")),
    (
        "duplicate ids differing in case",
        "c.csv",
        CSV_HEADER.encode() + b"Hero_1,a,,\nb,b,,\nhero_1,c,,\n",
        4,
        ('"hero_1" is already used on row 2 ("Hero_1")', "give row 4 or row 2 a different id"),
    ),
    (
        "id with a path",
        "c.csv",
        CSV_HEADER.encode() + b"../etc/passwd,a,,\n",
        2,
        ('"/"', "'/' and '..' are never allowed", "e.g. 'etc_passwd'"),
    ),
    (
        "id with dots",
        "c.csv",
        CSV_HEADER.encode() + b"..hidden,a,,\n",
        2,
        ("'/' and '..' are never allowed", "e.g. 'hidden'"),
    ),
    (
        "ndjson extension",
        "c.ndjson",
        b'{"id":"a","prompt":"x"}\n',
        None,
        ("rename it .jsonl",),
    ),
    (
        "id with a space",
        "c.csv",
        CSV_HEADER.encode() + b"hero 1,a,,\n",
        2,
        ('contains " "', "e.g. 'hero_1'"),
    ),
    ("id with a comma", "c.csv", CSV_HEADER.encode() + b'"a,b",x,,\n', 2, ('contains ","',)),
    (
        "id that collides after slugging",
        "c.csv",
        CSV_HEADER.encode() + b"a_b,x,,\na b,y,,\n",
        3,
        ("e.g. 'a_b_2'", "'a_b' is already taken"),
    ),
    (
        "id starting with underscore",
        "c.csv",
        CSV_HEADER.encode() + b"_a,x,,\n",
        2,
        ("starts with '_'",),
    ),
    (
        "id too long",
        "c.csv",
        CSV_HEADER.encode() + b"a" * 65 + b",x,,\n",
        2,
        ("65 characters long", "at most 64"),
    ),
    (
        "unicode id",
        "c.csv",
        CSV_HEADER.encode() + "héro,x,,\n".encode(),
        2,
        ('contains "é"', "e.g. 'hero'"),
    ),
    (
        "unknown preset",
        "c.csv",
        CSV_HEADER.encode() + b"a,x,sqare_hd,\n",
        2,
        ('unknown image size "sqare_hd"', "did you mean square_hd?", "landscape_16_9"),
    ),
    (
        "size fal refuses",
        "c.csv",
        CSV_HEADER.encode() + b"a,x,4800x1600,\n",
        2,
        ("fal refuses the image size 4800x1600", "longest edge", "e.g. "),
    ),
    (
        "size too small",
        "c.csv",
        CSV_HEADER.encode() + b"a,x,256x256,\n",
        2,
        ("655,360", "e.g. 816x816"),
    ),
    (
        "bad output format",
        "c.csv",
        CSV_HEADER.encode() + b"a,x,,jpg\n",
        2,
        ('unknown output format "jpg"', "write jpeg"),
    ),
    (
        "prompt over the limit",
        "c.csv",
        CSV_HEADER.encode() + b"a," + b"p" * (MAX_PROMPT_CHARS + 5) + b",,\n",
        2,
        ("32,005 characters", "at most 32,000", "shorten it by at least 5"),
    ),
    (
        "too many cells",
        "c.csv",
        b"id,prompt\na,red,blue\n",
        2,
        ("3 cells but the header has 2", "put quotes around cells that contain commas"),
    ),
    (
        "value under an unnamed column",
        "c.csv",
        b"id,prompt,\na,x,stray\n",
        2,
        ("column 3 has a value but no name",),
    ),
    (
        "unterminated quote",
        "c.csv",
        b'id,prompt\na,ok\nb,"never closed\nc,d\n',
        3,
        ("ends inside a quoted cell", "close the quote"),
    ),
    (
        "text after a quoted cell",
        "c.csv",
        b'id,prompt\na,"A" vintage bike\n',
        2,
        ("quoted cell is followed by more text", 'A ""vintage"" bicycle'),
    ),
    (
        "latin-1 bytes",
        "c.csv",
        b"id,prompt\na,caf\xe9\n",
        2,
        ("not valid UTF-8: line 2, byte offset 15 (byte 0xe9)", "save the file as UTF-8"),
    ),
    (
        "utf-16 file",
        "c.csv",
        "id,prompt\na,b\n".encode("utf-16"),
        1,
        ("UTF-16", "save it as UTF-8"),
    ),
    (
        "utf-16 without bom",
        "c.csv",
        "id,prompt\na,b\n".encode("utf-16-le"),
        1,
        ("NUL bytes", "UTF-16"),
    ),
    (
        "bad file name",
        "spring-2026.csv",
        b"id,prompt\na,b\n",
        None,
        ("cannot be a campaign name", "rename it spring_2026.csv"),
    ),
    (
        "jsonl: not json",
        "c.jsonl",
        b'{"id":"a","prompt":"x"}\n{"id": "b",\n',
        2,
        ("line 2 is not valid JSON", "one JSON object per line"),
    ),
    ("jsonl: not an object", "c.jsonl", b'["a","x"]\n', 1, ("JSON list, not an object",)),
    (
        "jsonl: missing prompt",
        "c.jsonl",
        b'{"id":"a","text":"x"}\n',
        1,
        ("required field 'prompt' is missing", '"id", "text"', "rename \"text\" to 'prompt'"),
    ),
    (
        "jsonl: duplicate key",
        "c.jsonl",
        b'{"id":"a","prompt":"x","prompt":"y"}\n',
        1,
        ('"prompt" appears twice',),
    ),
    (
        "jsonl: prompt not text",
        "c.jsonl",
        b'{"id":"a","prompt":42}\n',
        1,
        ("is a int, not text", "write the prompt as a string"),
    ),
    (
        "jsonl: size object with extra keys",
        "c.jsonl",
        b'{"id":"a","prompt":"x","image_size":{"width":1024,"height":1024,"dpi":2}}\n',
        1,
        ("exactly the keys width and height",),
    ),
    (
        "jsonl: float size",
        "c.jsonl",
        b'{"id":"a","prompt":"x","image_size":{"width":1024.0,"height":1024}}\n',
        1,
        ("must be integers",),
    ),
    (
        "jsonl: huge integer",
        "c.jsonl",
        b'{"id":"a","prompt":"x","n":' + b"9" * 5000 + b"}\n",
        1,
        ("cannot be read as JSON",),
    ),
    (
        "jsonl: deep nesting",
        "c.jsonl",
        b"[" * 100_000 + b"]" * 100_000 + b"\n",
        1,
        ("cannot be read as JSON",),
    ),
    ("jsonl: empty", "c.jsonl", b"", None, ("the file is empty",)),
    ("jsonl: only blank lines", "c.jsonl", b"\n \n", None, ("no prompts",)),
    (
        "parquet: not parquet",
        "c.parquet",
        b"id,prompt\na,b\n",
        None,
        ("not a readable Parquet file",),
    ),
    (
        "parquet: missing column",
        "c.parquet",
        parquet_bytes(pa.table({"id": ["a"]})),
        None,
        ("'prompt' is missing", '"id"'),
    ),
    (
        "parquet: empty prompt",
        "c.parquet",
        parquet_bytes(pa.table({"id": ["a", "b"], "prompt": ["x", None]})),
        2,
        ("prompt is empty",),
    ),
    (
        "parquet: float ids",
        "c.parquet",
        parquet_bytes(pa.table({"id": [1.5], "prompt": ["x"]})),
        1,
        ("is a float, not text",),
    ),
    (
        "unsupported extension",
        "c.xlsx",
        b"PK\x03\x04",
        None,
        ('unsupported file type ".xlsx"', "CSV UTF-8"),
    ),
    ("json instead of jsonl", "c.json", b"[]", None, ("name it .jsonl",)),
]


@pytest.mark.parametrize(
    ("file_name", "content", "row", "fragments"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_names_file_row_and_fix(
    tmp_path: Path,
    file_name: str,
    content: bytes | Callable[[Path], None],
    row: int | None,
    fragments: tuple[str, ...],
) -> None:
    path = tmp_path / file_name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        content(path)
    error = load_error(path)
    message = str(error)
    headline = message.splitlines()[0]
    assert headline.startswith(f"{path}"), headline
    assert ". Fix: " in headline
    assert error.row == row
    if row is not None:
        assert f", row {row}" in headline
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_missing_file_suggests_a_sibling(tmp_path: Path) -> None:
    (tmp_path / "spring.csv").write_text("id,prompt\na,b\n")
    error = load_error(tmp_path / "sprng.csv")
    assert str(error).startswith(f"{tmp_path / 'sprng.csv'}: the file does not exist")
    assert f"did you mean {tmp_path / 'spring.csv'}?" in str(error)


def test_directory_is_not_a_campaign(tmp_path: Path) -> None:
    (tmp_path / "dir.csv").mkdir()
    assert "not a regular file" in str(load_error(tmp_path / "dir.csv"))


def test_every_problem_in_the_file_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "Bad-Name.csv"
    path.write_text(CSV_HEADER + "a,,,\nb,x,huge,\nA,y,,gif\nc d,z,,\ne,ok,,\n", encoding="utf-8")
    error = load_error(path)
    where = [(p.row, p.column) for p in error.problems]
    assert where == [
        (None, None),  # the file name comes first: it is the file-level problem
        (2, "prompt"),
        (3, "image_size"),
        (4, "id"),  # duplicate of row 2 ('a')
        (4, "output_format"),
        (5, "id"),
    ]
    lines = str(error).splitlines()
    assert "(5 more problems below)" in lines[0]
    assert len(lines) == 6
    assert all(". Fix: " in line for line in lines)


def test_many_problems_are_capped_in_the_message_but_all_kept(tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    path.write_text("id,prompt\n" + "".join(f"r{i},\n" for i in range(50)), encoding="utf-8")
    error = load_error(path)
    assert len(error.problems) == 50
    lines = str(error).splitlines()
    assert len(lines) == MAX_LISTED_PROBLEMS + 1
    assert lines[-1] == "  ... and 30 more; fix these and load the file again"


def test_a_huge_line_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as handle:
        handle.write(b'{"id":"a","prompt":"')
        chunk = b"x" * (1024 * 1024)
        for _ in range(6):
            handle.write(chunk)
        handle.write(b'"}\n')
    message = str(load_error(path))
    assert "row 1: line 1 is longer than 4 MiB" in message


def test_a_huge_csv_cell_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    path.write_bytes(b'id,prompt\na,"' + b"word\n" * 40_000 + b'"\n')
    message = str(load_error(path))
    assert "row 2" in message and "longer than" in message and "at most 32,000" in message


def test_unreadable_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = tmp_path / "c.csv"
    path.write_text("id,prompt\na,b\n")
    path.chmod(0)
    assert "permission denied" in str(load_error(path))


def test_error_messages_quote_hostile_values_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"id": "a\nb\rc", "prompt": "x"}) + "\n")
    message = str(load_error(path))
    assert message.count("\n") == 0
    assert '"a\\nb\\rc"' in message
