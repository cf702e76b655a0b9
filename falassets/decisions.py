"""Reviewers' decisions (pick / reject / undecided), durable and safe beside running renders.

INTERFACE STUB: owned by the lineage work; signatures are the contract.
Stored as append-only journals (``lineage/decisions-*.jsonl``), latest decision wins.
"""

from __future__ import annotations

from typing import Literal

Decision = Literal["pick", "reject", "undecided"]


def record_decisions(
    campaign: str, prompt_ids: list[str], decision: Decision, *, source: str = "cli"
) -> None:
    """Durably record one decision for each prompt (on disk when this returns)."""
    raise NotImplementedError


def current_decisions(campaign: str | None = None) -> dict[tuple[str, str], Decision]:
    """Latest decision per (campaign, prompt_id); prompts never decided are absent."""
    raise NotImplementedError


def winners(campaign: str) -> list[str]:
    """Prompt ids whose latest decision is 'pick', in decision order."""
    raise NotImplementedError
