"""What the render engine is asked to do and what it answers: plain, immutable values."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from falassets.engine.model import canonical_json

# fal's endpoints are named once, in lineage.passes; re-exported for the engine's callers.
from falassets.lineage.passes import EDIT as EDIT
from falassets.lineage.passes import TEXT_TO_IMAGE as TEXT_TO_IMAGE

Pass = Literal["draft", "final"]
OutcomeStatus = Literal["completed", "failed", "cancelled", "skipped"]


def job_key(endpoint: str, payload: dict[str, Any], variant: str = "") -> str:
    """Idempotency key: the same endpoint, input and variant is the same render (and bill)."""
    digest = hashlib.sha256()
    for part in (endpoint, canonical_json(payload), variant):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


@dataclass(frozen=True)
class RenderJob:
    """One image to render for one partition of one pass."""

    partition_key: str
    campaign: str
    prompt_id: str
    pass_name: Pass
    input: dict[str, Any]  # exactly what is sent to fal
    endpoint: str = TEXT_TO_IMAGE
    variant: str = ""  # anything else that makes two jobs different renders
    force: bool = False  # render again even if an identical job already completed

    @property
    def key(self) -> str:
        return job_key(self.endpoint, self.input, self.variant)


@dataclass(frozen=True)
class RenderOutcome:
    """The final word on one job. ``reused`` means it was answered from lineage, not billed."""

    job: RenderJob
    status: OutcomeStatus
    request_id: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    http_status: int | None = None
    image_path: Path | None = None
    thumbnail_path: Path | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    cost_usd: float = 0.0
    latency_s: float | None = None
    attempts: int = 0
    reused: bool = False
    request_ids: tuple[str, ...] = field(default=())  # every request id this job produced

    @property
    def ok(self) -> bool:
        return self.status == "completed"
