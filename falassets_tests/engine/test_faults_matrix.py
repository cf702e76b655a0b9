"""The fault matrix (issue 6): every emulator fault, in queue and reject mode, against the real
engine and the real fal_client. Per scenario: the outcome per prompt, every accepted request
id in lineage, what fal billed, what was wasted, and no input billed twice (beyond the one
resubmission an expired result forces). Figures go to bench/fault_matrix.py when it runs us.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from falassets.engine.render_engine import FalAuthError
from falassets.engine.session import open_engine
from falassets.pipeline.resources import FalRenderer
from falassets_tests.engine.engine_support import FAST, lineage_rows, make_jobs, render_all
from falassets_tests.engine.fault_support import assert_promises, figures, record

pytestmark = pytest.mark.faults

MODES = {
    # emulator knobs, engine concurrency: in reject mode the engine asks for more than fal allows
    "queue": ({"mode": "queue", "concurrency": 10}, 4),
    "reject": ({"mode": "reject", "concurrency": 3}, 5),
}


@dataclass(frozen=True)
class Scenario:
    name: str
    prompts: int
    marked: dict[str, int]  # trigger word -> how many prompts carry it (from the first)
    expect: dict[str, int]  # outcome status -> count
    expect_errors: dict[str, int] = field(default_factory=dict)  # error_type -> count
    engine: dict[str, Any] = field(default_factory=dict)  # FalRenderer fields

    def jobs(self) -> list:
        words = [w for w, n in self.marked.items() for _ in range(n)]
        jobs = make_jobs(self.prompts, tag=self.name[:4])
        return [
            type(job)(**{**job.__dict__, "input": {**job.input, "prompt": _mark(job, words, i)}})
            for i, job in enumerate(jobs)
        ]


def _mark(job, words: list[str], i: int) -> str:
    return f"{job.input['prompt']} {words[i]}" if i < len(words) else job.input["prompt"]


SCENARIOS = [
    Scenario(
        "runner_5xx",
        12,
        {"SIM_5XX_ONCE": 3, "SIM_5XX": 1},
        {"completed": 11, "failed": 1},
        {"runner_server_error": 1},
    ),
    Scenario("ingress_503", 12, {"SIM_503": 4}, {"completed": 12}),
    Scenario("lost_submit", 12, {"SIM_LOSE_SUBMIT": 4}, {"completed": 12}),
    Scenario(
        "never_finishes",
        10,
        {"SIM_HANG": 2},
        {"completed": 8, "cancelled": 2},
        {"timeout": 2},
        {"render_timeout_s": 1.5},
    ),
    Scenario(
        "result_expired",
        10,
        {"SIM_EXPIRE_ONCE": 2, "SIM_EXPIRE": 1},
        {"completed": 9, "failed": 1},
        {"result_expired": 1},
    ),
    Scenario(
        "content_policy",
        10,
        {"forbidden": 3},
        {"completed": 7, "failed": 3},
        {"content_policy_violation": 3},
    ),
]


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
async def test_fault(scenario: Scenario, mode: str, sim, data_dir: Path) -> None:
    knobs, concurrency = MODES[mode]
    sim.configure(**knobs)
    jobs = scenario.jobs()

    renderer = FalRenderer(concurrency=concurrency, **scenario.engine)
    outcomes = await render_all(jobs, renderer)

    by_prompt = {o.job.prompt_id: o for o in outcomes}
    assert len(by_prompt) == len(jobs)
    statuses = {pid: o.status for pid, o in by_prompt.items()}
    fig = record(figures(scenario.name, mode, sim.ledger(), statuses))
    assert fig.outcomes == scenario.expect, fig
    errors: dict[str, int] = {}
    for o in outcomes:
        if not o.ok:
            errors[o.error_type] = errors.get(o.error_type, 0) + 1
    assert errors == scenario.expect_errors
    assert_promises(fig)
    # every request a job made is in lineage, with the exact input the model saw
    rows = lineage_rows()
    for o in outcomes:
        for request_id in o.request_ids:
            assert rows[request_id]["input"] == o.job.input
    ledger = sim.ledger()
    if mode == "reject":
        assert ledger["peak_running"] <= knobs["concurrency"]
    _check_scenario(scenario.name, ledger, outcomes, fig)


def _check_scenario(name: str, ledger: dict[str, Any], outcomes: list, fig) -> None:
    """What each fault must cost, request by request."""
    per_input: dict[str, list[dict[str, Any]]] = {}
    for entry in ledger["requests"]:
        per_input.setdefault(entry["input"]["prompt"], []).append(entry)
    if name == "runner_5xx":
        always = [p for p in per_input if p.endswith("SIM_5XX")]
        assert len(always) == 1 and len(per_input[always[0]]) == 4  # the retry budget, no more
        once = [p for p in per_input if p.endswith("SIM_5XX_ONCE")]
        assert all(len(per_input[p]) == 2 for p in once)
        assert fig.wasted_usd == 0  # 5xx are not billed
    if name in ("ingress_503", "lost_submit"):
        assert fig.accepted == fig.prompts == fig.billed  # one request and one bill each
        assert fig.wasted_usd == 0
    if name == "lost_submit":
        assert ledger["totals"]["submit_lost"] == 4
    if name == "never_finishes":
        hung = [e for e in ledger["requests"] if "hang" in e["faults"]]
        assert len(hung) == 2 and not any(e["billed"] for e in hung)
        assert all(e["cancel_requested"] for e in hung)
    if name == "result_expired":
        assert fig.expired_rebills == 3 and fig.wasted_usd > 0  # fal billed the expired ones
        assert fig.billed == 10 + 3
    if name == "content_policy":
        refused = [p for p in per_input if "forbidden" in p]
        assert all(len(per_input[p]) == 1 for p in refused)  # never retried
        assert fig.billed == 7


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_wrong_key_stops_the_batch_and_never_prints_the_key(
    mode: str, sim, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    knobs, concurrency = MODES[mode]
    sim.configure(**knobs, valid_key="fal-right-key-0123456789")
    wrong = "fal-wrong-key-9876543210"
    jobs = make_jobs(10, tag="key")
    seen = []
    with pytest.raises(FalAuthError) as raised:
        async with open_engine(
            run_id="wrong-key", fal_key=wrong, concurrency=concurrency, **FAST
        ) as engine:
            async for outcome in engine.render(jobs):
                seen.append(outcome)
    message = str(raised.value)
    assert "key" in message.lower() and wrong not in message
    assert wrong not in caplog.text
    ledger = sim.ledger()
    fig = record(figures("wrong_key", mode, ledger, {j.prompt_id: "stopped" for j in jobs}))
    assert fig.accepted == 0 and fig.billed == 0  # refused at the door: nothing to pay
    assert ledger["http"]["submit"] <= concurrency  # stopped at once, not once per job
    assert not seen
    assert_promises(fig)
    lines = "".join(p.read_text() for p in data_dir.rglob("*.jsonl"))
    assert wrong not in lines
