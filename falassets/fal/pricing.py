"""What fal bills for a GPT Image 2 request, from fal's published price table (USD/image).

Prices are per image by quality and output size; a size between two rows of the table is
billed at the next larger row (fal prices by tokens underneath, which grow with pixels).
"""

from __future__ import annotations

from typing import Any

from falassets.fal.model import DEFAULT_QUALITY, resolve_size

# (width, height) -> {quality: USD per image}, from fal's model page.
PRICE_TABLE: dict[tuple[int, int], dict[str, float]] = {
    (1024, 768): {"low": 0.01, "medium": 0.04, "high": 0.15},
    (1024, 1024): {"low": 0.01, "medium": 0.06, "high": 0.22},
    (1024, 1536): {"low": 0.01, "medium": 0.05, "high": 0.17},
    (1920, 1080): {"low": 0.01, "medium": 0.04, "high": 0.16},
    (2560, 1440): {"low": 0.01, "medium": 0.06, "high": 0.23},
    (3840, 2160): {"low": 0.02, "medium": 0.11, "high": 0.41},
}
_ROWS = sorted(PRICE_TABLE.items(), key=lambda item: item[0][0] * item[0][1])


def price_per_image(width: int, height: int, quality: str) -> float:
    pixels = width * height
    for (w, h), prices in _ROWS:
        if pixels <= w * h:
            return prices[quality]
    return _ROWS[-1][1][quality]


def price_usd(payload: dict[str, Any]) -> float:
    """Cost of one request with this input (text-to-image or edit), before it is sent."""
    width, height = resolve_size(payload.get("image_size"))
    quality = payload.get("quality", DEFAULT_QUALITY)
    return round(price_per_image(width, height, quality) * int(payload.get("num_images", 1)), 6)
