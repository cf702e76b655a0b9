"""Reviewers' decisions: validated, durable, latest wins, readable by every process."""

from __future__ import annotations

from pathlib import Path

import pytest

from falassets import settings
from falassets.lineage import catalog, decisions
from falassets_tests.lineage.test_lineage_support import Child, run_python


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    monkeypatch.setenv("FALASSETS_DATA_DIR", str(root))
    return root


def journal_lines(root: Path) -> list[str]:
    folder = root / "lineage"
    if not folder.exists():
        return []
    return [line for p in folder.glob("decisions-*.jsonl") for line in p.read_text().splitlines()]


def test_latest_decision_wins(data_root: Path) -> None:
    decisions.record_decisions("spring", ["a", "b", "c"], "pick")
    decisions.record_decisions("spring", ["b"], "reject", source="review")
    decisions.record_decisions("spring", ["c"], "undecided")
    decisions.record_decisions("autumn", ["a"], "reject")

    assert decisions.current_decisions() == {
        ("spring", "a"): "pick",
        ("spring", "b"): "reject",
        ("spring", "c"): "undecided",
        ("autumn", "a"): "reject",
    }
    assert decisions.current_decisions("autumn") == {("autumn", "a"): "reject"}
    assert decisions.winners("spring") == ["a"]
    assert decisions.winners("autumn") == []


def test_winners_come_in_decision_order(data_root: Path) -> None:
    decisions.record_decisions("spring", ["m"], "pick")
    decisions.record_decisions("spring", ["z", "a"], "pick")
    decisions.record_decisions("spring", ["m"], "reject")
    decisions.record_decisions("spring", ["m"], "pick")

    assert decisions.winners("spring") == ["z", "a", "m"]


def test_each_line_names_its_partition_source_and_time(data_root: Path) -> None:
    decisions.record_decisions("spring", ["p-1", "p-1"], "pick", source="review")

    rows = catalog.query("SELECT * FROM decision_events")
    names, lines = rows
    assert len(lines) == 1  # a repeated id in one call is recorded once
    row = dict(zip(names, lines[0], strict=True))
    assert row["partition_key"] == "spring-p-1"
    assert (row["decision"], row["source"]) == ("pick", "review")
    assert row["decided_at"] <= row["recorded_at"]


def test_decisions_survive_the_process_and_other_processes_see_them(
    data_root: Path, tmp_path: Path
) -> None:
    recorded = run_python(
        """
        import json
        from falassets.lineage import decisions
        decisions.record_decisions("spring", ["a", "b"], "pick", source="review")
        print(json.dumps(True))
        """,
        data_dir=data_root,
        cwd=tmp_path,
    )
    assert recorded
    assert decisions.current_decisions("spring") == {
        ("spring", "a"): "pick",
        ("spring", "b"): "pick",
    }

    decisions.record_decisions("spring", ["b"], "reject")
    seen = run_python(
        """
        import json
        from falassets.lineage import decisions
        print(json.dumps(decisions.winners("spring")))
        """,
        data_dir=data_root,
        cwd=tmp_path,
    )
    assert seen == ["a"]


def test_two_processes_deciding_at_once_lose_nothing(data_root: Path, tmp_path: Path) -> None:
    reviewer = """
    import json, sys
    from falassets.lineage import decisions
    print("ready")
    name = sys.stdin.readline().strip()
    for n in range(100):
        decisions.record_decisions("spring", [f"{name}-{n}"], "pick", source="review")
    print(json.dumps(100))
    """
    children = [Child(reviewer, data_dir=data_root, cwd=tmp_path) for _ in range(2)]
    try:
        for child, name in zip(children, ("x", "y"), strict=True):
            child.send(name)
        assert [child.answer() for child in children] == [100, 100]
    finally:
        for child in children:
            child.kill()

    assert len(decisions.winners("spring")) == 200
    assert catalog.query("SELECT count(*) FROM winners WHERE campaign = 'spring'")[1] == [(200,)]


@pytest.mark.parametrize(
    ("campaign", "prompt_ids", "decision", "source", "says"),
    [
        ("spring", ["a"], "maybe", "cli", "'maybe' is not one of pick, reject, undecided"),
        ("spring", ["a"], "PICK", "cli", "Fix: use 'pick'"),
        ("Spring-2", ["a"], "pick", "cli", "'Spring-2' is not a campaign name"),
        ("spring", ["ok", "../etc"], "pick", "cli", "'../etc' is not a prompt id"),
        ("spring", ["a b", "C"], "pick", "cli", "'a b', 'C' are not a prompt id"),
        ("spring", "a", "pick", "cli", "Fix: pass ['a']"),
        ("spring", [], "pick", "cli", "no prompt ids given"),
        ("spring", ["a"], "pick", "", "Fix: use 'review'"),
    ],
)
def test_bad_input_is_refused_with_the_fix_and_records_nothing(
    data_root: Path, campaign, prompt_ids, decision, source, says: str
) -> None:
    decisions.record_decisions("spring", ["a"], "pick")
    before = journal_lines(data_root)

    with pytest.raises(decisions.DecisionError, match="Fix") as raised:
        decisions.record_decisions(campaign, prompt_ids, decision, source=source)

    assert says in str(raised.value)
    assert journal_lines(data_root) == before
    assert decisions.current_decisions() == {("spring", "a"): "pick"}


def test_ids_the_campaign_does_not_have_are_refused_when_known(data_root: Path) -> None:
    with pytest.raises(decisions.DecisionError, match="has no prompt 'typo'"):
        decisions.record_decisions("spring", ["a", "typo"], "pick", known_prompt_ids=["a", "b"])
    assert journal_lines(data_root) == []

    decisions.record_decisions("spring", ["a", "b"], "pick", known_prompt_ids=("a", "b"))
    assert decisions.winners("spring") == ["a", "b"]


def test_version_marker_changes_exactly_when_decisions_do(data_root: Path) -> None:
    empty_all, empty_spring = decisions.decisions_version(), decisions.decisions_version("spring")
    assert decisions.decisions_version() == empty_all

    decisions.record_decisions("spring", ["a"], "pick")
    after_all, after_spring = decisions.decisions_version(), decisions.decisions_version("spring")
    assert after_all != empty_all
    assert after_spring != empty_spring
    assert decisions.decisions_version() == after_all  # reading changes nothing

    decisions.record_decisions("autumn", ["a"], "pick")
    assert decisions.decisions_version() != after_all
    assert decisions.decisions_version("spring") == after_spring

    decisions.record_decisions("spring", ["a"], "pick")  # the same decision again still counts
    assert decisions.decisions_version("spring") != after_spring


def test_one_process_appends_to_one_journal_file(data_root: Path) -> None:
    for prompt_id in ("a", "b", "c"):
        decisions.record_decisions("spring", [prompt_id], "pick")

    # Non-empty files only: the catalog may keep an empty placeholder journal of each kind.
    files = [f for f in settings.journal_dir().glob("decisions-*.jsonl") if f.stat().st_size]
    assert len(files) == 1
    assert len(files[0].read_text().splitlines()) == 3
