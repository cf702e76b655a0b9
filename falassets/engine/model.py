"""GPT Image 2 on fal: its input space and limits, in one place.

Campaign validation rejects rows with them before anything is billed and pricing sizes
requests with them, so the two can never disagree. The emulator keeps its own copy
(``sim/rules.py``), so it can catch a mistake here instead of confirming it.
"""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any) -> str:
    """The one serialisation used for hashing and for the lineage ``input`` column."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


PRESET_SIZES: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
AUTO_SIZE = (1024, 1024)  # what `auto` resolves to for pricing and the emulator
DEFAULT_SIZE = "landscape_4_3"
QUALITIES = ("low", "medium", "high")
DEFAULT_QUALITY = "high"  # fal's default: always send quality explicitly
OUTPUT_FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("auto", "transparent", "opaque")
MAX_PROMPT_CHARS = 32_000
MIN_PIXELS, MAX_PIXELS = 655_360, 8_294_400
MAX_EDGE, MAX_ASPECT, SIZE_MULTIPLE = 3840, 3.0, 16
MAX_IMAGES = 4


def custom_size_problem(width: Any, height: Any) -> str | None:
    """Why ``width`` x ``height`` is not a size fal accepts, or None when it is."""
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
    """Pixel size of a valid ``image_size`` value (preset name, ``auto`` or a dict)."""
    if image_size is None:
        return PRESET_SIZES[DEFAULT_SIZE]
    if isinstance(image_size, str):
        return AUTO_SIZE if image_size == "auto" else PRESET_SIZES[image_size]
    return int(image_size["width"]), int(image_size["height"])


def _error(loc: list[Any], msg: str, kind: str, value: Any) -> dict[str, Any]:
    return {"loc": ["body", *loc], "msg": msg, "type": kind, "input": value}


def validation_errors(payload: Any, *, edit: bool = False) -> list[dict[str, Any]]:
    """fal-style 422 ``detail`` entries for a text-to-image (or edit) input; [] when valid."""
    if not isinstance(payload, dict):
        return [_error([], "Input should be a valid dictionary", "dict_type", payload)]
    errors: list[dict[str, Any]] = []
    prompt = payload.get("prompt")
    if prompt is None:
        errors.append(_error(["prompt"], "Field required", "missing", payload))
    elif not isinstance(prompt, str):
        errors.append(_error(["prompt"], "Input should be a valid string", "string_type", prompt))
    elif len(prompt) > MAX_PROMPT_CHARS:
        errors.append(
            _error(
                ["prompt"],
                f"String should have at most {MAX_PROMPT_CHARS} characters",
                "string_too_long",
                prompt[:100],
            )
        )
    size = payload.get("image_size", "auto" if edit else DEFAULT_SIZE)
    if isinstance(size, str):
        if size != "auto" and size not in PRESET_SIZES:
            names = ", ".join(["auto", *PRESET_SIZES])
            errors.append(_error(["image_size"], f"Input should be one of: {names}", "enum", size))
    elif isinstance(size, dict):
        problem = custom_size_problem(size.get("width"), size.get("height"))
        if problem:
            errors.append(_error(["image_size"], problem, "value_error", size))
    else:
        errors.append(
            _error(
                ["image_size"], "Input should be a preset or {width, height}", "value_error", size
            )
        )
    if payload.get("quality", DEFAULT_QUALITY) not in QUALITIES:
        errors.append(
            _error(
                ["quality"],
                "Input should be 'low', 'medium' or 'high'",
                "enum",
                payload.get("quality"),
            )
        )
    n = payload.get("num_images", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_IMAGES:
        errors.append(
            _error(
                ["num_images"],
                f"Input should be between 1 and {MAX_IMAGES}",
                "less_than_equal" if isinstance(n, int) and n > 1 else "greater_than_equal",
                n,
            )
        )
    if payload.get("output_format", "png") not in OUTPUT_FORMATS:
        errors.append(
            _error(
                ["output_format"],
                "Input should be 'png', 'jpeg' or 'webp'",
                "enum",
                payload.get("output_format"),
            )
        )
    if payload.get("background", "auto") not in BACKGROUNDS:
        errors.append(
            _error(
                ["background"],
                "Input should be 'auto', 'transparent' or 'opaque'",
                "enum",
                payload.get("background"),
            )
        )
    if edit:
        urls = payload.get("image_urls")
        if urls is None:
            errors.append(_error(["image_urls"], "Field required", "missing", payload))
        elif not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            errors.append(
                _error(
                    ["image_urls"], "Input should be a non-empty list of URLs", "list_type", urls
                )
            )
    return errors
