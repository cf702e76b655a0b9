"""Valid campaign files in every format load into the same rows, with fal's defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from falassets.campaigns import (
    Campaign,
    CampaignError,
    PromptRow,
    campaign_name,
    load_campaign,
    partition_key,
    render_input,
    split_partition_key,
)
from falassets.engine import model

REPO = Path(__file__).resolve().parents[2]


def write_csv(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def test_example_campaign_loads_with_one_key_per_prompt() -> None:
    campaign = load_campaign(REPO / "data" / "campaigns" / "example.csv")
    assert campaign.name == "example"
    keys = campaign.partition_keys()
    assert len(keys) == len(set(keys)) == len(campaign.rows) > 0
    assert all(key.startswith("example-") for key in keys)
    for row in campaign.rows:
        assert model.validation_errors(render_input(row, "low")) == []


def test_csv_with_bom_crlf_and_quoted_multiline_prompt(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "spring.csv",
        "id,prompt,image_size,output_format,channel\r\n"
        ' Hero_1 ,"  A red bicycle,\r\nmorning light  ", square_hd , PNG ,web\r\n'
        "hero_2,A mug,,,\r\n",
        bom=True,
    )
    campaign = load_campaign(path)
    assert campaign.name == "spring"
    first, second = campaign.rows
    assert first.prompt_id == "hero_1"  # lowercased for keys, otherwise as written
    assert first.prompt == "A red bicycle,\r\nmorning light"  # trimmed, inner text kept
    assert (first.image_size, first.output_format) == ("square_hd", "png")
    assert first.tags == {"channel": "web"}
    assert first.row_number == 2
    # fal's defaults when a row leaves size and format empty; empty tags are dropped
    assert second.image_size == model.DEFAULT_SIZE == "landscape_4_3"
    assert second.output_format == "png"
    assert second.tags == {}
    assert second.row_number == 3
    assert campaign.partition_keys() == ["spring-hero_1", "spring-hero_2"]


def test_row_numbers_follow_spreadsheet_rows_with_blank_lines(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", "id,prompt\n\na,one\n,\nb,two\n")
    assert [row.row_number for row in load_campaign(path).rows] == [3, 5]


def test_custom_sizes_in_every_spelling(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "sizes.csv", "id,prompt,image_size\na,x,1536x1024\nb,x,1024 X 1536\nc,x,auto\n"
    )
    sizes = [row.image_size for row in load_campaign(path).rows]
    assert sizes == [{"width": 1536, "height": 1024}, {"width": 1024, "height": 1536}, "auto"]


def test_jsonl_with_blank_lines_objects_and_typed_tags(tmp_path: Path) -> None:
    lines = [
        {"id": "a", "prompt": "one", "image_size": {"width": 1536, "height": 1024}, "n": 3},
        None,
        {"ID": "B", "Prompt": "two", "image_size": "portrait_4_3", "ok": True, "x": None},
        {"id": 7, "prompt": "three", "output_format": "webp", "meta": {"k": [1, 2]}},
    ]
    path = tmp_path / "launch.jsonl"
    path.write_text(
        "\n".join("   " if obj is None else json.dumps(obj) for obj in lines) + "\n\n",
        encoding="utf-8",
    )
    campaign = load_campaign(path)
    assert [row.prompt_id for row in campaign.rows] == ["a", "b", "7"]
    assert [row.row_number for row in campaign.rows] == [1, 3, 4]  # JSONL line numbers
    assert campaign.rows[0].image_size == {"width": 1536, "height": 1024}
    assert campaign.rows[0].tags == {"n": "3"}
    assert campaign.rows[1].tags == {"ok": "true"}
    assert campaign.rows[2].tags == {"meta": '{"k": [1, 2]}'}
    assert campaign.rows[2].output_format == "webp"


def test_parquet_with_struct_sizes_int_ids_and_nulls(tmp_path: Path) -> None:
    size_type = pa.struct([("width", pa.int64()), ("height", pa.int64())])
    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "prompt": ["one", "two"],
            "image_size": pa.array([{"width": 1024, "height": 1536}, None], size_type),
            "region": ["eu", None],
        }
    )
    path = tmp_path / "pq.parquet"
    pq.write_table(table, path)
    campaign = load_campaign(path)
    assert [row.prompt_id for row in campaign.rows] == ["1", "2"]
    assert campaign.rows[0].image_size == {"width": 1024, "height": 1536}
    assert campaign.rows[1].image_size == model.DEFAULT_SIZE
    assert [row.tags for row in campaign.rows] == [{"region": "eu"}, {}]
    assert [row.row_number for row in campaign.rows] == [1, 2]


def test_three_formats_give_the_same_rows(tmp_path: Path) -> None:
    write_csv(tmp_path / "same.csv", "id,prompt,image_size,tag\na,hello,1536x1024,t\n")
    (tmp_path / "same.jsonl").write_text(
        json.dumps({"id": "a", "prompt": "hello", "image_size": "1536x1024", "tag": "t"}) + "\n"
    )
    pq.write_table(
        pa.table({"id": ["a"], "prompt": ["hello"], "image_size": ["1536x1024"], "tag": ["t"]}),
        tmp_path / "same.parquet",
    )
    loaded = [load_campaign(tmp_path / f"same.{ext}") for ext in ("csv", "jsonl", "parquet")]
    strip = [[(r.prompt_id, r.prompt, r.image_size, r.tags) for r in c.rows] for c in loaded]
    assert strip[0] == strip[1] == strip[2]


@pytest.mark.parametrize("prompt", ['=HYPERLINK("http://x")', "+1", "-cmd", "@SUM(A1)"])
def test_formula_like_prompts_are_prompt_text_and_reach_fal_unchanged(
    tmp_path: Path, prompt: str
) -> None:
    path = tmp_path / "f.csv"
    path.write_text(f'id,prompt\na,"{prompt.replace(chr(34), chr(34) * 2)}"\n', encoding="utf-8")
    row = load_campaign(path).rows[0]
    assert row.prompt == prompt
    assert render_input(row, "high")["prompt"] == prompt


def test_prompt_at_exactly_the_limit_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": "x" * model.MAX_PROMPT_CHARS}) + "\n")
    assert len(load_campaign(path).rows[0].prompt) == model.MAX_PROMPT_CHARS


def test_render_input_is_what_fal_accepts_for_each_quality() -> None:
    row = PromptRow("a", "a cat", {"width": 1536, "height": 1024}, "jpeg")
    for quality in model.QUALITIES:
        payload = render_input(row, quality)
        assert payload == {
            "prompt": "a cat",
            "image_size": {"width": 1536, "height": 1024},
            "quality": quality,
            "num_images": 1,
            "output_format": "jpeg",
        }
        assert model.validation_errors(payload) == []
    payload["image_size"]["width"] = 1  # a caller mutating its copy must not change the row
    assert row.image_size == {"width": 1536, "height": 1024}
    with pytest.raises(ValueError, match="quality"):
        render_input(row, "ultra")


def test_partition_keys_split_at_the_first_dash() -> None:
    assert partition_key("spring_2026", "hero-1") == "spring_2026-hero-1"
    assert split_partition_key("spring_2026-hero-1") == ("spring_2026", "hero-1")
    for bad in ("nodash", "Spring-a", "a-B", "a-", "a-b/c", "a-b c"):
        with pytest.raises(ValueError):
            split_partition_key(bad)
    with pytest.raises(ValueError):
        partition_key("spring-2026", "a")  # a '-' in the name would make keys ambiguous


def test_campaign_names_are_lowercased_stems(tmp_path: Path) -> None:
    assert campaign_name(tmp_path / "Spring_2026.CSV") == "spring_2026"
    with pytest.raises(CampaignError, match=r"rename it spring_2026\.csv"):
        campaign_name(tmp_path / "spring-2026.csv")
    with pytest.raises(CampaignError, match=r"rename it cafe_menu\.csv"):
        campaign_name(tmp_path / "Café Menu.csv")


def test_campaign_row_lookup() -> None:
    campaign = Campaign("c", Path("c.csv"), (PromptRow("a", "x", "auto", "png"),))
    assert campaign.row("a").prompt == "x"
    with pytest.raises(KeyError):
        campaign.row("b")
