"""`falassets replay REQUEST_ID`: the exact recorded input sent again as a new request, through
the engine (limiter, budget, journal, verified download), linked to the original in lineage
(``replay_of``) and never taken for the partition's render."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from falassets.engine.downloads import file_sha256
from falassets.engine.jobs import canonical_json
from falassets.engine.pricing import price_usd
from falassets.lineage import catalog, queries
from falassets.sim.control import SimProcess
from falassets_tests.cli.test_cli_support import run_cli, use_dagster_home, write_csv
from falassets_tests.engine.engine_support import make_jobs, render_all


def replays_of(request_id: str) -> list[dict]:
    rows = [row for row in queries.request_rows().values() if row["replay_of"] == request_id]
    return sorted(rows, key=lambda row: row["submitted_at"])


def billed_inputs(sim: SimProcess) -> list[str]:
    return [canonical_json(r["input"]) for r in sim.ledger()["requests"]]


def test_replay_of_a_failed_request_sends_its_exact_input_and_is_linked_in_lineage(
    sim: SimProcess, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    use_dagster_home(data_dir, monkeypatch)
    source = write_csv(
        data_dir / "incoming" / "spring.csv",
        {"hero_1": "a red bicycle SIM_5XX_ONCE", "hero_2": "a blue mug on an oak desk"},
    )
    code, out, err = run_cli(capsys, "run", str(source), "--plain")
    assert code == 0, (out, err)  # hero_1's first request failed at fal; its retry completed
    rows = queries.request_rows()
    (failed,) = [row for row in rows.values() if row["status"] == "failed"]
    draft_before = queries.latest_requests("spring", "draft")

    # `show` of the failure names the Dagster run that made it.
    code, out, _ = run_cli(capsys, "show", failed["request_id"], "--no-fal")
    assert code == 0
    assert "runner_server_error" in out
    assert f"Dagster run {failed['run_id']}: job draft_pass, SUCCESS" in out

    code, out, err = run_cli(capsys, "replay", failed["request_id"])

    assert code == 0, (out, err)
    assert "the recorded input exactly" in out
    assert f"Estimated cost ${price_usd(failed['input']):.4f}" in out
    assert "simulated on the emulator" in out
    (replay,) = replays_of(failed["request_id"])
    assert replay["status"] == "completed"
    assert replay["input"] == failed["input"]  # exactly what the failed request sent
    assert replay["endpoint"] == failed["endpoint"]
    assert billed_inputs(sim)[-1] == canonical_json(failed["input"])  # and what fal received
    assert sim.ledger()["totals"]["accepted"] == 4  # 2 prompts, 1 retry, 1 replay
    assert (replay["campaign"], replay["prompt_id"], replay["pass"]) == (
        "spring",
        "hero_1",
        "draft",
    )
    assert replay["run_id"].startswith("cli-replay-")
    assert replay["attempt"] == 1 and replay["simulated"] is True
    assert file_sha256(Path(replay["image_path"])) == replay["sha256"]  # verified download
    assert f"Replay {replay['request_id']}: completed (replay_of {failed['request_id']}" in out

    # An investigation, not the partition's render: the prompt's draft is still the pipeline's.
    assert replay["partition_key"] is None
    assert queries.latest_requests("spring", "draft") == draft_before
    # The DuckDB view has the link, in both directions through `show`.
    _, linked = catalog.query(
        "select request_id from requests where replay_of = ?", [failed["request_id"]]
    )
    assert linked == [(replay["request_id"],)]
    code, out, _ = run_cli(capsys, "show", replay["request_id"], "--no-fal")
    assert f"replay of       {failed['request_id']} (failed)" in out
    assert "(falassets' own id, outside Dagster)" in out
    code, out, _ = run_cli(capsys, "show", failed["request_id"], "--no-fal")
    assert "replays         1 request(s) replay this one" in out
    assert replay["request_id"] in out


def test_replay_of_a_completed_request_is_a_new_request_each_time_and_quality_changes_only_quality(
    sim: SimProcess, data_dir: Path, capsys
) -> None:
    (original,) = asyncio.run(render_all(make_jobs(1)))
    assert original.ok
    recorded = queries.request_rows()[original.request_id]

    code, out, err = run_cli(capsys, "replay", original.request_id)

    assert code == 0, (out, err)
    code, out, err = run_cli(capsys, "replay", original.request_id, "--quality", "medium")

    assert code == 0, (out, err)
    assert "the recorded input with quality medium (was low)" in out
    first, second = replays_of(original.request_id)  # never answered from lineage
    assert len({original.request_id, first["request_id"], second["request_id"]}) == 3
    assert first["input"] == recorded["input"]
    assert second["input"] == {**recorded["input"], "quality": "medium"}
    assert second["cost_usd"] == pytest.approx(price_usd(second["input"]))
    assert billed_inputs(sim)[1:] == [
        canonical_json(recorded["input"]),
        canonical_json({**recorded["input"], "quality": "medium"}),
    ]
    assert queries.request_rows()[original.request_id] == recorded  # the original is untouched
    assert all(row["status"] == "completed" for row in (first, second))


def test_the_budget_cap_stops_a_replay_before_it_is_sent(
    sim: SimProcess, data_dir: Path, capsys
) -> None:
    (original,) = asyncio.run(render_all(make_jobs(1)))

    code, out, err = run_cli(capsys, "replay", original.request_id, "--budget-usd", "0.005")

    assert code == 1, (out, err)
    assert "skipped" in out and "budget_exceeded" in out
    assert sim.ledger()["totals"]["accepted"] == 1
    assert replays_of(original.request_id) == []


def test_with_a_key_and_no_terminal_a_replay_needs_yes_and_sends_nothing(
    sim: SimProcess, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    (original,) = asyncio.run(render_all(make_jobs(1)))
    monkeypatch.setenv("FAL_KEY", "test-key-never-sent")

    code, out, err = run_cli(capsys, "replay", original.request_id)

    assert code == 2
    assert "billed by fal" in out  # the price is printed before the refusal
    assert "pass --yes" in err and "Nothing was submitted" in err
    assert "test-key-never-sent" not in out + err
    assert sim.ledger()["totals"]["accepted"] == 1


def test_an_unknown_id_is_refused_with_exit_2(sim: SimProcess, data_dir: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "replay", "not-a-request", "--yes")

    assert code == 2
    assert "no request 'not-a-request' in lineage" in err
    assert sim.ledger()["totals"]["accepted"] == 0
