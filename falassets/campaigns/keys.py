"""Campaign names and partition keys (``<campaign>-<prompt_id>``, ``[a-z0-9_-]``)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from falassets.campaigns.errors import CampaignError, _show
from falassets.campaigns.limits import KEY_ID_RE, MAX_NAME_CHARS, NAME_RE

# --------------------------------------------------------------------------------------------
# Names and keys


def suggest_name(text: str, max_chars: int, *, allow_dash: bool = False) -> str:
    """The nearest string to ``text`` made of ``[a-z0-9_]`` (and '-'), starting alphanumeric.

    Accents are folded (``café`` → ``cafe``), other runs of forbidden characters become one
    ``_``. Empty when nothing usable is left.
    """
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    allowed = "a-z0-9_-" if allow_dash else "a-z0-9_"
    slug = re.sub(f"[^{allowed}]+", "_", folded.lower())
    slug = re.sub(r"^[_-]+", "", slug)[:max_chars]
    return slug.rstrip("_-")


def campaign_name(path: Path) -> str:
    """The campaign name for a file, or CampaignError if its stem cannot become one."""
    path = Path(path)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    name = stem.lower()
    if NAME_RE.fullmatch(name) and len(name) <= MAX_NAME_CHARS:
        return name
    raise CampaignError(path, *_name_problem(path, stem))


def _name_problem(path: Path, stem: str) -> tuple[str, str]:
    name = stem.lower()
    if len(name) > MAX_NAME_CHARS:
        problem = (
            f"the file name {_show(stem)} is {len(name)} characters long; a campaign name "
            f"(the file name without extension) may have at most {MAX_NAME_CHARS}"
        )
    else:
        problem = (
            f"the file name {_show(stem)} cannot be a campaign name: campaign names use only "
            "a-z, 0-9 and '_' and start with a letter or digit ('-' is reserved to separate "
            "campaign and prompt id in partition keys)"
        )
    suggestion = suggest_name(stem, MAX_NAME_CHARS) or "campaign_1"
    return problem, f"rename it {suggestion}{path.suffix.lower()}"


def _check_key_parts(campaign: str, prompt_id: str) -> None:
    if not (NAME_RE.fullmatch(campaign) and len(campaign) <= MAX_NAME_CHARS):
        raise ValueError(f"not a campaign name: {campaign!r}")
    if not KEY_ID_RE.fullmatch(prompt_id):
        raise ValueError(f"not a normalised prompt id: {prompt_id!r}")


def partition_key(campaign: str, prompt_id: str) -> str:
    """``<campaign>-<prompt_id>``; campaign names hold no '-', so the first '-' splits it.

    Both parts must already be valid (a campaign name and a lowercased prompt id): a
    ValueError here is a bug in the caller, never something to paper over with a slug.
    """
    _check_key_parts(campaign, prompt_id)
    return f"{campaign}-{prompt_id}"


def split_partition_key(key: str) -> tuple[str, str]:
    """``(campaign, prompt_id)`` of a key made by :func:`partition_key`; ValueError otherwise."""
    campaign, dash, prompt_id = key.partition("-")
    if not dash:
        raise ValueError(f"not a partition key (no '-'): {key!r}")
    _check_key_parts(campaign, prompt_id)
    return campaign, prompt_id


def is_partition_key(key: str) -> bool:
    try:
        split_partition_key(key)
    except ValueError:
        return False
    return True
