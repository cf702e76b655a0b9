"""What the render engine is asked to do and what it answers: plain, immutable values."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from falassets.engine.model import QUALITIES, canonical_json

# fal's endpoints are named once, in lineage.passes; re-exported for the engine's callers.
from falassets.lineage.passes import EDIT as EDIT
from falassets.lineage.passes import TEXT_TO_IMAGE as TEXT_TO_IMAGE
from falassets.storage.renders import location_of

Pass = Literal["draft", "final"]
OutcomeStatus = Literal["completed", "failed", "cancelled", "skipped"]


def job_key(endpoint: str, payload: dict[str, Any], variant: str = "", replay_of: str = "") -> str:
    """Idempotency key: the same endpoint, input and variant is the same render (and bill).

    A replay (``replay_of``) is a job of its own, so it never answers, resumes or adopts the
    pipeline's render of the same input, nor they it; every other key is unchanged by it."""
    digest = hashlib.sha256()
    parts = (endpoint, canonical_json(payload), variant)
    for part in parts + ((f"replay:{replay_of}",) if replay_of else ()):
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
    replay_of: str | None = None  # the request whose recorded input this job sends again

    @property
    def key(self) -> str:
        return job_key(self.endpoint, self.input, self.variant, self.replay_of or "")


class ReplayError(ValueError):
    """A recorded request that cannot be sent again as it was; the message says why."""


def replay_job(row: Mapping[str, Any], *, quality: str | None = None) -> RenderJob:
    """A job that sends a recorded request's exact input again (the ``requests`` row's
    ``input``, JSON as sent), linked to it by ``replay_of``; ``quality`` overrides that one
    field. ``force``: a replay always makes a new request, never answers from lineage."""
    request_id = row.get("request_id")
    payload = row.get("input")
    if isinstance(payload, str):  # the DuckDB view hands JSON back as text
        try:
            payload = json.loads(payload)
        except ValueError:
            payload = None
    if not isinstance(payload, dict) or not payload:
        raise ReplayError(f"request {request_id} has no recorded input to send again")
    endpoint = row.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise ReplayError(f"request {request_id} has no recorded endpoint")
    if quality is not None:
        if quality not in QUALITIES:
            raise ReplayError(f"quality must be one of {', '.join(QUALITIES)}, not {quality!r}")
        payload = {**payload, "quality": quality}
    pass_name = row.get("pass") if row.get("pass") in ("draft", "final") else "draft"
    return RenderJob(
        partition_key=str(row.get("partition_key") or ""),
        campaign=str(row.get("campaign") or "_replays"),
        prompt_id=str(row.get("prompt_id") or request_id),
        pass_name=pass_name,
        input=payload,
        endpoint=endpoint,
        variant=str(row.get("variant") or ""),
        force=True,
        replay_of=str(request_id),
    )


@dataclass(frozen=True)
class RenderOutcome:
    """The final word on one job. ``reused`` means it was answered from lineage, not billed."""

    job: RenderJob
    status: OutcomeStatus
    request_id: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    http_status: int | None = None
    image_path: Path | None = None  # the local file when renders are a plain folder
    thumbnail_path: Path | None = None
    image_uri: str | None = None  # where the render store has it (always, when completed)
    thumbnail_uri: str | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    cost_usd: float = 0.0
    latency_s: float | None = None
    attempts: int = 0
    reused: bool = False
    request_ids: tuple[str, ...] = field(default=())  # every request id this job produced
    # Every output image, variant 1 first (lineage.variants.request_images entries); the
    # image fields above are variant 1's. A draft of N variants completes with N images.
    images: tuple[dict[str, Any], ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def image_location(self) -> str | None:
        """What lineage's ``image_path`` says: the local path, else the URI."""
        return location_of(self.image_uri) or (str(self.image_path) if self.image_path else None)

    @property
    def thumbnail_location(self) -> str | None:
        return location_of(self.thumbnail_uri) or (
            str(self.thumbnail_path) if self.thumbnail_path else None
        )
