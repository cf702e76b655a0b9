"""The note written before each submit (engine/intents.py) is what stops a crash between "fal
accepted it" and "its row is on disk" from billing an input twice. A host that loses power
keeps only what was fsynced, so the note must be on disk before the POST leaves."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import pytest

from falassets_tests.engine.engine_support import make_jobs, render_all


async def test_each_submit_note_is_fsynced_before_fal_receives_the_submit(
    sim, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[tuple[float, str]] = []
    fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        fsync(fd)
        synced.append((time.time(), os.readlink(f"/proc/self/fd/{fd}")))

    monkeypatch.setattr(os, "fsync", recording_fsync)
    outcomes = await render_all(make_jobs(3, tag="note"))

    assert [o.status for o in outcomes] == ["completed"] * 3
    notes = [at for at, path in synced if Path(path).name.startswith("intents-")]
    received = sorted(
        datetime.fromisoformat(r["submitted_at"]).timestamp() for r in sim.ledger()["requests"]
    )
    assert len(notes) == len(received) == 3
    # the emulator runs on this machine's clock: each submit arrived after a note was on disk
    assert all(note <= arrival for note, arrival in zip(sorted(notes), received, strict=True))
