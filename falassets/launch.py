"""Launch a pass (draft or final) for a campaign as a real Dagster run in DAGSTER_HOME.

INTERFACE STUB: owned by the CLI work; signatures are the contract. The CLI's `run`, the
review page's "render winners" and "retry failed" all go through here, so every render goes
through the pipeline (lineage, partitions, run history), never a side door.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class PassResult:
    run_id: str
    succeeded: list[str]  # partition keys
    failed: list[str]


def run_pass(
    campaign: str,
    pass_name: Literal["draft", "final"],
    *,
    partition_keys: list[str] | None = None,
    concurrency: int | None = None,
    budget_usd: float | None = None,
) -> PassResult:
    """Run the pass now (in this process, as a Dagster run recorded in DAGSTER_HOME)."""
    raise NotImplementedError


def submit_pass(
    campaign: str,
    pass_name: Literal["draft", "final"],
    *,
    partition_keys: list[str] | None = None,
) -> str:
    """Start the pass in a background process and return its Dagster run id at once."""
    raise NotImplementedError
