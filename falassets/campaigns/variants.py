"""How many drafts per prompt a campaign asks for: the file's ``variants`` column, else the
campaign's default that ``falassets run --variants N`` records, else 1.

Why the default is recorded: the pipeline reloads the campaign file on its own (the ``prompts``
asset, the campaign-file sensor), long after the command that set N has exited. A default
that lasted one command would make the next load ask for one draft again, so every
three-variant draft would look stale and be rendered (and billed) again. The defaults live in
``$FALASSETS_DATA_DIR/state/campaign_variants.json`` (the data directory is the volume every
host of a deployment shares); ``--variants 1`` goes back to one draft.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from falassets import settings
from falassets.atomic_files import write_text_atomically
from falassets.campaigns.limits import MAX_VARIANTS

DEFAULT_VARIANTS = 1  # today's behaviour: one draft per prompt


def variants_problem(value: Any) -> str | None:
    """Why ``value`` is not a number of variants, or None when it is (for ``--variants``)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VARIANTS:
        return (
            f"variants must be a whole number from 1 to {MAX_VARIANTS} (fal renders at most "
            f"{MAX_VARIANTS} images per request), not {value!r}"
        )
    return None


def _path() -> Path:
    return settings.state_dir() / "campaign_variants.json"


def _recorded() -> dict[str, int]:
    try:
        data = json.loads(_path().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and not variants_problem(v)}


def default_variants(campaign: str) -> int:
    """The campaign's recorded default (``run --variants N``), else 1."""
    return _recorded().get(campaign, DEFAULT_VARIANTS)


def record_default_variants(campaign: str, variants: int) -> None:
    """Remember ``variants`` as the campaign's default for every later load (atomically)."""
    problem = variants_problem(variants)
    if problem:
        raise ValueError(problem)
    recorded = _recorded()
    if recorded.get(campaign, DEFAULT_VARIANTS) == variants:
        return
    if variants == DEFAULT_VARIANTS:
        recorded.pop(campaign, None)
    else:
        recorded[campaign] = variants
    write_text_atomically(_path(), json.dumps(recorded, indent=1, sort_keys=True))
