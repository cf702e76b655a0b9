"""Per-campaign exports: a contact sheet (PNG) and the decisions (CSV).

The contact sheet is what a creative lead forwards for sign-off: each draft thumbnail with
its prompt id under it and the reviewer's mark (green = picked, red = rejected); a winner
shows the variant the reviewer chose (``id #2``). The CSV is for spreadsheets, so every cell
is neutralised against formula injection; its ``variant`` column is a pick's chosen variant.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from PIL import Image, ImageDraw, ImageFont

from falassets.review.files import Refused, resolve_image

try:  # the project's shared CSV guard (falassets.review.csv_safety) when it is installed
    from falassets.review.csv_safety import safe_cell
except ImportError:  # pragma: no cover - same rule, kept here so exports never go unguarded

    def safe_cell(value: Any) -> Any:
        """A CSV cell no spreadsheet evaluates: text starting = + - @ tab CR gets a quote."""
        if value is None:
            return ""
        if isinstance(value, bool | int | float):
            return value
        text = str(value)
        return "'" + text if text.startswith(("=", "+", "-", "@", "\t", "\r")) else text


CSV_COLUMNS = (
    "campaign",
    "prompt_id",
    "partition_key",
    "decision",
    "prompt",
    "image_size",
    "output_format",
    "draft_status",
    "draft_request_id",
    "draft_error_type",
    "draft_error_message",
    "draft_cost_usd",
    "final_status",
    "final_request_id",
    "final_price_usd",
    "tags",
    "variant",  # the chosen draft variant of a pick (a winner is a prompt and a variant)
    "variants",  # how many draft variants the prompt has
    "draft_sha256",  # of the chosen variant (of variant 1 when not picked)
)

MARKS = {"pick": (46, 160, 67), "reject": (200, 55, 55)}
CELL = 200
MAX_SHEET_TILES = 2_000  # a 2,000-tile sheet is already ~9,000 px tall


def decisions_csv(campaign: str, items: Sequence[dict[str, Any]]) -> str:
    """One row per prompt with its decision, draft and final; every cell through safe_cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for item in items:
        draft, final = item["draft"], item["final"] or {}
        size = item["image_size"]
        shown = shown_variant(item)
        writer.writerow(
            safe_cell(value)
            for value in (
                campaign,
                item["id"],
                item["key"],
                item["decision"],
                item["prompt"],
                size if isinstance(size, str) else json.dumps(size, sort_keys=True),
                item["output_format"],
                draft.get("status"),
                draft.get("request_id"),
                draft.get("error_type"),
                draft.get("error_message"),
                draft.get("cost_usd"),
                final.get("status"),
                final.get("request_id"),
                item["final_cost_usd"],
                json.dumps(item["tags"], sort_keys=True, ensure_ascii=False)
                if item["tags"]
                else "",
                item.get("variant"),
                item.get("variants", 1),
                (shown or {}).get("sha256"),
            )
        )
    return buffer.getvalue()


def shown_variant(item: dict[str, Any]) -> dict[str, Any] | None:
    """The draft image an export shows for a prompt: a winner's chosen variant, else the
    first; None when the draft has no such image."""
    wanted = item.get("variant") or 1
    for image in item["draft"].get("variants") or ():
        if image.get("variant") == wanted:
            return image
    return None


def contact_sheet_png(
    root: Path, title: str, items: Sequence[dict[str, Any]], *, columns: int | None = None
) -> bytes:
    """A PNG grid of the items' draft thumbnails, id under each, decision as a coloured frame.

    Pictures are read through :func:`resolve_image`, so a sheet can only contain what the page
    itself serves (the render store, the data directory).
    """
    items = list(items)[:MAX_SHEET_TILES]
    columns = columns or max(1, min(8, math.ceil(math.sqrt(len(items) or 1))))
    rows = max(1, math.ceil(len(items) / columns))
    pad, label_h, title_h = 10, 20, 34
    sheet = Image.new(
        "RGB",
        (pad + columns * (CELL + pad), title_h + pad + rows * (CELL + label_h + pad)),
        (24, 24, 26),
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    draw.text((pad, 10), title, fill=(230, 230, 230), font=font)
    for index, item in enumerate(items):
        x = pad + (index % columns) * (CELL + pad)
        y = title_h + pad + (index // columns) * (CELL + label_h + pad)
        shown = shown_variant(item)
        picture = _tile(root, (shown or {}).get("thumb") or item["draft"].get("thumb"))
        if picture is None:
            draw.rectangle((x, y, x + CELL - 1, y + CELL - 1), fill=(48, 48, 52))
            draw.text((x + 8, y + CELL // 2 - 6), _missing_label(item), fill=(170, 170, 170))
        else:
            sheet.paste(
                picture, (x + (CELL - picture.width) // 2, y + (CELL - picture.height) // 2)
            )
        mark = MARKS.get(item["decision"])
        if mark:
            draw.rectangle((x - 3, y - 3, x + CELL + 2, y + CELL + 2), outline=mark, width=3)
        label = item["id"] + (
            f" #{shown['variant']}" if shown and item.get("variants", 1) > 1 else ""
        )
        draw.text((x, y + CELL + 5), _fit(draw, label, font), fill=(220, 220, 220), font=font)
    out = io.BytesIO()
    sheet.save(out, "PNG", optimize=False)
    return out.getvalue()


def _tags(tags: dict[str, str]) -> str:
    return json.dumps(tags, sort_keys=True, ensure_ascii=False) if tags else ""


def _missing_label(item: dict[str, Any]) -> str:
    status = item["draft"].get("status")
    if status in ("failed", "cancelled"):
        return f"failed: {item['draft'].get('error_type') or 'error'}"[:30]
    return {"pending": "rendering", "none": "no draft"}.get(status, "no image")


def _tile(root: Path, url: str | None) -> Image.Image | None:
    if not url or not url.startswith("/files/"):
        return None
    try:
        image = resolve_image(root, unquote(url[len("/files/") :]))
        with image.open() as handle, Image.open(handle) as source:
            source.draft("RGB", (CELL, CELL))
            picture = source.convert("RGB")
    except (Refused, OSError, ValueError):
        return None
    picture.thumbnail((CELL, CELL))
    return picture


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any) -> str:
    if draw.textlength(text, font=font) <= CELL:
        return text
    while text and draw.textlength(text + "...", font=font) > CELL:
        text = text[:-1]
    return text + "..."
