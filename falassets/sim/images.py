"""Simulated GPT Image 2 outputs: real, cheap, deterministic pictures that follow the prompt.

A reviewer must be able to tell renders apart and to see that a "refine" kept what they
picked, so the picture is made from the prompt: colour words set the palette, the other words
place shapes (sun -> circle, mountain -> triangle, city -> blocks, sea -> waves, anything else
by hash), the prompt is written on it, and a banner says SIMULATED and the quality. Low quality
is drawn at a quarter of the size and scaled up (blocky), high at full size with more detail.
An edit starts from its source image, keeps the composition, sharpens and recolours it and is
marked REFINED. Same input -> same bytes; nothing depends on time or request ids.
"""

from __future__ import annotations

import hashlib
import io
import re
import textwrap
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 40),
    "crimson": (180, 20, 60),
    "orange": (247, 127, 0),
    "amber": (255, 191, 0),
    "yellow": (252, 211, 0),
    "gold": (212, 175, 55),
    "golden": (212, 175, 55),
    "green": (56, 176, 0),
    "emerald": (0, 155, 119),
    "lime": (158, 240, 26),
    "olive": (128, 128, 0),
    "teal": (0, 128, 128),
    "cyan": (0, 200, 220),
    "turquoise": (64, 224, 208),
    "blue": (30, 90, 220),
    "azure": (0, 127, 255),
    "navy": (10, 30, 90),
    "indigo": (75, 0, 130),
    "purple": (123, 44, 191),
    "violet": (143, 0, 255),
    "magenta": (230, 0, 126),
    "pink": (255, 130, 180),
    "rose": (255, 0, 127),
    "brown": (120, 72, 36),
    "beige": (222, 206, 170),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "silver": (192, 192, 192),
    "pastel": (200, 220, 240),
    "neon": (57, 255, 20),
}
SHAPE_WORDS = {
    "circle": {"sun", "moon", "ball", "planet", "orb", "eye", "coin", "clock", "bubble", "apple"},
    "triangle": {"mountain", "mountains", "tree", "trees", "forest", "pyramid", "roof", "tent"},
    "block": {"city", "building", "buildings", "tower", "house", "box", "window", "car", "robot"},
    "wave": {"ocean", "sea", "river", "water", "lake", "wave", "waves", "beach", "rain"},
}
SHAPES = ("circle", "triangle", "block", "wave", "ring", "diamond")
STOP_WORDS = {"a", "an", "the", "of", "and", "with", "in", "on", "at", "to", "for", "by", "is"}
DETAIL = {"low": 4, "medium": 2, "high": 1}  # draw at 1/N size, then scale up


@dataclass(frozen=True)
class ImageSpec:
    """Everything the picture depends on. ``source`` is set for an edit of our own image."""

    prompt: str
    width: int
    height: int
    quality: str
    output_format: str
    index: int = 0
    source: ImageSpec | None = None


def _hash(*parts: object) -> int:
    text = "\x1f".join(map(str, parts)).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def _words(prompt: str) -> list[str]:
    return [w for w in re.findall(r"[a-z]+", prompt.lower()) if w not in STOP_WORDS]


def _palette(words: list[str], prompt: str) -> list[tuple[int, int, int]]:
    named = [COLOURS[w] for w in words if w in COLOURS]
    if len(named) >= 3:
        return named[:6]
    h = _hash("palette", prompt)
    base = [
        ((h >> (8 * i)) & 0xFF, (h >> (8 * i + 16)) & 0xFF, (h >> (8 * i + 32)) & 0xFF)
        for i in range(4)
    ]
    return (named + base)[: max(3, len(named) + 2)]


def _shape_for(word: str) -> str:
    for shape, vocabulary in SHAPE_WORDS.items():
        if word in vocabulary:
            return shape
    return SHAPES[_hash("shape", word) % len(SHAPES)]


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    r, g, b = colour
    return (min(255, int(r * factor)), min(255, int(g * factor)), min(255, int(b * factor)))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return _cached_font(max(8, size))


@lru_cache(maxsize=32)
def _cached_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour, outline
) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    width = max(1, (x1 - x0) // 24) if outline else 0
    if shape == "circle":
        draw.ellipse(box, fill=colour, outline=outline, width=width)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour, outline=outline, width=width)
    elif shape == "block":
        step = max(1, (x1 - x0) // 3)
        for i, x in enumerate(range(x0, x1 - step + 1, step)):
            top = y0 + ((i * 37) % max(1, (y1 - y0) // 2))
            draw.rectangle((x, top, x + step - 2, y1), fill=colour, outline=outline, width=width)
    elif shape == "wave":
        amplitude = max(2, (y1 - y0) // 6)
        points = [
            (x, cy + (amplitude if (x // max(1, (x1 - x0) // 8)) % 2 else -amplitude))
            for x in range(x0, x1 + 1, max(1, (x1 - x0) // 16))
        ]
        draw.line(points, fill=colour, width=max(2, (y1 - y0) // 8), joint="curve")
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, (x1 - x0) // 8))
    else:  # diamond
        draw.polygon(
            [(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour, outline=outline, width=width
        )


def _composition(spec: ImageSpec) -> Image.Image:
    """Background and shapes, at full size (blocky for low quality)."""
    scale = DETAIL.get(spec.quality, 1)
    w, h = max(16, spec.width // scale), max(16, spec.height // scale)
    words = _words(spec.prompt)
    palette = _palette(words, spec.prompt)
    image = Image.new("RGB", (w, h), palette[0])
    draw = ImageDraw.Draw(image)
    top, bottom = palette[0], palette[1]
    bands = 24
    for i in range(bands):
        t = i / (bands - 1)
        colour = tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.rectangle((0, i * h // bands, w, (i + 1) * h // bands), fill=colour)
    subjects = [word for word in words if word not in COLOURS] or ["untitled"]
    extra = {"low": 0, "medium": 2, "high": 5}.get(spec.quality, 0)
    outline = (20, 20, 20) if spec.quality == "high" else None
    for n, word in enumerate(subjects[:10] + [f"detail{i}" for i in range(extra)]):
        h_word = _hash("place", word, spec.index, n)
        size = int(min(w, h) * (0.18 + (h_word % 1000) / 1000 * 0.3))
        x = int((h_word >> 10) % 1000 / 1000 * (w - size))
        y = int((h_word >> 20) % 1000 / 1000 * (h - size) * 0.8 + h * 0.1)
        colour = _shade(palette[(n + 2) % len(palette)], (1.0, 0.65, 1.35)[n % 3])
        _draw_shape(draw, _shape_for(word), (x, y, x + size, y + size), colour, outline)
    if scale > 1:
        image = image.resize((spec.width, spec.height), Image.Resampling.NEAREST)
    return image


def _refined(spec: ImageSpec) -> Image.Image:
    """The source picture, kept in composition, resized, sharpened and more saturated."""
    assert spec.source is not None
    base = render(spec.source).resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    base = base.filter(ImageFilter.SHARPEN)
    base = ImageEnhance.Color(base).enhance(1.35)
    return ImageEnhance.Contrast(base).enhance(1.15)


def _label(image: Image.Image, spec: ImageSpec) -> None:
    """Banner (SIMULATED, quality, REFINED) on top; the prompt wrapped at the bottom."""
    w, h = image.size
    draw = ImageDraw.Draw(image)
    tag = f"SIMULATED · GPT Image 2 · {spec.quality.upper()}"
    if spec.source is not None:
        tag += " · REFINED"
    if spec.index:
        tag += f" · #{spec.index + 1}"
    size = max(10, min(min(w, h) // 18, int(w / (len(tag) * 0.62))))
    font = _font(size)
    draw.rectangle((0, 0, w, int(size * 1.6)), fill=(0, 0, 0))
    draw.text((size // 2, size // 4), tag, fill=(255, 220, 0), font=font)
    small = _font(max(8, size * 2 // 3))
    chars = max(12, int(w / (size * 2 / 3) * 1.7))
    lines = textwrap.wrap(spec.prompt, width=chars)[:3] or [""]
    if len(textwrap.wrap(spec.prompt, width=chars)) > 3:
        lines[-1] = lines[-1][: max(0, chars - 1)] + "…"
    line_h = int(size * 2 / 3 * 1.3)
    y0 = h - line_h * len(lines) - size // 2
    draw.rectangle((0, y0 - size // 4, w, h), fill=(255, 255, 255))
    for i, line in enumerate(lines):
        draw.text((size // 2, y0 + i * line_h), line, fill=(0, 0, 0), font=small)


@lru_cache(maxsize=8)  # up to 25 MB each at 3840x2160: keep few
def render(spec: ImageSpec) -> Image.Image:
    """The picture of ``spec`` (cached: an edit's source is usually the image just viewed)."""
    image = _refined(spec) if spec.source is not None else _composition(spec)
    _label(image, spec)
    return image


@lru_cache(maxsize=64)
def encode(spec: ImageSpec) -> bytes:
    """The file bytes in the requested format; cheap settings, deterministic output."""
    buffer = io.BytesIO()
    image = render(spec)
    if spec.output_format == "jpeg":
        image.save(buffer, "JPEG", quality=85)
    elif spec.output_format == "webp":
        image.save(buffer, "WEBP", quality=80, method=0)
    else:
        image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()
