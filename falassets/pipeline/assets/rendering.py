"""Render a range of partitions in one run and report each partition on its own.

The pattern (see the Dagster notes in the project reference): an async generator asset with
``output_required=False`` yields one ``AssetMaterialization`` per partition that really
rendered, as it completes, then raises ``dagster.Failure`` naming the partitions that did not.
Dagster then marks exactly those partitions failed, and Materialize… → Failed and missing picks
them up. Returning normally would mark every partition of the range materialized.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

import dagster as dg
from pydantic import Field

from falassets.engine.jobs import RenderJob, RenderOutcome
from falassets.engine.progress import format_progress
from falassets.engine.render_engine import FalAuthError
from falassets.pipeline.assets.images import inline_thumbnail
from falassets.pipeline.assets.lookup import Unrenderable
from falassets.pipeline.assets.pump import RenderPump
from falassets.pipeline.resources import FalRenderer, is_loopback, queue_host

PROGRESS_EVERY_S = 5.0
#: Start of the run-log line reporting Dagster's per-partition overhead (read by the benchmark).
EVENT_OVERHEAD_PREFIX = "Dagster event handling:"
_LISTED_FAILURES = 50  # failures named in the error text; the metadata table has them all
#: Failure metadata a launcher reads (``falassets.pipeline.launch.run_outcome``): every failed
#: partition as ``{key: {"error_type": ..., "message": ...}}``, and whether fal refused the key.
FAILURES_METADATA = "failures"
AUTH_ERROR_METADATA = "fal_auth_error"
_MESSAGE_CHARS = 200  # per failure in metadata: every failure is stored in the event log


class RenderConfig(dg.Config):
    """Run config shared by both render passes."""

    force: bool = Field(
        default=False,
        description="Render again even when an identical render already completed (billed).",
    )


def is_simulated(renderer: FalRenderer) -> bool:
    """Labelled as the engine labels lineage: no key, or a stand-in fal on loopback."""
    return not (renderer.fal_key or "").strip() or is_loopback(queue_host())


async def render_partitions(
    context: dg.AssetExecutionContext,
    renderer: FalRenderer,
    jobs: Mapping[str, RenderJob],
    unrenderable: Mapping[str, Unrenderable],
    *,
    extra_metadata: Mapping[str, Mapping[str, Any]] | None = None,
) -> AsyncIterator[dg.AssetMaterialization]:
    """Yield a materialization per rendered partition; raise Failure listing the rest."""
    asset_key = context.asset_key
    simulated = is_simulated(renderer)
    failures: dict[str, tuple[str, str]] = {
        key: (problem.error_type, problem.message) for key, problem in unrenderable.items()
    }
    for key, (error_type, message) in failures.items():
        context.log.error(f"{key}: {error_type}: {message}")
    pending = set(jobs)
    rendered = 0
    event_s = 0.0  # time Dagster spends storing our events (renders go on meanwhile)
    context.log.info(f"rendering {len(jobs)} partition(s) of {asset_key.to_user_string()}")
    if jobs:
        pump = RenderPump(
            renderer,
            list(jobs.values()),
            run_id=context.run.run_id,
            prepare=lambda outcome: outcome_metadata(outcome, simulated=simulated),
        )
        pump.start()
        next_progress = time.monotonic() + PROGRESS_EVERY_S
        try:
            while True:
                item = await asyncio.to_thread(pump.next, PROGRESS_EVERY_S)
                _relay_logs(context, pump)
                if time.monotonic() >= next_progress and (progress := pump.progress()):
                    context.log.info(format_progress(progress))
                    next_progress = time.monotonic() + PROGRESS_EVERY_S
                if item is None:
                    continue
                if item[0] == "done":
                    break
                if item[0] == "error":
                    if isinstance(item[1], FalAuthError):
                        raise _auth_failure(item[1], rendered) from None
                    raise item[1]
                _, outcome, metadata = item
                key = outcome.job.partition_key
                pending.discard(key)
                if outcome.ok:
                    rendered += 1
                    metadata.update((extra_metadata or {}).get(key, {}))
                    handed_over = time.perf_counter()
                    yield dg.AssetMaterialization(
                        asset_key=asset_key, partition=key, metadata=metadata
                    )
                    event_s += time.perf_counter() - handed_over
                else:
                    error_type = outcome.error_type or outcome.status
                    message = outcome.error_message or outcome.status
                    failures[key] = (error_type, message)
                    context.log.warning(f"{key}: {error_type}: {message}")
        finally:
            pump.stop()
            _relay_logs(context, pump)
            if progress := pump.progress():
                context.log.info(format_progress(progress))
            if rendered:
                context.log.info(
                    f"{EVENT_OVERHEAD_PREFIX} {event_s:.2f}s for {rendered} "
                    f"materializations ({1000 * event_s / rendered:.1f} ms each)"
                )
    for key in pending:
        failures[key] = ("no_outcome", "the render engine returned no outcome for this job")
    if failures:
        raise failure(failures, rendered=rendered)


def _auth_failure(exc: FalAuthError, rendered: int) -> dg.Failure:
    if exc.untrusted_host:  # its message names the fix
        reason = f"{exc}."
    else:
        reason = (
            f"fal refused the key: {exc}. Fix: set FAL_KEY to a valid key from "
            f"fal.ai/dashboard/keys, or unset it to use the emulator."
        )
    return dg.Failure(
        description=(
            f"{reason} {rendered} partition(s) rendered before the stop stay materialized."
        ),
        metadata={AUTH_ERROR_METADATA: True},
        allow_retries=False,
    )


def _relay_logs(context: dg.AssetExecutionContext, pump: RenderPump) -> None:
    while True:
        try:
            level, message = pump.logs.get_nowait()
        except queue.Empty:
            return
        (context.log.warning if level == "warning" else context.log.info)(message)


def failure(failures: Mapping[str, tuple[str, str]], *, rendered: int) -> dg.Failure:
    """A Failure whose text and metadata list every failed partition with its error type."""
    by_type = Counter(error_type for error_type, _ in failures.values())
    listed = sorted(failures)[:_LISTED_FAILURES]
    lines = [f"- {key}: {failures[key][0]}: {failures[key][1]}" for key in listed]
    if len(failures) > len(listed):
        lines.append(f"- ... and {len(failures) - len(listed)} more (see metadata)")
    summary = ", ".join(f"{n} {kind}" for kind, n in by_type.most_common())
    table = "| partition | error type | message |\n|---|---|---|\n" + "\n".join(
        f"| {key} | {kind} | {_cell(message)} |"
        for key, (kind, message) in sorted(failures.items())
    )
    return dg.Failure(
        description=(
            f"{len(failures)} partition(s) failed ({summary}); {rendered} rendered and "
            "materialized. Retry: in the Dagster UI Materialize… → Failed and missing → "
            "Launch backfill (one run per contiguous block of failed keys), or `falassets run` "
            "again:\n" + "\n".join(lines)
        ),
        metadata={
            "failed": len(failures),
            "rendered": rendered,
            "failed_by_error_type": dict(by_type),
            "failed_partitions": dg.MetadataValue.md(table),
            FAILURES_METADATA: dg.MetadataValue.json(
                {
                    key: {"error_type": kind, "message": message[:_MESSAGE_CHARS]}
                    for key, (kind, message) in sorted(failures.items())
                }
            ),
        },
        allow_retries=False,
    )


def outcome_metadata(outcome: RenderOutcome, *, simulated: bool) -> dict[str, Any]:
    """Small per-partition metadata: what a reviewer or an auditor looks for first."""
    metadata: dict[str, Any] = {
        "request_id": outcome.request_id or "",
        "cost_usd": round(outcome.cost_usd, 6),
        "latency_s": round(outcome.latency_s, 3) if outcome.latency_s is not None else 0.0,
        "image_path": dg.MetadataValue.path(outcome.image_location or ""),
        "image_uri": outcome.image_uri or "",
        "sha256": outcome.sha256 or "",
        "simulated": simulated,
        "reused": outcome.reused,
        "attempts": outcome.attempts,
        "endpoint": outcome.job.endpoint,
    }
    if outcome.width and outcome.height:
        metadata["size"] = f"{outcome.width}x{outcome.height}"
    if len(outcome.images) > 1:  # a draft of N variants: one request, N verified images
        metadata["variants"] = len(outcome.images)
        metadata["variant_images"] = dg.MetadataValue.json(
            [
                {
                    "variant": image["variant"],
                    "sha256": image["sha256"],
                    "image": image["image_path"],
                }
                for image in outcome.images
            ]
        )
    picture = outcome.thumbnail_location or outcome.image_location
    thumbnail = inline_thumbnail(picture, alt=outcome.job.prompt_id) if picture else None
    if thumbnail:
        metadata["thumbnail"] = dg.MetadataValue.md(thumbnail)
    return metadata


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:_MESSAGE_CHARS]
