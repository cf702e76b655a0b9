"""The normalised Parquet table of a campaign (what the pipeline reads back)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from falassets.campaigns.changes import input_fingerprint
from falassets.campaigns.errors import CampaignError
from falassets.campaigns.keys import partition_key
from falassets.campaigns.limits import _SIZE_RE, MAX_NAME_CHARS, NAME_RE, TABLE_VERSION
from falassets.campaigns.model import Campaign, PromptRow
from falassets.engine.model import canonical_json

# --------------------------------------------------------------------------------------------
# Normalised table

TABLE_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("partition_key", pa.string()),
        ("prompt", pa.string()),
        ("image_size", pa.string()),  # a preset name, auto, or WIDTHxHEIGHT
        ("output_format", pa.string()),
        ("tags", pa.string()),  # canonical JSON object of strings
        ("row_number", pa.int64()),
        ("input_fingerprint", pa.string()),
        # Drafts per prompt. Written only when a prompt asks for more than one, so a
        # one-variant table is the table it always was; absent means 1.
        ("variants", pa.int64()),
    ]
)
_OPTIONAL = {"variants": 1}  # columns written only when needed, with what absence means


def size_text(image_size: str | dict[str, int]) -> str:
    """``image_size`` as one string: a preset name, ``auto`` or ``WIDTHxHEIGHT``."""
    if isinstance(image_size, dict):
        return f"{image_size['width']}x{image_size['height']}"
    return image_size


def table_path(campaign: str, directory: Path) -> Path:
    if not (NAME_RE.fullmatch(campaign) and len(campaign) <= MAX_NAME_CHARS):
        raise ValueError(f"not a campaign name: {campaign!r}")
    return Path(directory) / f"{campaign}.parquet"


def write_table(campaign: Campaign, directory: Path) -> Path:
    """Write the normalised campaign table as Parquet (atomically); return its path.

    Written to a temporary file in the same directory, fsynced, then renamed over the old
    table, so a reader sees the old table or the new one, never half of one.
    """
    target = table_path(campaign.name, directory)
    columns: dict[str, list[Any]] = {name: [] for name in TABLE_SCHEMA.names}
    for row in campaign.rows:
        columns["prompt_id"].append(row.prompt_id)
        columns["partition_key"].append(partition_key(campaign.name, row.prompt_id))
        columns["prompt"].append(row.prompt)
        columns["image_size"].append(size_text(row.image_size))
        columns["output_format"].append(row.output_format)
        columns["tags"].append(canonical_json(row.tags))
        columns["row_number"].append(row.row_number)
        columns["input_fingerprint"].append(input_fingerprint(row))
        columns["variants"].append(row.variants)
    metadata = {
        "falassets.campaign": campaign.name,
        "falassets.source": str(campaign.source),
        "falassets.table_version": TABLE_VERSION,
    }
    schema = TABLE_SCHEMA
    if all(row.variants == _OPTIONAL["variants"] for row in campaign.rows):
        del columns["variants"]
        schema = schema.remove(schema.get_field_index("variants"))
    table = pa.table(columns, schema=schema.with_metadata(metadata))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{campaign.name}.", suffix=".parquet.tmp", dir=target.parent
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)
    return target


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _size_from_text(text: str) -> str | dict[str, int]:
    match = _SIZE_RE.fullmatch(text)
    return {"width": int(match[1]), "height": int(match[2])} if match else text


def read_table(campaign: str, directory: Path) -> Campaign:
    """Read back a table written by ``write_table``.

    A missing table, or one whose rows do not match their stored fingerprints (edited by hand,
    or damaged), is a CampaignError: re-load the campaign file to rebuild it.
    """
    path = table_path(campaign, directory)
    rebuild = "load the campaign file again (falassets run, or the prompts asset) to rebuild it"
    if not path.is_file():
        raise CampaignError(path, f"there is no table for the campaign '{campaign}'", rebuild)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise CampaignError(path, f"the table cannot be read ({str(exc)[:100]})", rebuild) from exc
    missing = [
        name
        for name in TABLE_SCHEMA.names
        if name not in table.column_names and name not in _OPTIONAL
    ]
    if missing:
        raise CampaignError(path, f"the table lacks the columns {', '.join(missing)}", rebuild)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    present = [name for name in TABLE_SCHEMA.names if name in table.column_names]
    rows = []
    for record in table.select(present).to_pylist():
        for name, absent in _OPTIONAL.items():
            if record.get(name) is None:
                record[name] = absent
        row = PromptRow(
            prompt_id=record["prompt_id"],
            prompt=record["prompt"],
            image_size=_size_from_text(record["image_size"]),
            output_format=record["output_format"],
            tags=json.loads(record["tags"]),
            row_number=record["row_number"],
            variants=int(record["variants"]),
        )
        if input_fingerprint(row) != record["input_fingerprint"] or record[
            "partition_key"
        ] != partition_key(campaign, row.prompt_id):
            raise CampaignError(
                path,
                f"the row for '{row.prompt_id}' does not match its stored fingerprint",
                rebuild,
                row=row.row_number,
            )
        rows.append(row)
    source = Path(meta.get("falassets.source", str(path)))
    return Campaign(name=campaign, source=source, rows=tuple(rows))
