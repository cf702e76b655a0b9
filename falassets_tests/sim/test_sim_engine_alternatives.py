"""The engine against each alternative the emulator models where fal's documentation is
silent or where the seed reported otherwise (docs/fal-protocol.md): a user's batch must still
finish, with every request recorded and nothing billed twice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from falassets.pipeline.resources import FalRenderer
from falassets_tests.engine.engine_support import billed_inputs, lineage_rows, make_jobs, render_all

RENDER_TIMEOUT_S = 6.0
ENGINE_OWNS = "engine relies on an undocumented behaviour (docs/fal-protocol.md); engine.py's owner"


def _engine_gap(reason: str) -> pytest.MarkDecorator:
    """A known engine gap: strict, so the fix flips it to a failure that says remove me."""
    return pytest.mark.xfail(strict=True, reason=f"{ENGINE_OWNS}: {reason}")


#: Knob sets fal might behave like; each must leave a batch completed, long before the
#: engine's render timeout (a stall until the timeout is a failure too).
ALTERNATIVES = [
    pytest.param({"stream": "absent_404"}, id="stream_absent_404"),
    pytest.param({"stream": "absent_405"}, id="stream_absent_405"),
    pytest.param({"stream": "broken"}, id="stream_broken"),
    pytest.param({"stream": "idle"}, id="stream_idle"),
    pytest.param({"history_finished_only": True}, id="history_finished_only"),
    pytest.param({"cancel_codes": "all_200"}, id="cancel_codes_all_200"),
    pytest.param({"early_result": "404_not_found"}, id="early_result_404"),
    pytest.param({"mode": "reject", "concurrency": 2}, id="reject_mode"),
]


@pytest.mark.parametrize("knobs", ALTERNATIVES)
async def test_a_batch_completes_under_each_alternative(sim, data_dir: Path, knobs) -> None:
    sim.configure(**knobs)
    jobs = make_jobs(4, tag="alt")
    started = time.monotonic()
    renderer = FalRenderer(concurrency=4, render_timeout_s=RENDER_TIMEOUT_S)
    outcomes = await render_all(jobs, renderer)
    elapsed = time.monotonic() - started
    assert [o.status for o in outcomes] == ["completed"] * 4, [
        (o.status, o.error_type) for o in outcomes
    ]
    assert elapsed < RENDER_TIMEOUT_S / 2, f"stalled {elapsed:.1f} s (renders take ~20 ms)"
    assert max(billed_inputs(sim.ledger()).values()) == 1
    assert all(r["status"] == "completed" for r in lineage_rows().values())


@pytest.mark.parametrize("knob", ["404_expired", "410_gone", "404_not_found"])
async def test_an_expired_result_is_rendered_again_once(sim, data_dir: Path, knob) -> None:
    sim.configure(expired_result=knob)
    jobs = make_jobs(1, words="SIM_EXPIRE_ONCE")
    (outcome,) = await render_all(
        jobs, FalRenderer(concurrency=2, render_timeout_s=RENDER_TIMEOUT_S)
    )
    assert outcome.status == "completed", (outcome.status, outcome.error_type)
    assert sim.ledger()["totals"]["accepted"] == 2


@pytest.mark.parametrize(
    "knob",
    [
        pytest.param({"history": "absent"}, id="absent"),
        pytest.param({"history": "forbidden"}, id="forbidden"),
        pytest.param({"history": "unavailable"}, id="unavailable"),
    ],
)
async def test_a_lost_submit_without_history_is_never_sent_twice(sim, data_dir: Path, knob) -> None:
    """Without a history nothing proves fal lacks the request: the job says so and stops
    (test_engine_history_unavailable.py: reconcile and --force settle it)."""
    sim.configure(**knob)
    jobs = make_jobs(1, words="SIM_LOSE_SUBMIT_ONCE")
    (outcome,) = await render_all(
        jobs, FalRenderer(concurrency=2, render_timeout_s=RENDER_TIMEOUT_S), history_wait_s=0.3
    )
    assert (outcome.status, outcome.error_type) == ("failed", "submit_unconfirmed")
    assert sim.ledger()["totals"]["accepted"] == 1
