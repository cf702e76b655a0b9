"""Run the fault suite (``pytest -m faults``) and write its figures into docs/reliability.md.

Each scenario of the suite appends one JSON line of figures (see
``falassets_tests/engine/fault_support.py``) to a file named by ``FALASSETS_FAULT_FIGURES``; this
script sets that, runs the suite, times it, and replaces the block between the two markers in
docs/reliability.md with a table of the figures, the totals, the wall time and the command.

    .venv/bin/python bench/fault_matrix.py            # whole suite, table written
    .venv/bin/python bench/fault_matrix.py --no-write # print the table only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
BEGIN = "<!-- fault-matrix:begin -->"
END = "<!-- fault-matrix:end -->"
COLUMNS = [
    ("scenario", "scenario"),
    ("mode", "mode"),
    ("prompts", "prompts"),
    ("outcomes", "outcomes"),
    ("accepted", "ids accepted (emulator)"),
    ("recorded", "ids in lineage"),
    ("lost_ids", "lost ids"),
    ("billed", "billed"),
    ("double_billed", "double-billed"),
    ("expired_rebills", "expired re-bills"),
    ("wasted_usd", "wasted $"),
    ("lost_decisions", "lost decisions"),
]


def run_suite(figures: Path, extra: list[str]) -> tuple[int, float, str]:
    env = {**os.environ, "FALASSETS_FAULT_FIGURES": str(figures)}
    command = [sys.executable, "-m", "pytest", "-m", "faults", "-q", "-p", "no:cacheprovider"]
    started = time.monotonic()
    done = subprocess.run(
        command + extra, cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    wall = time.monotonic() - started
    tail = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    return done.returncode, wall, tail


def table(rows: list[dict]) -> str:
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        cells = []
        for name, _ in COLUMNS:
            value = row[name]
            if name == "outcomes":
                value = ", ".join(f"{k} {v}" for k, v in sorted(value.items()))
            elif name == "wasted_usd":
                value = f"{value:.2f}"
            cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    total = {
        n: sum(r[n] for r in rows)
        for n in (
            "prompts",
            "accepted",
            "recorded",
            "lost_ids",
            "billed",
            "double_billed",
            "expired_rebills",
            "lost_decisions",
        )
    }
    wasted = sum(r["wasted_usd"] for r in rows)
    lines.append(
        f"| **total** ({len(rows)} scenarios) | | {total['prompts']} | | {total['accepted']} | "
        f"{total['recorded']} | **{total['lost_ids']}** | {total['billed']} | "
        f"**{total['double_billed']}** | {total['expired_rebills']} | {wasted:.2f} | "
        f"**{total['lost_decisions']}** |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print, do not edit the doc")
    args, extra = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        figures = Path(tmp) / "figures.jsonl"
        code, wall, tail = run_suite(figures, extra)
        rows = (
            [json.loads(line) for line in figures.read_text().splitlines()]
            if figures.exists()
            else []
        )
    rows.sort(key=lambda r: (r["scenario"], r["mode"]))
    block = "\n".join(
        [
            BEGIN,
            f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}; `pytest -m faults`: **{tail}** in "
            f"**{wall:.0f} s** wall (command: `.venv/bin/python bench/fault_matrix.py`).",
            "",
            table(rows),
            END,
        ]
    )
    print(block)
    if not args.no_write:
        text = DOC.read_text()
        if BEGIN not in text or END not in text:
            print(f"{DOC} has no {BEGIN} ... {END} block; not written", file=sys.stderr)
            return 2
        head, _, rest = text.partition(BEGIN)
        _, _, tail_text = rest.partition(END)
        DOC.write_text(head + block + tail_text)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
