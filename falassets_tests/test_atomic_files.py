"""Files shared between hosts are replaced in one step, under a name no other writer uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from falassets.atomic_files import replace_atomically, write_text_atomically


def test_two_writers_with_one_pid_never_share_a_temporary_file(tmp_path: Path) -> None:
    """Two hosts' processes may have the same pid; a name made from the pid collided."""
    target = tmp_path / "state.json"
    seen: list[Path] = []

    def outer(temporary: Path) -> None:
        seen.append(temporary)
        temporary.write_text("outer")
        write_text_atomically(target, "inner")  # another writer, same pid, same moment

    replace_atomically(target, outer)
    assert target.read_text() == "outer"
    assert len(seen) == 1 and seen[0].parent == tmp_path and seen[0] != target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")

    def broken(temporary: Path) -> None:
        temporary.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomically(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
