"""The engine against each alternative the emulator models where fal's documentation is
silent or where the seed reported otherwise (docs/fal-protocol.md): a user's batch must still
finish, with every request recorded and nothing billed twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from falassets.pipeline.resources import FalRenderer
from falassets_tests.engine.engine_support import billed_inputs, lineage_rows, make_jobs, render_all

RENDER_TIMEOUT_S = 6.0
ENGINE_OWNS = "engine relies on an undocumented behaviour (docs/fal-protocol.md); engine.py's owner"


def _engine_gap(reason: str) -> pytest.MarkDecorator:
    """A known engine gap: strict, so the fix flips it to a failure that says remove me."""
    return pytest.mark.xfail(strict=True, reason=f"{ENGINE_OWNS}: {reason}")


#: Knob sets fal might behave like; each must leave a batch completed before the engine's
#: render timeout: a stall runs into it, and the engine then cancels (the ledger shows it).
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
    renderer = FalRenderer(concurrency=4, render_timeout_s=RENDER_TIMEOUT_S)
    outcomes = await render_all(jobs, renderer)
    assert [o.status for o in outcomes] == ["completed"] * 4, [
        (o.status, o.error_type) for o in outcomes
    ]
    assert sim.ledger()["http"]["cancel"] == 0, "a request stalled into the render timeout"
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


async def test_a_failing_result_get_of_a_good_request_is_fetched_again(sim, data_dir: Path) -> None:
    """fal said COMPLETED without an error, so the request ran and was billed: a 500 on its
    result GET is the fetch failing, and resubmitting would bill the input twice."""
    sim.configure(result_5xx=2)
    jobs = make_jobs(3, tag="get")
    outcomes = await render_all(jobs, FalRenderer(concurrency=3, render_timeout_s=RENDER_TIMEOUT_S))
    assert [o.status for o in outcomes] == ["completed"] * 3, [
        (o.status, o.error_type) for o in outcomes
    ]
    assert sim.ledger()["totals"]["accepted"] == 3
    assert max(billed_inputs(sim.ledger()).values()) == 1


async def test_a_result_that_keeps_failing_is_collected_by_the_next_run(
    sim, data_dir: Path
) -> None:
    """Past the retry budget the row stays pending with the reason; the next run collects
    the same request once fal serves it, and nothing is submitted again."""
    sim.configure(result_5xx=1_000)
    jobs = make_jobs(1, tag="later")
    renderer = FalRenderer(concurrency=2, render_timeout_s=RENDER_TIMEOUT_S)
    (first,) = await render_all(jobs, renderer)
    assert (first.status, first.error_type) == ("failed", "internal_error")
    (row,) = lineage_rows().values()
    assert row["status"] == "pending" and row["error_type"] == "internal_error"

    sim.configure(result_5xx=0)
    (second,) = await render_all(jobs, renderer)
    assert second.status == "completed", (second.status, second.error_type)
    assert second.request_ids == first.request_ids
    assert sim.ledger()["totals"]["accepted"] == 1


async def test_a_request_that_failed_at_fal_is_still_rendered_again(sim, data_dir: Path) -> None:
    """The other side of the rule: a COMPLETED status with an error (a runner 500, not
    billed) makes the result's 500 the outcome, and a new request is safe."""
    jobs = make_jobs(1, words="SIM_5XX_ONCE")
    (outcome,) = await render_all(
        jobs, FalRenderer(concurrency=2, render_timeout_s=RENDER_TIMEOUT_S)
    )
    assert outcome.status == "completed", (outcome.status, outcome.error_type)
    assert sim.ledger()["totals"]["accepted"] == 2
    assert max(billed_inputs(sim.ledger()).values()) == 1
