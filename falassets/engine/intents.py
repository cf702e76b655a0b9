"""A note written just before each submit, so a crash between "fal accepted it" and "the
request row is on disk" cannot turn into a second, billed request.

The engine appends ``sent`` before the POST and ``resolved`` once the outcome of the POST is
journalled (a request row, or certainty that nothing was accepted). A ``sent`` without a
``resolved`` therefore means a process died mid-submit: the next run looks that input up in
fal's request history before submitting it again. The notes live under ``state_dir()`` (not
in the lineage folder) because they are bookkeeping, not lineage. A ``sent`` note is fsynced
before the POST goes out: a SIGKILL keeps the kernel's copy anyway, but a host that loses
power (or an NFS client's cache of a shared volume) would drop it, and the next run would
submit the input again. A lost ``resolved`` note only costs a history look-up.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from falassets.lineage.journal import Journal, read_journal, utc_now

KIND = "intents"


@dataclass(frozen=True)
class OpenIntent:
    intent_id: str
    job_key: str
    sent_at: str
    run_id: str = ""  # the run that sent it: its bill is that run's spend, not the adopter's


class IntentLog:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._journal = Journal(self.directory, KIND)

    def sent(self, job_key: str, run_id: str = "") -> str:
        intent_id = uuid.uuid4().hex
        line = {"intent": intent_id, "phase": "sent", "job_key": job_key, "sent_at": utc_now()}
        self._journal.append({**line, "run_id": run_id}, durable=True)
        return intent_id

    def resolved(self, intent_id: str) -> None:
        self._journal.append({"intent": intent_id, "phase": "resolved"}, durable=False)

    def open_intents(self) -> dict[str, list[OpenIntent]]:
        """Unresolved submits of any process, by job key (the oldest first)."""
        sent: dict[str, OpenIntent] = {}
        resolved: set[str] = set()
        for line in read_journal(self.directory, KIND):
            intent_id = line.get("intent")
            if line.get("phase") == "sent" and line.get("job_key"):
                sent[intent_id] = OpenIntent(
                    intent_id, line["job_key"], line.get("sent_at", ""), line.get("run_id", "")
                )
            elif line.get("phase") == "resolved":
                resolved.add(intent_id)
        by_key: dict[str, list[OpenIntent]] = {}
        for intent_id, intent in sent.items():
            if intent_id not in resolved:
                by_key.setdefault(intent.job_key, []).append(intent)
        for intents in by_key.values():
            intents.sort(key=lambda i: i.sent_at)
        return by_key

    def close(self) -> None:
        self._journal.close()
