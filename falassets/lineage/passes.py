"""What a pass is, and whether a partition is already rendered for the input a pass wants.

This is the product's central rule ("is this partition already rendered for this exact
input?"), asked by the sensors, the final pass's selections, the campaign report and the review
page; it lives here, once, beside the journals it reads. ``lineage`` imports neither the
engine nor Dagster, so every layer (engine, pipeline, review, cli) can import it.

A request's recorded ``input`` is exactly what was sent to fal. A final *refined* from the
chosen draft sends the draft as ``image_urls`` beside the prompt's own input, so the reference
image is left out of the input comparison: a refined final renders the same prompt at the same
quality as a rerun would, and counts as current for it. Which draft image it was refined from
is the request's ``variant`` (:func:`refine_reference`), compared with the reviewer's chosen
variant instead: a draft pass of N variants is one request with N images, and a winner is a
(prompt, variant) pair.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from falassets.campaigns.model import PromptRow

TEXT_TO_IMAGE = "openai/gpt-image-2"
EDIT = "openai/gpt-image-2/edit"
DEFAULT_CONCURRENCY = 10  # requests in flight, machine-wide, unless a run says otherwise
REFERENCE_IMAGE_FIELD = "image_urls"  # what a refine adds to the prompt's own input
REFINE_PREFIX = "refine:"  # the job variant of a refined final: refine:<reference sha256>


@dataclass(frozen=True)
class Pass:
    """One render pass: its lineage ``pass`` name, fal quality, Dagster asset, endpoints."""

    name: str
    quality: str
    asset: str
    endpoints: Mapping[str, str]  # mode ('rerun' | 'refine') -> fal endpoint
    variants: bool = False  # asks fal for the campaign row's variants (num_images), else 1

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(self.endpoints)

    def endpoint(self, mode: str = "rerun") -> str:
        if mode not in self.endpoints:
            raise ValueError(f"the {self.name} pass has modes {self.modes}, not {mode!r}")
        return self.endpoints[mode]

    def render_input(self, row: PromptRow) -> dict[str, Any]:
        """The exact fal input this pass sends for a campaign row (what freshness compares):
        the draft pass asks for the row's variants in one request, the final pass for the one
        image a winner becomes."""
        from falassets.campaigns.changes import render_input  # pyarrow: imported when used

        return render_input(row, self.quality, images=row.variants if self.variants else 1)


DRAFT = Pass("draft", "low", "draft_renders", {"rerun": TEXT_TO_IMAGE}, variants=True)
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


def refine_reference(sha256: str) -> str:
    """The job ``variant`` of a final refined from the draft image with this sha256: part of
    its idempotency key (another chosen variant is another render), and what
    :func:`freshness` compares with the reviewer's choice."""
    return f"{REFINE_PREFIX}{sha256}"


def chosen_reference(draft: Mapping[str, Any] | None, variant: int) -> str | None:
    """:func:`refine_reference` of image ``variant`` of a draft request row (the reviewer's
    choice), or None when the draft has no such image (not rendered, or fewer variants)."""
    from falassets.lineage.variants import variant_image

    image = variant_image(draft, variant)
    return refine_reference(image["sha256"]) if image and image.get("sha256") else None


def freshness(
    wanted: Mapping[str, Any],
    latest: RequestRow | None,
    *,
    reference: str | None = None,
    refine: bool = False,
) -> Freshness:
    """Current, stale or missing: ``latest`` (the partition's latest request of the pass, from
    :func:`falassets.lineage.queries.latest_requests`) judged against the input ``wanted``.

    For a final, ``reference`` is :func:`refine_reference` of the draft variant the reviewer
    picked, when known: a final refined from another image is STALE (the reviewer chose
    another variant since). ``refine``: a refine is wanted, so a final not refined from
    ``reference`` (a rerun, or a refine of another variant) is STALE too. A rerun final
    stays current whichever variant is chosen: its input does not depend on the choice."""
    if latest is None:
        return Freshness.MISSING
    if not same_render_input(latest.input, wanted):
        return Freshness.STALE
    if not _same_reference(latest.variant, reference, refine):
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


def _same_reference(recorded: str | None, reference: str | None, refine: bool) -> bool:
    """Whether a final's reference image (its job variant) is the one the choice wants."""
    if refine:
        return reference is not None and recorded == reference
    refined = (recorded or "").startswith(REFINE_PREFIX)
    return not refined or reference is None or recorded == reference


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
