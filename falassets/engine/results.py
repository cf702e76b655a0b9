"""What a finished fal request says, as lineage keeps it: its output URLs (variant 1 first),
the pixel size they must have, what it cost (fal's billed units, else the estimate), and the
lineage columns of its stored images. The engine and the reconciler of crashed submits read a
result the same way, here.
"""

from __future__ import annotations

import math
from typing import Any

from falassets.engine import downloads
from falassets.engine.jobs import EDIT, RenderJob
from falassets.engine.model import resolve_size
from falassets.engine.pricing import billed_usd
from falassets.storage.renders import local_path, uri_of


def image_fields(row: dict[str, Any]) -> dict[str, Any]:
    """An outcome's image fields from a lineage row (rows before ``image_uri``: the path)."""
    image = row.get("image_uri") or (uri_of(row["image_path"]) if row.get("image_path") else None)
    thumb = uri_of(row["thumbnail_path"]) if row.get("thumbnail_path") else None
    return {
        "image_path": local_path(image),
        "thumbnail_path": local_path(thumb),
        "image_uri": image,
        "thumbnail_uri": thumb,
    }


def stored_fields(stored: list[downloads.StoredImage], urls: list[str]) -> dict[str, Any]:
    """The lineage columns of a request's stored outputs: variant 1's in the row's own image
    columns (and ``output_url``), every variant in ``images`` (lineage/variants.py)."""
    kept = [kept_url(url) for url in urls]
    return {
        **stored[0].row_fields(),
        "output_url": kept[0],
        "images": [
            image.image_entry(variant, url)
            for variant, (image, url) in enumerate(zip(stored, kept, strict=True), start=1)
        ],
    }


def kept_url(url: str) -> str | None:
    """An output URL as lineage keeps it: fal's data URIs (sync mode) are not kept."""
    return url if len(url) < 2048 else None


def image_urls(body: Any) -> list[str]:
    """The output URLs of a result, in fal's order (variant 1 first), up to the first entry
    that is not an image with a URL."""
    images = body.get("images") if isinstance(body, dict) else None
    urls: list[str] = []
    for image in images if isinstance(images, list) else []:
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(url, str) or not url:
            break
        urls.append(url)
    return urls


def expected_size(job: RenderJob) -> tuple[int, int] | None:
    """The pixel size fal must return, when the input pins one (``auto`` pins nothing)."""
    size = job.input.get("image_size")
    if job.endpoint == EDIT and size is None:
        return None
    if size == "auto":
        return None
    try:
        return resolve_size(size)
    except (KeyError, TypeError, ValueError):
        return None


def bill(row: dict[str, Any], headers: dict[str, str], job: RenderJob, *, default: float) -> float:
    """The cost of a finished request, noting in ``row`` where it comes from: ``billed`` when
    fal sent ``x-fal-billable-units`` (recorded as ``billable_units``), else ``estimated``
    (``default``: the estimate, or 0 for an outcome fal does not bill)."""
    units = billable_units(headers.get("x-fal-billable-units"))
    row.update(cost_source="estimated" if units is None else "billed", billable_units=units)
    if units is None:
        return default
    return billed_usd(units, job.input, endpoint=job.endpoint)


def billable_units(raw: str | None) -> float | None:
    """fal's billed quantity, or None when absent or not a finite number."""
    try:
        units = float(raw) if raw is not None else None
    except ValueError:
        return None
    return units if units is not None and math.isfinite(units) and units >= 0 else None
