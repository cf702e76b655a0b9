"""fal's rules for GPT Image 2, as the emulator's OWN copy (of ``fal-queue-api.md``).

The engine has its rules in ``falassets/engine/model.py`` and ``pricing.py``. The emulator must
not share them: a wrong rule there would be "confirmed" by an emulator that reuses it, and the
emulator exists to catch the engine's mistakes. So the input space, the 422 details and the
price table are written here again, from fal's model page.

Edit requests (``openai/gpt-image-2/edit``) also pay tokens for their inputs: image input
$8 and text input $5 per 1M tokens (fal lists the same token rates on the edit endpoint).
How many tokens an image or a prompt is, fal does not say: assumed here as OpenAI's GPT Image
formula (85 + 170 per 512 px tile after fitting 2048 px and shortest side 768 px) and ~4
characters per text token.
"""

from __future__ import annotations

import math
from typing import Any

PRESET_SIZES: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
AUTO_SIZE = (1024, 1024)
DEFAULT_SIZE = "landscape_4_3"
QUALITIES = ("low", "medium", "high")
DEFAULT_QUALITY = "high"
OUTPUT_FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("auto", "transparent", "opaque")
MAX_PROMPT_CHARS = 32_000
MIN_PIXELS, MAX_PIXELS = 655_360, 8_294_400
MAX_EDGE, MAX_ASPECT, SIZE_MULTIPLE = 3840, 3.0, 16
MAX_IMAGES = 4

#: USD per output image by (width, height) row and quality (fal's model page).
PRICE_TABLE: dict[tuple[int, int], dict[str, float]] = {
    (1024, 768): {"low": 0.01, "medium": 0.04, "high": 0.15},
    (1024, 1024): {"low": 0.01, "medium": 0.06, "high": 0.22},
    (1024, 1536): {"low": 0.01, "medium": 0.05, "high": 0.17},
    (1920, 1080): {"low": 0.01, "medium": 0.04, "high": 0.16},
    (2560, 1440): {"low": 0.01, "medium": 0.06, "high": 0.23},
    (3840, 2160): {"low": 0.02, "medium": 0.11, "high": 0.41},
}
IMAGE_INPUT_USD_PER_TOKEN = 8.0 / 1_000_000
TEXT_INPUT_USD_PER_TOKEN = 5.0 / 1_000_000
_ROWS = sorted(PRICE_TABLE.items(), key=lambda item: item[0][0] * item[0][1])


def _size_problem(width: Any, height: Any) -> str | None:
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height)):
        return "width and height must be integers"
    if width <= 0 or height <= 0:
        return "width and height must be positive"
    if width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:
        return f"width and height must be multiples of {SIZE_MULTIPLE}"
    if max(width, height) > MAX_EDGE:
        return f"the longest edge must be at most {MAX_EDGE} pixels"
    if max(width, height) / min(width, height) > MAX_ASPECT:
        return "the aspect ratio must be at most 3:1"
    if not MIN_PIXELS <= width * height <= MAX_PIXELS:
        return f"the image must have between {MIN_PIXELS:,} and {MAX_PIXELS:,} pixels"
    return None


def resolve_size(image_size: Any) -> tuple[int, int]:
    """Pixel size of a valid ``image_size`` (preset, ``auto`` or ``{width, height}``)."""
    if image_size is None:
        return PRESET_SIZES[DEFAULT_SIZE]
    if isinstance(image_size, str):
        return AUTO_SIZE if image_size == "auto" else PRESET_SIZES[image_size]
    return int(image_size["width"]), int(image_size["height"])


def _error(loc: list[Any], msg: str, kind: str, value: Any) -> dict[str, Any]:
    return {"loc": ["body", *loc], "msg": msg, "type": kind, "input": value}


def _enum_error(payload: dict[str, Any], name: str, default: str, allowed: tuple[str, ...]):
    value = payload.get(name, default)
    if value in allowed:
        return None
    names = ", ".join(repr(a) for a in allowed)
    return _error([name], f"Input should be one of {names}", "enum", value)


def _prompt_errors(payload: dict[str, Any]) -> list[dict[str, Any]]:
    prompt = payload.get("prompt")
    if prompt is None:
        return [_error(["prompt"], "Field required", "missing", payload)]
    if not isinstance(prompt, str):
        return [_error(["prompt"], "Input should be a valid string", "string_type", prompt)]
    if len(prompt) > MAX_PROMPT_CHARS:
        msg = f"String should have at most {MAX_PROMPT_CHARS} characters"
        return [_error(["prompt"], msg, "string_too_long", prompt[:100])]
    return []


def _size_errors(payload: dict[str, Any], edit: bool) -> list[dict[str, Any]]:
    size = payload.get("image_size", "auto" if edit else DEFAULT_SIZE)
    if isinstance(size, str):
        if size == "auto" or size in PRESET_SIZES:
            return []
        names = ", ".join(["auto", *PRESET_SIZES])
        return [_error(["image_size"], f"Input should be one of: {names}", "enum", size)]
    if isinstance(size, dict):
        problem = _size_problem(size.get("width"), size.get("height"))
        return [_error(["image_size"], problem, "value_error", size)] if problem else []
    msg = "Input should be a preset or {width, height}"
    return [_error(["image_size"], msg, "value_error", size)]


def _count_errors(payload: dict[str, Any]) -> list[dict[str, Any]]:
    n = payload.get("num_images", 1)
    if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_IMAGES:
        return []
    kind = "less_than_equal" if isinstance(n, int) and n > 1 else "greater_than_equal"
    return [_error(["num_images"], f"Input should be between 1 and {MAX_IMAGES}", kind, n)]


def _urls_errors(payload: dict[str, Any]) -> list[dict[str, Any]]:
    urls = payload.get("image_urls")
    if urls is None:
        return [_error(["image_urls"], "Field required", "missing", payload)]
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        msg = "Input should be a non-empty list of URLs"
        return [_error(["image_urls"], msg, "list_type", urls)]
    return []


def validation_errors(payload: Any, *, edit: bool = False) -> list[dict[str, Any]]:
    """fal's 422 ``detail`` entries for a text-to-image (or edit) input; [] when valid."""
    if not isinstance(payload, dict):
        return [_error([], "Input should be a valid dictionary", "dict_type", payload)]
    errors = [*_prompt_errors(payload), *_size_errors(payload, edit)]
    for name, default, allowed in (
        ("quality", DEFAULT_QUALITY, QUALITIES),
        ("output_format", "png", OUTPUT_FORMATS),
        ("background", "auto", BACKGROUNDS),
    ):
        if (error := _enum_error(payload, name, default, allowed)) is not None:
            errors.append(error)
    errors += _count_errors(payload)
    if edit:
        errors += _urls_errors(payload)
    return errors


def price_per_image(width: int, height: int, quality: str) -> float:
    """The table row at or above this many pixels (fal prices by tokens, which grow)."""
    pixels = width * height
    for (w, h), prices in _ROWS:
        if pixels <= w * h:
            return prices[quality]
    return _ROWS[-1][1][quality]


def image_input_tokens(width: int, height: int) -> int:
    """Tokens one input image costs (assumed: OpenAI's GPT Image tile formula)."""
    scale = min(1.0, 2048 / max(width, height))
    width, height = width * scale, height * scale
    scale = min(1.0, 768 / min(width, height))
    width, height = width * scale, height * scale
    return 85 + 170 * math.ceil(width / 512) * math.ceil(height / 512)


def text_input_tokens(text: str) -> int:
    """Tokens of a prompt (assumed: ~4 UTF-8 bytes per token, at least one)."""
    return max(1, math.ceil(len(text.encode("utf-8")) / 4))


def price_usd(
    payload: dict[str, Any], *, edit: bool = False, input_sizes: list[tuple[int, int]] = ()
) -> float:
    """What fal bills for one finished request: output images at the table price, and for
    an edit its input tokens (each input image at ``input_sizes`` or, unknown, 1024x1024)."""
    default = "auto" if edit else None
    width, height = resolve_size(payload.get("image_size", default))
    quality = payload.get("quality", DEFAULT_QUALITY)
    usd = price_per_image(width, height, quality) * int(payload.get("num_images", 1))
    if edit:
        urls = payload.get("image_urls") or []
        sizes = list(input_sizes) + [AUTO_SIZE] * (len(urls) - len(input_sizes))
        image_tokens = sum(image_input_tokens(w, h) for w, h in sizes[: len(urls)])
        usd += image_tokens * IMAGE_INPUT_USD_PER_TOKEN
        usd += text_input_tokens(str(payload.get("prompt", ""))) * TEXT_INPUT_USD_PER_TOKEN
    return round(usd, 6)
