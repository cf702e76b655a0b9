"""What a pass is, and whether a partition is already rendered for the input a pass wants.

This is the product's central rule ("is this partition already rendered for this exact
input?"), asked by the sensors, the final pass's selections, the campaign report and the review
page; it lives here, once, beside the journals it reads. ``lineage`` imports neither the
engine nor Dagster, so every layer (engine, pipeline, review, cli) can import it.

A request's recorded ``input`` is exactly what was sent to fal. A final *refined* from the
chosen draft sends the draft as ``image_urls`` beside the prompt's own input, so the reference
image is left out of the comparison: a refined final renders the same prompt at the same
quality as a rerun would, and counts as current for it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

TEXT_TO_IMAGE = "openai/gpt-image-2"
EDIT = "openai/gpt-image-2/edit"
DEFAULT_CONCURRENCY = 10  # requests in flight, machine-wide, unless a run says otherwise
REFERENCE_IMAGE_FIELD = "image_urls"  # what a refine adds to the prompt's own input


@dataclass(frozen=True)
class Pass:
    """One render pass: its lineage ``pass`` name, fal quality, Dagster asset, endpoints."""

    name: str
    quality: str
    asset: str
    endpoints: Mapping[str, str]  # mode ('rerun' | 'refine') -> fal endpoint

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(self.endpoints)

    def endpoint(self, mode: str = "rerun") -> str:
        if mode not in self.endpoints:
            raise ValueError(f"the {self.name} pass has modes {self.modes}, not {mode!r}")
        return self.endpoints[mode]


DRAFT = Pass("draft", "low", "draft_renders", {"rerun": TEXT_TO_IMAGE})
FINAL = Pass("final", "high", "final_renders", {"rerun": TEXT_TO_IMAGE, "refine": EDIT})
PASSES: dict[str, Pass] = {p.name: p for p in (DRAFT, FINAL)}


def get_pass(name: str) -> Pass:
    """The pass called ``name``; a clear error for any other name."""
    try:
        return PASSES[name]
    except KeyError:
        raise ValueError(f"pass must be one of {tuple(PASSES)}, not {name!r}") from None


@dataclass(frozen=True)
class RequestRow:
    """The fields of one journalled request row that freshness and reuse look at."""

    partition_key: str | None
    pass_name: str | None
    status: str | None
    input: dict[str, Any] | None  # None when the row's input is absent or not a JSON object
    endpoint: str | None = None
    variant: str | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any] | None) -> RequestRow | None:
        """A typed view of a journal or ``requests`` view row (its ``input`` may be text)."""
        if row is None:
            return None
        return cls(
            partition_key=row.get("partition_key"),
            pass_name=row.get("pass"),
            status=row.get("status"),
            input=_as_object(row.get("input")),
            endpoint=row.get("endpoint"),
            variant=row.get("variant"),
        )


class Freshness(Enum):
    """Where a partition stands for the input a pass wants, from its latest request."""

    MISSING = "missing"  # never requested
    STALE = "stale"  # the latest request was for another input (the prompt was edited since)
    CURRENT = "current"  # completed for this input
    IN_FLIGHT = "in_flight"  # requested for this input, not finished yet
    FAILED = "failed"  # requested for this input, failed or cancelled

    @property
    def attempted(self) -> bool:
        """Whether the latest request was for this input (whatever came of it)."""
        return self not in (Freshness.MISSING, Freshness.STALE)


def freshness(wanted: Mapping[str, Any], latest: RequestRow | None) -> Freshness:
    """Current, stale or missing: ``latest`` (the partition's latest request of the pass, from
    :func:`falassets.lineage.queries.latest_requests`) judged against the input ``wanted``."""
    if latest is None:
        return Freshness.MISSING
    if not same_render_input(latest.input, wanted):
        return Freshness.STALE
    if latest.status == "completed":
        return Freshness.CURRENT
    if latest.status == "pending":
        return Freshness.IN_FLIGHT
    return Freshness.FAILED


def same_render_input(recorded: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    """Whether a recorded request rendered ``wanted`` (a refine's reference image aside)."""
    if recorded is None:
        return False
    recorded = {k: v for k, v in recorded.items() if k != REFERENCE_IMAGE_FIELD}
    return _canonical(recorded) == _canonical(wanted)


def _canonical(value: Any) -> str:
    """The serialisation of ``engine.model.canonical_json`` (which lineage may not import)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _as_object(value: Any) -> dict[str, Any] | None:
    """The ``input`` column as a dict (views may hand it back as JSON text)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None
