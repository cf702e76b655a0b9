"""A request's output images, one per variant: how the ``images`` column is read, once.

A draft of a campaign with N variants is one fal request with ``num_images`` N: one
partition, one bill, N images. Each image is its own verified file with its own sha256 and
thumbnail. The request row keeps variant 1 in its own image columns (``image_path``,
``sha256``, ``width`` ..., what a one-image request always had) and every variant in
``images``, a JSON list of :data:`falassets.lineage.schema.IMAGE_COLUMNS` objects. Rows
written before variants existed have no ``images``: their own image is variant 1. The
catalog's ``request_images`` view applies the same rule in SQL.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from falassets.lineage.schema import IMAGE_COLUMNS


def variants_asked(row: Mapping[str, Any] | None) -> int:
    """How many images the request asked fal for (its input's ``num_images``, default 1)."""
    payload = (row or {}).get("input")
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            payload = None
    return images_asked(payload if isinstance(payload, Mapping) else {})


def images_asked(payload: Mapping[str, Any]) -> int:
    """``num_images`` of an input as sent (fal's default 1 when absent or not a count)."""
    count = payload.get("num_images", 1)
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1


def request_images(row: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The request's images in variant order, each with every IMAGE_COLUMNS key; [] when it
    has none (not completed, or failed before its output was stored)."""
    if not row:
        return []
    listed = row.get("images")
    if isinstance(listed, str):
        try:
            listed = json.loads(listed)
        except ValueError:
            listed = None
    if isinstance(listed, list) and listed:
        images = [
            {name: entry.get(name) for name in IMAGE_COLUMNS}
            for entry in listed
            if isinstance(entry, dict) and isinstance(entry.get("variant"), int)
        ]
        return sorted(images, key=lambda image: image["variant"])
    if not row.get("image_path"):
        return []
    return [{**{name: row.get(name) for name in IMAGE_COLUMNS}, "variant": 1}]


def variant_image(row: Mapping[str, Any] | None, variant: int) -> dict[str, Any] | None:
    """Image ``variant`` (1-based) of the request, or None when it has no such image."""
    for image in request_images(row):
        if image["variant"] == variant:
            return image
    return None
