"""`falassets run`, `pick` and `lineage` end to end on the emulator, through real Dagster runs
in a DAGSTER_HOME per test: exit statuses, what is sent to fal (the emulator's ledger), and
what Dagster shows per partition."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from falassets.engine.pricing import price_usd
from falassets.pipeline import launch
from falassets_tests.cli.test_cli_support import (
    partition_statuses,
    run_cli,
    use_dagster_home,
    write_csv,
)

PROMPTS = {
    "hero_1": "a red bicycle against a brick wall",
    "hero_2": "a blue mug on an oak desk",
    "hero_3": "a green forest trail in fog",
    "hero_4": "an orange cat asleep on a windowsill",
}


@pytest.fixture
def home(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_dagster_home(data_dir, monkeypatch)


def keys(*prompt_ids: str) -> list[str]:
    return [f"spring-{prompt_id}" for prompt_id in prompt_ids or PROMPTS]


def test_clean_campaign_exits_0_and_an_unchanged_rerun_sends_nothing(
    sim, data_dir, home, capsys
) -> None:
    source = write_csv(data_dir / "incoming" / "spring.csv", PROMPTS)

    code, out, err = run_cli(capsys, "run", str(source), "--plain")

    assert code == 0, (out, err)
    ledger = sim.ledger()
    assert ledger["totals"]["accepted"] == len(PROMPTS)
    assert {r["input"]["prompt"] for r in ledger["requests"]} == set(PROMPTS.values())
    assert {r["input"]["quality"] for r in ledger["requests"]} == {"low"}
    assert (data_dir / "campaigns" / "spring.csv").read_bytes() == source.read_bytes()
    assert set(partition_statuses("draft_renders", keys()).values()) == {"MATERIALIZED"}
    assert f"{len(PROMPTS)} succeeded, 0 failed" in out
    assert "done" in err  # progress lines

    code, out, _ = run_cli(capsys, "run", str(source), "--plain")

    assert code == 0
    assert "Nothing to render" in out
    assert sim.ledger()["totals"]["accepted"] == len(PROMPTS)

    # Editing one prompt renders that prompt only (the file at the same path is the new version).
    write_csv(source, {**PROMPTS, "hero_2": "a purple mug on an oak desk"})
    code, out, _ = run_cli(capsys, "run", str(source), "--plain")
    assert code == 0, out
    requests = sim.ledger()["requests"]
    assert len(requests) == len(PROMPTS) + 1
    assert requests[-1]["input"]["prompt"] == "a purple mug on an oak desk"


def test_dry_run_prints_cost_and_time_and_sends_nothing(sim, data_dir, home, capsys) -> None:
    source = write_csv(data_dir / "incoming" / "spring.csv", PROMPTS, size="square_hd")
    expected = len(PROMPTS) * price_usd({"image_size": "square_hd", "quality": "low"})

    code, out, _ = run_cli(capsys, "run", str(source), "--dry-run", "--concurrency", "2")

    assert code == 0
    assert f"${expected:,.2f}" in out
    assert f"would render           : {len(PROMPTS)}" in out
    assert "estimated time" in out
    assert "Nothing was rendered" in out
    assert sim.ledger()["totals"]["accepted"] == 0
    assert not (data_dir / "campaigns").exists()  # not even staged
    assert not home.exists()


def test_a_link_re_pointed_at_a_new_export_is_the_same_campaign_staged_as_a_copy(
    data_dir, tmp_path_factory
) -> None:
    """``spring.csv -> export_v1.csv``, later ``-> export_v2.csv``: the campaign keeps the
    link's name and the new export is its next version (no --replace), copied as a file."""
    from falassets.cli.run import resolve_campaign_file, stage

    exports = tmp_path_factory.mktemp("exports")
    link = exports / "spring.csv"
    staged = data_dir / "campaigns" / "spring.csv"
    for version, prompt in (("v1", "a red bicycle"), ("v2", "a blue bicycle")):
        target = write_csv(exports / f"export_{version}.csv", {"hero_1": prompt})
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        source = resolve_campaign_file(str(link))
        assert source == link

        assert stage(source, "spring", replace=False) == staged
        assert not staged.is_symlink() and staged.read_bytes() == target.read_bytes()


def test_failed_renders_exit_1_and_are_listed_with_their_error_type(
    sim, data_dir, home, capsys
) -> None:
    sim.configure(policy_word="forbidden")
    prompts = {**PROMPTS, "refused": "a forbidden lighthouse", "broken": "a boat SIM_5XX at dawn"}
    source = write_csv(data_dir / "incoming" / "spring.csv", prompts)

    code, out, err = run_cli(capsys, "run", str(source), "--plain")

    assert code == 1, (out, err)
    failed_lines = [line.strip() for line in err.splitlines() if line.startswith("  spring-")]
    assert {line.split(":")[0] for line in failed_lines} == {"spring-refused", "spring-broken"}
    assert any(line.startswith("spring-refused: content_policy_violation") for line in failed_lines)
    assert "Retry:" in err
    state = partition_statuses("draft_renders", keys(*prompts))
    assert {k for k, s in state.items() if s == "FAILED"} == {"spring-refused", "spring-broken"}
    assert {k for k, s in state.items() if s == "MATERIALIZED"} == set(keys())

    # The retry the message suggests sends only the failed prompts again.
    before = sim.ledger()["totals"]["accepted"]
    code, _, err = run_cli(capsys, "run", "spring", "--plain")
    assert code == 1
    retried = sim.ledger()["requests"][before:]
    assert {r["input"]["prompt"] for r in retried} == {prompts["refused"], prompts["broken"]}


def test_an_untrusted_fal_host_stops_the_pass_with_exit_2_and_the_fix(
    sim, data_dir, home, capsys, monkeypatch
) -> None:
    import certifi

    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())  # a bundle without the emulator's CA
    source = write_csv(data_dir / "incoming" / "spring.csv", PROMPTS)

    code, out, err = run_cli(capsys, "run", str(source), "--plain")

    assert code == 2, (out, err)
    assert "certificate is not trusted" in err and "Fix: point SSL_CERT_FILE" in err
    assert "0 succeeded" in out
    assert sim.ledger()["totals"]["accepted"] == 0
    assert set(partition_statuses("draft_renders", keys()).values()) == {"FAILED"}


def test_pick_then_final_pass_renders_exactly_the_winners_and_lineage_shows_it(
    sim, data_dir, home, capsys
) -> None:
    source = write_csv(data_dir / "incoming" / "spring.csv", PROMPTS)
    assert run_cli(capsys, "run", str(source), "--plain")[0] == 0
    drafts = sim.ledger()["totals"]["accepted"]

    code, out, _ = run_cli(capsys, "pick", "spring", "hero_2", "hero_4")
    assert code == 0, out
    code, out, err = run_cli(
        capsys, "run", "spring", "--pass", "final", "--mode", "refine", "--plain"
    )

    assert code == 0, (out, err)
    finals = sim.ledger()["requests"][drafts:]
    assert sorted(r["input"]["prompt"] for r in finals) == sorted(
        [PROMPTS["hero_2"], PROMPTS["hero_4"]]
    )
    assert {r["endpoint"] for r in finals} == {"openai/gpt-image-2/edit"}
    assert all(r["input"]["quality"] == "high" and r["input"]["image_urls"] for r in finals)
    state = partition_statuses("final_renders", keys("hero_2", "hero_4"))
    assert set(state.values()) == {"MATERIALIZED"}

    code, out, _ = run_cli(capsys, "lineage")
    assert code == 0
    lines = [line.split() for line in out.splitlines()]
    assert ["spring", "draft", str(len(PROMPTS)), str(len(PROMPTS))] == lines[2][:4]
    assert lines[3][:4] == ["spring", "final", "2", "2"]

    code, out, _ = run_cli(
        capsys, "lineage", "select prompt_id from requests where pass = 'final' order by 1"
    )
    assert code == 0
    assert out.split()[2:4] == ["hero_2", "hero_4"] and "(2 rows)" in out

    code, _, err = run_cli(capsys, "lineage", "delete from requests")
    assert code == 2 and "SQL error" in err


@pytest.mark.timeout(420)
def test_submit_pass_returns_at_once_and_renders_on_a_background_thread_of_this_process(
    sim, data_dir, home, capsys
) -> None:
    """The review page's launch path: the pipeline's own launch function on a thread (no
    `falassets` subprocess), its runs tagged with the launch id it returned."""
    import threading

    write_csv(data_dir / "campaigns" / "spring.csv", PROMPTS)

    launch_id = launch.submit_pass("spring", "draft", partition_keys=keys("hero_1", "hero_3"))

    [worker] = [t for t in threading.enumerate() if t.name == f"falassets-pass-{launch_id[:8]}"]
    worker.join(timeout=360)  # two Dagster runs; a loaded 2-core machine needs minutes
    assert not worker.is_alive(), "the background pass did not finish"
    result = launch.launch_result(launch_id)
    log = launch.launch_log_path(launch_id).read_text()
    assert result is not None and result["exit_code"] == 0, log
    instance = dg.DagsterInstance.get()
    tagged = instance.get_run_records(dg.RunsFilter(tags={launch.LAUNCH_TAG: launch_id}))
    assert {record.dagster_run.run_id for record in tagged} >= set(result["run_ids"])
    # hero_1 and hero_3 are not neighbours (hero_2 is not up to date): one run each.
    assert len(result["run_ids"]) == 2
    for run_id in result["run_ids"]:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert f"run {run_id}: 1 partition(s)" in log
    assert sorted(r["input"]["prompt"] for r in sim.ledger()["requests"]) == sorted(
        [PROMPTS["hero_1"], PROMPTS["hero_3"]]
    )
    state = partition_statuses("draft_renders", keys())
    assert state == {
        "spring-hero_1": "MATERIALIZED",
        "spring-hero_2": "MISSING",
        "spring-hero_3": "MATERIALIZED",
        "spring-hero_4": "MISSING",
    }
