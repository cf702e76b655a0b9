"""Campaign limits and patterns: GPT Image 2's prompt limit, id and key rules, accepted columns."""

from __future__ import annotations

import re

from falassets.engine import model

MAX_PROMPT_CHARS = model.MAX_PROMPT_CHARS  # GPT Image's prompt limit
MAX_ID_CHARS = 64
MAX_KEY_CHARS = 255  # longer keys break Dagster's file paths
MAX_NAME_CHARS = MAX_KEY_CHARS - 1 - MAX_ID_CHARS  # so every key of a valid campaign fits
MAX_ROWS = 100_000  # Dagster's documented practical ceiling of partitions per asset
MAX_LINE_BYTES = 4 * 1024 * 1024  # far above any valid row; stops a runaway line early
MAX_LISTED_PROBLEMS = 20
MAX_VARIANTS = model.MAX_IMAGES  # drafts per prompt: one request, fal's num_images (1-4)
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}  # by lowercased suffix
CAMPAIGN_SUFFIXES = tuple(FORMATS)
TABLE_VERSION = "1"

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_]*")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
KEY_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_SIZE_RE = re.compile(r"([0-9]{1,6}) *[x×] *([0-9]{1,6})")
_BOM = b"\xef\xbb\xbf"
_KNOWN = ("id", "prompt", "image_size", "output_format", "variants")
_REQUIRED = ("id", "prompt")
_ALIASES = {  # common names people give the required columns, for the "rename it" fix
    "id": ("prompt_id", "key", "name", "slug", "ids", "identifier"),
    "prompt": ("prompts", "text", "description", "caption", "prompt_text"),
}
_SIZE_CHOICES = ", ".join(["auto", *model.PRESET_SIZES, "WIDTHxHEIGHT (e.g. 1536x1024)"])
_ID_RULE = (
    f"use only letters, digits, '_' and '-', start with a letter or digit, "
    f"at most {MAX_ID_CHARS} characters"
)
