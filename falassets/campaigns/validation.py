"""Field validation: ids, prompts, sizes, formats and tags, each with its fix."""

from __future__ import annotations

import difflib
import json
import math
from typing import Any

from falassets.campaigns.errors import _QUOTING, _Bad, _show
from falassets.campaigns.limits import (
    _ID_RULE,
    _SIZE_CHOICES,
    _SIZE_RE,
    ID_RE,
    MAX_ID_CHARS,
    MAX_PROMPT_CHARS,
    MAX_VARIANTS,
)
from falassets.campaigns.text import _check_text
from falassets.engine import model

# --------------------------------------------------------------------------------------------
# Field validation


def _id_problem(raw: str) -> str:
    """Why a non-empty, trimmed id does not match ``ID_RE``."""
    if len(raw) > MAX_ID_CHARS:
        return f"the id {_show(raw)} is {len(raw)} characters long; ids may have at most 64"
    if raw[0] in "_-":
        return f"the id {_show(raw)} starts with {raw[0]!r}; ids start with a letter or digit"
    if not _QUOTING.get():
        return "the id contains characters other than letters, digits, '_' and '-'"
    bad = []
    for char in raw:
        if not (char.isascii() and (char.isalnum() or char in "_-")) and char not in bad:
            bad.append(char)
    shown = ", ".join(_show(c) for c in bad[:5]) + (" and others" if len(bad) > 5 else "")
    path_like = "/" in raw or "\\" in raw or ".." in raw
    note = " (ids become file paths, so '/' and '..' are never allowed)" if path_like else ""
    return f"the id {_show(raw)} contains {shown}{note}"


def _parse_id(value: Any) -> str:
    """The lowercased id, or _Bad. Ids are validated, never rewritten."""
    if value is None:
        raise _Bad("the id is empty", "give every row a unique id such as 'hero_1'")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _Bad(
            f"the id {_show(value)} is a {type(value).__name__}, not text",
            'write the id as a string such as "hero_1"',
        )
    raw = value.strip()
    if not raw:
        raise _Bad("the id is empty", "give every row a unique id such as 'hero_1'")
    if not ID_RE.fullmatch(raw):
        raise _Bad(_id_problem(raw), _ID_RULE)  # the fix gets a suggestion once all ids are known
    return raw.lower()


def _parse_prompt(value: Any) -> str:
    if value is None:
        raise _Bad("the prompt is empty", "write the text to render in this row's prompt")
    if not isinstance(value, str):
        raise _Bad(
            f"the prompt {_show(value)} is a {type(value).__name__}, not text",
            "write the prompt as a string",
        )
    prompt = value.strip()
    if not prompt:
        raise _Bad("the prompt is empty", "write the text to render in this row's prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise _Bad(
            f"the prompt is {len(prompt):,} characters long; GPT Image 2 accepts at most "
            f"{MAX_PROMPT_CHARS:,}",
            f"shorten it by at least {len(prompt) - MAX_PROMPT_CHARS:,} characters",
        )
    _check_text(prompt, lambda: "the prompt")
    return prompt


def _nearest_valid_size(width: int, height: int) -> tuple[int, int] | None:
    """A size fal accepts close to ``width`` x ``height`` (aspect and area clamped to fal's
    limits, edges rounded to its multiple), for the fix of a refused custom size."""
    if width <= 0 or height <= 0:
        return None
    step = model.SIZE_MULTIPLE
    ratio = max(1 / model.MAX_ASPECT, min(model.MAX_ASPECT, width / height))
    area = min(max(width * height, model.MIN_PIXELS), model.MAX_PIXELS)
    base = int(math.sqrt(area * ratio) / step + 0.5) * step
    for k in sorted(range(-64, 65), key=abs):
        w = base + k * step
        if w <= 0:
            continue
        exact = w / ratio
        for h in sorted(
            {int(exact // step) * step, int(-(-exact // step)) * step}, key=lambda h: abs(h - exact)
        ):
            if h > 0 and model.custom_size_problem(w, h) is None:
                return w, h
    return None


def _custom_size(width: Any, height: Any, shown: str) -> dict[str, int]:
    problem = model.custom_size_problem(width, height)
    if problem is None:
        return {"width": width, "height": height}
    fix = f"use a preset ({', '.join(['auto', *model.PRESET_SIZES])}) or a size fal accepts"
    if isinstance(width, int) and isinstance(height, int):
        nearest = _nearest_valid_size(width, height)
        if nearest:
            fix += f", e.g. {nearest[0]}x{nearest[1]}"
    raise _Bad(f"fal refuses the image size {shown}: {problem}", fix)


def _parse_size(value: Any) -> str | dict[str, int]:
    """A preset name, ``auto`` or ``{"width", "height"}``; the default when empty."""
    if value is None:
        return model.DEFAULT_SIZE
    if isinstance(value, dict):
        keys = set(value)
        if keys != {"width", "height"}:
            raise _Bad(
                f"the image size {_show(value, 60)} must have exactly the keys width and height",
                'write it as {"width": 1536, "height": 1024} or as "1536x1024"',
            )
        width, height = value["width"], value["height"]
        return _custom_size(width, height, f"{width}x{height}")
    if not isinstance(value, str):
        raise _Bad(
            f"the image size {_show(value)} is a {type(value).__name__}",
            f"use one of: {_SIZE_CHOICES}",
        )
    text = value.strip().lower()
    if not text:
        return model.DEFAULT_SIZE
    if text == "auto" or text in model.PRESET_SIZES:
        return text
    match = _SIZE_RE.fullmatch(text)
    if match:
        width, height = int(match[1]), int(match[2])
        return _custom_size(width, height, f"{width}x{height}")
    close = difflib.get_close_matches(text, ["auto", *model.PRESET_SIZES], n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise _Bad(f"unknown image size {_show(value)}", f"{hint}use one of: {_SIZE_CHOICES}")


def _parse_format(value: Any) -> str:
    if value is None:
        return "png"
    if not isinstance(value, str):
        raise _Bad(
            f"the output format {_show(value)} is not text",
            f"use one of: {', '.join(model.OUTPUT_FORMATS)}",
        )
    text = value.strip().lower()
    if not text:
        return "png"
    if text in model.OUTPUT_FORMATS:
        return text
    hint = "write jpeg (fal's name for it); " if text in ("jpg", ".jpg", ".jpeg") else ""
    raise _Bad(
        f"unknown output format {_show(value)}",
        f"{hint}use one of: {', '.join(model.OUTPUT_FORMATS)}",
    )


_VARIANTS_FIX = (
    f"write a whole number from 1 to {MAX_VARIANTS} (drafts per prompt, one request with "
    "fal's num_images), or leave the cell empty for the campaign's default"
)


def _parse_variants(value: Any) -> int | None:
    """Drafts per prompt, or None for an empty cell (the campaign's default applies)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    number: Any = value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        number = int(text) if text.isascii() and text.isdigit() else text
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if isinstance(number, bool) or not isinstance(number, int):
        raise _Bad(f"variants {_show(value)} is not a whole number", _VARIANTS_FIX)
    if not 1 <= number <= MAX_VARIANTS:
        raise _Bad(
            f"variants {number} is outside 1-{MAX_VARIANTS} (fal renders at most "
            f"{MAX_VARIANTS} images per request)",
            _VARIANTS_FIX,
        )
    return number


def _parse_tag(value: Any) -> str | None:
    """A tag cell as text, or _Bad; None for empty cells, so CSV, JSONL and Parquet agree.

    A float NaN is empty: it is how dataframes (and so their Parquet files) mark a missing
    number. Infinity is refused rather than stored as the text "inf".
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, bytes):
        raise _Bad(
            "the value is binary data that is not UTF-8 text",
            "store this column as text (a string column) in the Parquet file",
        )
    elif isinstance(value, float) and math.isinf(value):
        raise _Bad(
            f"the value {value} is not a finite number (JSON numbers beyond about 1e308 "
            "overflow to infinity)",
            "write a finite number, or the value as a quoted string",
        )
    elif isinstance(value, dict | list | tuple):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    else:
        text = str(value).strip()
    _check_text(text, lambda: f"the value {_show(text)}")
    return text or None


def _is_empty(value: Any) -> bool:
    """True for a cell a user would call empty (None, blank text, NaN)."""
    try:
        return _parse_tag(value) is None
    except _Bad:
        return False
