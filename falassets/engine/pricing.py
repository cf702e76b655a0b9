"""What fal bills for a GPT Image 2 request: an estimate and an upper bound, before it is sent.

Every price in falassets (the engine's budget cap and recorded cost, ``run --dry-run``, the
review page, the campaign report) comes from :func:`estimate`; nothing else prices a request.

**Output images** (fal's table, USD per image by size and quality):

- a size that *is* a table row, in either orientation (1536x1024 is the 1024x1536 row), costs
  that row;
- any other size costs the **dearest row with at most as many pixels as the smallest row that
  covers it** (the table's running maximum by pixels). The table is not monotone (1024x1536 is
  cheaper than 1024x1024 at medium and high), so "the next larger row" would price a custom
  1024x1400 below a 1024x1024; fal publishes nothing between rows, so we never assume a size
  costs less than a smaller size in the table;
- ``auto`` (what fal chooses is not documented): estimated as 1024x1024, at most the dearest
  row of the table.

**Input tokens** (fal lists the same rates on both endpoints: text $5, image $8 per 1M input
tokens). An edit pays for its prompt and for each ``image_urls`` entry on top of the table
("a refine also pays for its input image and prompt"). For text-to-image the table price is
taken as the whole bill, as the emulator bills it; since fal lists a text input rate there
too, the *upper bound* adds the prompt's tokens (a few hundredths of a cent), so a budget
never assumes them free. fal does not say how many tokens an image or a prompt is, so:

- an input image is *estimated* with OpenAI's tile formula (fit in 2048 px, shortest side
  768 px, 170 tokens per 512 px tile plus 85: 765 for 1024x1024; assumed, as the emulator
  does), at its known size or, unknown, at the size the request asks for (a refine sends the
  draft rendered at the same ``image_size``) or 1024x1024 for ``auto``; its *upper bound* is
  :data:`INPUT_IMAGE_TOKENS_MAX` = 8,000 tokens ($0.064), assumed from GPT Image 1's
  high-fidelity figures: fal's gpt-image-1 edit page gives 3,050 tokens for a 1024x1024
  input, and third-party measurements up to ~6,200 extra for a 16:9 one, plus at most 1,445
  tile tokens; GPT Image 2 edits are reported [3p] to bill inputs at high fidelity;
- a prompt is *estimated* at one token per 4 UTF-8 bytes (assumed); its upper bound is one
  token per byte (byte-level BPE never makes more tokens than bytes) plus
  :data:`TEXT_OVERHEAD_TOKENS_MAX` per request and per input image (undocumented template
  tokens, measured at 6 to ~40 [3p]).

**Billed**: when fal answers with ``x-fal-billable-units`` (the endpoint's priced unit: output
images for GPT Image 2), :func:`billed_usd` prices that many images at the table price, plus
the estimated input tokens of an edit (fal's units say nothing about them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from falassets.engine.model import (
    AUTO_SIZE,
    DEFAULT_QUALITY,
    DEFAULT_SIZE,
    MAX_IMAGES,
    QUALITIES,
    resolve_size,
)

TEXT_TO_IMAGE_ENDPOINT = "openai/gpt-image-2"
EDIT_SUFFIX = "/edit"

# (width, height) -> {quality: USD per image}, from fal's model page.
PRICE_TABLE: dict[tuple[int, int], dict[str, float]] = {
    (1024, 768): {"low": 0.01, "medium": 0.04, "high": 0.15},
    (1024, 1024): {"low": 0.01, "medium": 0.06, "high": 0.22},
    (1024, 1536): {"low": 0.01, "medium": 0.05, "high": 0.17},
    (1920, 1080): {"low": 0.01, "medium": 0.04, "high": 0.16},
    (2560, 1440): {"low": 0.01, "medium": 0.06, "high": 0.23},
    (3840, 2160): {"low": 0.02, "medium": 0.11, "high": 0.41},
}
TEXT_INPUT_USD_PER_TOKEN = 5.0 / 1_000_000  # fal's edit and text-to-image pages
IMAGE_INPUT_USD_PER_TOKEN = 8.0 / 1_000_000
INPUT_IMAGE_TOKENS_MAX = 8_000  # assumed upper bound per input image (see module docstring)
TEXT_OVERHEAD_TOKENS_MAX = 64  # assumed, per request and per input image

_ROWS = sorted(PRICE_TABLE.items(), key=lambda item: item[0][0] * item[0][1])


def _running_max() -> list[tuple[int, dict[str, float]]]:
    """(pixels, price per quality) of each row, each price the dearest at or below it."""
    envelope, best = [], dict.fromkeys(QUALITIES, 0.0)
    for (w, h), prices in _ROWS:
        best = {q: max(best[q], prices[q]) for q in QUALITIES}
        envelope.append((w * h, best))
    return envelope


_ENVELOPE = _running_max()
_DEAREST = _ENVELOPE[-1][1]


@dataclass(frozen=True)
class Cost:
    """A request's price: ``usd`` is the best estimate, ``max_usd`` the most fal may bill
    under its published rates and the bounds stated in this module."""

    usd: float
    max_usd: float


def is_edit(endpoint: str | None, payload: dict[str, Any]) -> bool:
    """An edit request: the edit endpoint, or (endpoint unknown) an input with image_urls."""
    if endpoint is not None:
        return endpoint.endswith(EDIT_SUFFIX)
    return "image_urls" in payload


def price_per_image(width: int, height: int, quality: str) -> float:
    """USD for one output image of this size (the rule in the module docstring)."""
    row = PRICE_TABLE.get((width, height)) or PRICE_TABLE.get((height, width))
    if row is not None:
        return row[quality]
    pixels = width * height
    for limit, prices in _ENVELOPE:
        if pixels <= limit:
            return prices[quality]
    return _DEAREST[quality]


def image_input_tokens(width: int, height: int) -> int:
    """Estimated tokens of one input image (assumed: OpenAI's high-detail tile formula)."""
    scale = min(1.0, 2048 / max(width, height))
    width, height = width * scale, height * scale
    scale = min(1.0, 768 / min(width, height))
    width, height = width * scale, height * scale
    return 85 + 170 * math.ceil(width / 512) * math.ceil(height / 512)


def text_input_tokens(text: str) -> int:
    """Estimated tokens of a prompt (assumed: 4 UTF-8 bytes a token, at least one)."""
    return max(1, math.ceil(len(text.encode("utf-8")) / 4))


def text_input_tokens_max(text: str, images: int) -> int:
    """Most tokens a prompt can be: one per byte, plus template overhead."""
    return len(text.encode("utf-8")) + TEXT_OVERHEAD_TOKENS_MAX * (1 + images)


def _output(payload: dict[str, Any], edit: bool) -> tuple[float, float, tuple[int, int] | None]:
    """(estimate, upper bound) USD per output image, and the pinned output size, if any."""
    quality = payload.get("quality", DEFAULT_QUALITY)
    size = payload.get("image_size", "auto" if edit else DEFAULT_SIZE)
    if quality not in QUALITIES:  # fal will refuse it (422, unbilled); until then, the worst
        return _DEAREST["high"], _DEAREST["high"], None
    if size == "auto":
        return price_per_image(*AUTO_SIZE, quality), _DEAREST[quality], None
    try:
        width, height = resolve_size(size)
    except (KeyError, TypeError, ValueError):
        return _DEAREST[quality], _DEAREST[quality], None
    price = price_per_image(width, height, quality)
    return price, price, (width, height)


def _count(payload: dict[str, Any]) -> int:
    n = payload.get("num_images", 1)
    ok = isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_IMAGES
    return n if ok else MAX_IMAGES


def _inputs(
    payload: dict[str, Any],
    output_size: tuple[int, int] | None,
    input_sizes: Sequence[tuple[int, int]],
) -> tuple[float, float]:
    """(estimate, upper bound) USD of an edit's input tokens: its images and its prompt."""
    urls = payload.get("image_urls")
    count = len(urls) if isinstance(urls, list) else 1
    guess = output_size or AUTO_SIZE
    sizes = [*input_sizes[:count], *[guess] * (count - len(input_sizes))]
    prompt = str(payload.get("prompt", ""))
    usd = sum(image_input_tokens(w, h) for w, h in sizes) * IMAGE_INPUT_USD_PER_TOKEN
    usd += text_input_tokens(prompt) * TEXT_INPUT_USD_PER_TOKEN
    most = count * INPUT_IMAGE_TOKENS_MAX * IMAGE_INPUT_USD_PER_TOKEN
    most += text_input_tokens_max(prompt, count) * TEXT_INPUT_USD_PER_TOKEN
    return usd, most


def _prompt_only(payload: dict[str, Any]) -> tuple[float, float]:
    """A text-to-image prompt: in the table price (estimate 0), at most its token bound."""
    prompt = str(payload.get("prompt", ""))
    return 0.0, text_input_tokens_max(prompt, 0) * TEXT_INPUT_USD_PER_TOKEN


def _input_usd(
    payload: dict[str, Any],
    edit: bool,
    output_size: tuple[int, int] | None,
    input_sizes: Sequence[tuple[int, int]],
) -> tuple[float, float]:
    if edit:
        return _inputs(payload, output_size, input_sizes)
    return _prompt_only(payload)


def estimate(
    payload: dict[str, Any],
    *,
    endpoint: str | None = None,
    input_sizes: Sequence[tuple[int, int]] = (),
) -> Cost:
    """The price of one request with this input, before it is sent. ``input_sizes``: the
    pixel sizes of an edit's ``image_urls`` when known, in order. Never raises: an input fal
    will refuse is priced at the most it could cost."""
    edit = is_edit(endpoint, payload)
    per_image, per_image_max, size = _output(payload, edit)
    count = _count(payload)
    inputs, inputs_max = _input_usd(payload, edit, size, input_sizes)
    return Cost(
        usd=round(per_image * count + inputs, 6),
        max_usd=round(per_image_max * count + inputs_max, 6),
    )


def price_usd(
    payload: dict[str, Any],
    *,
    endpoint: str | None = None,
    input_sizes: Sequence[tuple[int, int]] = (),
) -> float:
    """The estimated price of one request (:func:`estimate`'s ``usd``)."""
    return estimate(payload, endpoint=endpoint, input_sizes=input_sizes).usd


def billed_usd(
    units: float,
    payload: dict[str, Any],
    *,
    endpoint: str | None = None,
    input_sizes: Sequence[tuple[int, int]] = (),
) -> float:
    """What fal billed, from ``x-fal-billable-units``: that many output images at the table
    price for this size and quality, plus the estimated input tokens (the units omit them)."""
    edit = is_edit(endpoint, payload)
    per_image, _, size = _output(payload, edit)
    inputs, _ = _input_usd(payload, edit, size, input_sizes)
    return round(max(0.0, units) * per_image + inputs, 6)
