"""Reviewers' decisions (pick / reject / undecided), durable and safe beside running renders.

Stored as append-only journals (``lineage/decisions-*.jsonl``, one per process), latest
decision wins. Journals rather than a database so the review page, the CLI and a run can
record and read at the same moment without a lock, and a decision is never lost to a crash:
it is fsynced before :func:`record_decisions` returns. The catalog's ``decisions`` and
``winners`` views read the same files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, cast

from falassets import settings
from falassets.campaigns import partition_key
from falassets.lineage.journal import Journal, latest_by, read_journal, utc_now
from falassets.lineage.schema import DECISIONS

Decision = Literal["pick", "reject", "undecided"]

KIND = "decisions"

log = logging.getLogger(__name__)

# The shapes campaigns.py guarantees; checked here too so a typo never becomes a decision.
_CAMPAIGN = re.compile(r"[a-z0-9][a-z0-9_]*")
_PROMPT_ID = re.compile(r"[a-z0-9][a-z0-9_-]*")
_SOURCE = re.compile(r"[a-z][a-z0-9_-]{0,31}")

_journals: dict[tuple[Path, int], Journal] = {}
_journals_lock = threading.Lock()


class DecisionError(ValueError):
    """A decision that cannot be recorded; nothing was written. The message says the fix."""


def record_decisions(
    campaign: str,
    prompt_ids: list[str],
    decision: Decision,
    *,
    source: str = "cli",
    known_prompt_ids: Iterable[str] | None = None,
    variants: Mapping[str, int] | None = None,
    known_variants: Mapping[str, int] | None = None,
) -> None:
    """Durably record one decision for each prompt (on disk when this returns).

    Everything is validated before anything is written, so a bad id records nothing. Pass
    ``known_prompt_ids`` (the campaign's prompt ids) to refuse ids the campaign does not have.
    Repeated ids in one call are recorded once. A pick is of one draft variant: ``variants``
    maps a prompt id to its chosen variant (1-based; absent: 1), ``known_variants`` to how
    many variants the prompt has, to refuse a variant beyond them.
    """
    _check(campaign, prompt_ids, decision, source, known_prompt_ids)
    chosen = _chosen(campaign, prompt_ids, decision, variants or {}, known_variants)
    unique = list(dict.fromkeys(prompt_ids))
    decided_at = utc_now()
    journal = _journal()
    for index, prompt_id in enumerate(unique):
        journal.append(
            {
                "campaign": campaign,
                "prompt_id": prompt_id,
                "partition_key": partition_key(campaign, prompt_id),
                "decision": decision,
                "variant": chosen.get(prompt_id),
                "source": source,
                "decided_at": decided_at,
            },
            # One fsync for the batch: it also flushes every line written before it.
            durable=index == len(unique) - 1,
        )


def current_decisions(campaign: str | None = None) -> dict[tuple[str, str], Decision]:
    """Latest decision per (campaign, prompt_id); prompts never decided are absent."""
    return {
        key: cast(Decision, record["decision"])
        for key, record in _latest(campaign).items()
        if record.get("decision") in DECISIONS
    }


def winners(campaign: str) -> list[str]:
    """Prompt ids whose latest decision is 'pick', in decision order."""
    return list(picks(campaign))


def picks(campaign: str) -> dict[str, int]:
    """Winners as (prompt id -> chosen draft variant, 1-based), in decision order."""
    found = [r for r in _latest(campaign).values() if r.get("decision") == "pick"]
    found.sort(key=lambda r: (str(r.get("decided_at") or ""), str(r.get("recorded_at") or "")))
    return {r["prompt_id"]: chosen_variant(r) for r in found}


def chosen_variants(campaign: str | None = None) -> dict[tuple[str, str], int]:
    """The chosen draft variant of every current pick, per (campaign, prompt_id)."""
    return {
        key: chosen_variant(record)
        for key, record in _latest(campaign).items()
        if record.get("decision") == "pick"
    }


def chosen_variant(record: Mapping[str, Any]) -> int:
    """A pick's variant; lines written before variants existed (no ``variant``) picked 1."""
    variant = record.get("variant")
    return variant if isinstance(variant, int) and not isinstance(variant, bool) else 1


def decisions_version(campaign: str | None = None) -> str:
    """An opaque marker that changes whenever a decision is recorded (for a sensor cursor).

    Without a campaign it only ``stat``s the journal files (append-only, so any new decision
    grows one): cheap enough to call on every sensor tick. With a campaign it reads the
    journals and changes only when that campaign's decisions do. Compare for equality only.
    """
    directory = settings.journal_dir()
    if campaign is None:
        sizes = sorted(
            (path.name, path.stat().st_size) for path in directory.glob(f"{KIND}-*.jsonl")
        )
        return hashlib.sha256(repr(sizes).encode()).hexdigest()[:16]
    count, last = 0, ""
    for record in read_journal(directory, KIND):
        if record.get("campaign") == campaign:
            count += 1
            last = max(last, str(record.get("recorded_at") or ""))
    return f"{count}:{last}"


def _latest(campaign: str | None) -> dict[tuple[str, str], dict[str, Any]]:
    records = (r for r in read_journal(settings.journal_dir(), KIND) if _well_formed(r))
    if campaign is not None:
        records = (r for r in records if r["campaign"] == campaign)
    return latest_by(records, "campaign", "prompt_id")


def _well_formed(record: Any) -> bool:
    """A line this module could have written; any other (hand-edited, another tool's, a bug
    elsewhere) is skipped and logged so one odd line never breaks the page or a sensor."""
    ok = (
        isinstance(record, dict)
        and isinstance(record.get("campaign"), str)
        and _CAMPAIGN.fullmatch(record["campaign"]) is not None
        and isinstance(record.get("prompt_id"), str)
        and _PROMPT_ID.fullmatch(record["prompt_id"]) is not None
        and isinstance(record.get("recorded_at", ""), str)
    )
    if not ok:
        _warn_once(f"{record!r:.200}")
    return ok


_warned: set[str] = set()


def _warn_once(shown: str) -> None:
    """Decisions are read on every poll of the page: say so once per odd line, not each time."""
    if shown not in _warned and len(_warned) < 100:
        _warned.add(shown)
        log.warning("skipped a decisions journal line that is not a decision: %s", shown)


def _check(
    campaign: Any,
    prompt_ids: Any,
    decision: Any,
    source: Any,
    known_prompt_ids: Iterable[str] | None,
) -> None:
    if decision not in DECISIONS:
        raise DecisionError(
            f"decision {decision!r} is not one of {', '.join(DECISIONS)}. "
            "Fix: use 'pick' to send a prompt to the final pass, 'reject' to drop it, "
            "'undecided' to clear an earlier decision."
        )
    if not isinstance(campaign, str) or not _CAMPAIGN.fullmatch(campaign):
        raise DecisionError(
            f"campaign {campaign!r} is not a campaign name. Fix: use the campaign file's stem "
            "as falassets shows it (lowercase letters, digits and '_'), e.g. 'spring'."
        )
    if isinstance(prompt_ids, str) or not isinstance(prompt_ids, list | tuple):
        raise DecisionError(
            f"prompt ids must be a list of ids, got {type(prompt_ids).__name__}. "
            f"Fix: pass [{prompt_ids!r}] for a single prompt."
        )
    if not prompt_ids:
        raise DecisionError(
            f"no prompt ids given for campaign {campaign!r}. Fix: name at least one."
        )
    bad = [p for p in prompt_ids if not isinstance(p, str) or not _PROMPT_ID.fullmatch(p)]
    if bad:
        raise DecisionError(
            f"campaign {campaign!r}: {_few(bad)} {'is' if len(bad) == 1 else 'are'} not a "
            "prompt id. Fix: use the ids from the "
            "campaign file's prompt_id column (lowercase letters, digits, '_' and '-')."
        )
    if known_prompt_ids is not None:
        known = set(known_prompt_ids)
        unknown = [p for p in prompt_ids if p not in known]
        if unknown:
            raise DecisionError(
                f"campaign {campaign!r} has no prompt {_few(unknown)}. Fix: check the ids "
                "against the campaign file (nothing was recorded)."
            )
    if not isinstance(source, str) or not _SOURCE.fullmatch(source):
        raise DecisionError(
            f"decision source {source!r} is not a short lowercase name. "
            "Fix: use 'review' for the review page or 'cli' for the command line."
        )


def _chosen(
    campaign: str,
    prompt_ids: list[str],
    decision: str,
    variants: Mapping[str, int],
    known_variants: Mapping[str, int] | None,
) -> dict[str, int]:
    """The variant each pick records (1 unless ``variants`` says), checked; {} for others."""
    if decision != "pick":
        return {}
    chosen: dict[str, int] = {}
    for prompt_id in prompt_ids:
        variant = variants.get(prompt_id, 1)
        if isinstance(variant, bool) or not isinstance(variant, int) or variant < 1:
            raise DecisionError(
                f"campaign {campaign!r}: variant {variant!r} of {prompt_id!r} is not a draft "
                "variant. Fix: name a variant by its number, 1 for the first draft "
                f"(e.g. {prompt_id}:2)."
            )
        most = (known_variants or {}).get(prompt_id)
        if most is not None and variant > most:
            raise DecisionError(
                f"campaign {campaign!r}: prompt {prompt_id!r} has {most} draft variant"
                f"{'s' if most != 1 else ''}, not {variant}. Fix: pick a variant from 1 to "
                f"{most} (nothing was recorded)."
            )
        chosen[prompt_id] = variant
    return chosen


def _few(values: list[Any]) -> str:
    shown = ", ".join(repr(v) for v in values[:5])
    more = f" and {len(values) - 5} more" if len(values) > 5 else ""
    return shown + more


def _journal() -> Journal:
    """This process's decisions journal (a forked child gets its own file)."""
    directory = settings.journal_dir()
    key = (directory, os.getpid())
    with _journals_lock:
        journal = _journals.get(key)
        if journal is None:
            journal = _journals[key] = _DurableJournal(directory, KIND)
        return journal


class _DurableJournal(Journal):
    """A Journal whose new file's directory entry is fsynced too: a decision written into a
    file the folder does not durably list yet would vanish with it on power loss."""

    _entry_synced = False

    def append(self, record: dict[str, Any], *, durable: bool = True) -> None:
        super().append(record, durable=durable)
        if durable and not self._entry_synced:
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._entry_synced = True
