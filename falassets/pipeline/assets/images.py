"""Small pictures for the Dagster UI: inline thumbnails and contact sheets of drafts.

Dagster's UI (1.13) renders markdown metadata with react-markdown and rehype-sanitize but
without rehype-raw: raw HTML such as ``<img src=...>`` is dropped, leaving an empty cell, while
the markdown image syntax ``![alt](data:...)`` becomes an ``<img>`` (its sanitizer allows
``data:`` for ``src``). It shows markdown inline only under 1,000 characters (longer values sit
behind "Show Markdown") and keeps every materialization's metadata in the event log, so inline
thumbnails are tiny WebP data URIs.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from falassets.storage.renders import open_render

#: A render's location as lineage records it (local path or URI), read through the store.
Location = str | os.PathLike[str]

INLINE_MARKDOWN_LIMIT = 950  # characters; Dagster's inline cut-off is 1,000
_THUMB_EDGES = (96, 80, 64, 48, 32)


def _encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=quality)
    return buffer.getvalue()


def _markdown_image(data: bytes, mime: str, alt: str) -> str:
    """``![alt](data:...)``: the only image form Dagster's markdown sanitizer keeps."""
    label = "".join(f"\\{char}" if char in "\\[]" else char for char in alt.replace("\n", " "))
    return f"![{label}](data:{mime};base64,{base64.b64encode(data).decode()})"


def inline_thumbnail(location: Location, alt: str = "thumbnail") -> str | None:
    """A markdown image with a data URI that stays under the inline limit, or None."""
    try:
        with open_render(location) as handle, Image.open(handle) as source:
            source.draft("RGB", (128, 128))  # cheap downscale while decoding JPEGs
            image = source.convert("RGB")
    except (OSError, ValueError):
        return None
    for edge in _THUMB_EDGES:
        small = image.copy()
        small.thumbnail((edge, edge))
        for quality in (45, 25):
            markdown = _markdown_image(_encode(small, "WEBP", quality), "image/webp", alt)
            if len(markdown) <= INLINE_MARKDOWN_LIMIT:
                return markdown
    return None


def contact_sheet(
    tiles: Sequence[tuple[str, Location | None]],
    *,
    columns: int | None = None,
    cell: int = 160,
    title: str = "",
) -> Image.Image:
    """A grid of thumbnails with each label under its picture; a grey box where none exists."""
    columns = columns or max(1, min(10, math.ceil(math.sqrt(len(tiles) or 1))))
    rows = max(1, math.ceil(len(tiles) / columns))
    label_h, pad, title_h = 18, 8, (28 if title else 0)
    width = columns * (cell + pad) + pad
    height = title_h + rows * (cell + label_h + pad) + pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    if title:
        draw.text((pad, 8), title, fill="black", font=font)
    for index, (label, location) in enumerate(tiles):
        col, row = index % columns, index // columns
        x = pad + col * (cell + pad)
        y = title_h + pad + row * (cell + label_h + pad)
        picture = _load_tile(location, cell)
        if picture is None:
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill="#dddddd", outline="#999999")
            draw.text((x + 6, y + cell // 2 - 6), "no draft", fill="#666666", font=font)
        else:
            sheet.paste(
                picture, (x + (cell - picture.width) // 2, y + (cell - picture.height) // 2)
            )
        draw.text((x, y + cell + 3), _fit(draw, label, font, cell), fill="black", font=font)
    return sheet


def sheet_data_uri(sheet: Image.Image, *, max_edge: int = 480, alt: str = "contact sheet") -> str:
    """A markdown image of a downscaled JPEG of a sheet, shown behind Dagster's "Show
    Markdown" (it is over the inline limit); the full PNG is on disk."""
    small = sheet.copy()
    small.thumbnail((max_edge, max_edge))
    return _markdown_image(_encode(small, "JPEG", 60), "image/jpeg", alt)


def _load_tile(location: Location | None, cell: int) -> Image.Image | None:
    if location is None:
        return None
    try:
        with open_render(location) as handle, Image.open(handle) as source:
            source.draft("RGB", (cell, cell))
            picture = source.convert("RGB")
    except (OSError, ValueError):
        return None
    picture.thumbnail((cell, cell))
    return picture


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."
