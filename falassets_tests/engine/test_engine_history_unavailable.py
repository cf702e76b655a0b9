"""A lost submit answer when fal's request history cannot say whether fal got the request
(issue 11): absent (404), forbidden (403), down (503) or lagging. The job waits for the
history (``history_wait_s``), is never sent again on a guess (a second submit of an accepted
request is billed twice), says what to do, and ``falassets reconcile`` or ``--force`` settle it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from falassets.pipeline.resources import FalRenderer
from falassets_tests.cli.test_cli_support import run_cli
from falassets_tests.engine.engine_support import lineage_rows, make_jobs, render_all, wait_for

LOST = "SIM_LOSE_SUBMIT_ONCE"


def _accepted(sim) -> int:
    return sim.ledger()["totals"]["accepted"]


@pytest.mark.parametrize("history", ["absent", "forbidden", "unavailable"])
async def test_a_lost_submit_is_not_resent_while_history_cannot_answer(
    sim, data_dir: Path, capsys: pytest.CaptureFixture[str], history: str
) -> None:
    sim.configure(history=history)
    jobs = make_jobs(1, words=LOST)
    renderer = FalRenderer(concurrency=2)

    (outcome,) = await render_all(jobs, renderer, history_wait_s=0.5)  # no FalAuthError

    assert (outcome.status, outcome.error_type) == ("failed", "submit_unconfirmed")
    assert "falassets reconcile" in outcome.error_message and "--force" in outcome.error_message
    assert _accepted(sim) == 1  # fal has it; we did not send it again
    (row,) = lineage_rows().values()
    assert row["error_type"] == "submit_unconfirmed" and row["status"] == "failed"

    # A second run does not guess either: the submit is still unconfirmed.
    (again,) = await render_all(jobs, renderer, history_wait_s=0.5)
    assert again.error_type == "submit_unconfirmed" and _accepted(sim) == 1

    # fal's history answers again: reconcile records the request, the next run reuses it.
    sim.configure(history="on")
    code, out, err = await asyncio.to_thread(run_cli, capsys, "reconcile")
    assert code == 0, err
    assert "1 orphan request(s)" in out
    (reused,) = await render_all(jobs, renderer)
    assert reused.ok and reused.reused and _accepted(sim) == 1


async def test_force_submits_an_unconfirmed_job_again(sim, data_dir: Path) -> None:
    sim.configure(history="forbidden")
    jobs = make_jobs(1, words=LOST)
    (first,) = await render_all(jobs, FalRenderer(concurrency=2), history_wait_s=0.2)
    assert first.error_type == "submit_unconfirmed"

    forced = [dataclasses.replace(job, force=True) for job in jobs]
    # --force does not wait for a proof it has chosen to do without (history_wait_s is long)
    async with asyncio.timeout(60):
        (outcome,) = await render_all(forced, FalRenderer(concurrency=2), history_wait_s=3600)

    assert outcome.ok and _accepted(sim) == 2  # the user chose to risk a second bill


async def test_a_lagging_history_is_waited_for_not_guessed(sim, data_dir: Path) -> None:
    sim.configure(history_paused=True)  # fal's history lags behind submits
    jobs = make_jobs(1, words=LOST)

    async def catch_up_after_the_first_look_up() -> None:
        await asyncio.to_thread(
            wait_for, lambda: sim.ledger()["http"]["history"] >= 2, what="two look-ups"
        )
        await asyncio.to_thread(sim.configure, history_paused=False)

    (outcome,), _ = await asyncio.gather(
        render_all(jobs, FalRenderer(concurrency=2), history_wait_s=60.0),
        catch_up_after_the_first_look_up(),
    )

    assert outcome.ok, (outcome.error_type, outcome.error_message)
    assert _accepted(sim) == 1  # adopted from the history once it listed the request
    assert outcome.request_ids == (sim.ledger()["requests"][0]["request_id"],)
