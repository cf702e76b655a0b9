"""The render engine: a batch of jobs in, outcomes out as they complete.

INTERFACE STUB: owned by the engine work; signatures are the contract.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from falassets.fal.jobs import RenderJob, RenderOutcome


class FalAuthError(RuntimeError):
    """fal refused the key (401/403). Stops the whole batch; the message never holds the key."""


@dataclass(frozen=True)
class Progress:
    """A snapshot for progress displays (CLI bar, Dagster run log)."""

    total: int
    done: int
    failed: int
    in_flight: int
    queued: int
    spend_usd: float
    elapsed_s: float

    @property
    def renders_per_minute(self) -> float:
        return 60.0 * (self.done + self.failed) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        finished = self.done + self.failed
        if finished == 0:
            return None
        return (self.total - finished) * self.elapsed_s / finished


class RenderEngine:
    """Renders jobs through fal's queue with a machine-wide in-flight cap, retries by failure
    kind, crash-safe lineage, idempotent reuse, budget cap and verified downloads."""

    def progress(self) -> Progress:
        raise NotImplementedError

    async def render(self, jobs: Iterable[RenderJob]) -> AsyncIterator[RenderOutcome]:
        """Yield one outcome per job, in completion order. Raises FalAuthError at once on a
        wrong key. Jobs beyond the budget cap come back as status 'skipped' with
        error_type 'budget_exceeded'."""
        raise NotImplementedError
        yield  # pragma: no cover
