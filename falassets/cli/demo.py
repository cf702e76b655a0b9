"""`falassets demo`: the whole two-pass flow end to end, then where to look.

Writes a generated campaign (subjects x colours x settings, deterministic, so thumbnails
differ), renders drafts, picks some winners automatically (decisions with source 'demo'),
renders the finals (refine by default: the chosen draft goes to the edit endpoint), builds
the campaign report and prints where everything is.

Why a private emulator: without FAL_KEY the demo starts its own emulator on a free port with
a time scale (default 0.2: a ~1.5 s draft takes ~0.3 s), so it is quick and leaves the
built-in emulator (which `falassets dev` and `review` may be using) alone. fal_client reads
``FAL_QUEUE_RUN_HOST`` once, at import, so the passes run as ``falassets run`` subprocesses
whose environment points at that emulator; they are the same command a user would type.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from falassets import settings
from falassets.cli.errors import UserError
from falassets.lineage.passes import DEFAULT_CONCURRENCY, DRAFT, FINAL
from falassets.storage.renders import location_of, renders_store

CAMPAIGN = "demo"

SUBJECTS = [
    "vintage bicycle",
    "ceramic coffee mug",
    "rain jacket",
    "desk lamp",
    "pair of running shoes",
    "leather backpack",
    "wristwatch",
    "potted cactus",
    "electric guitar",
    "sailboat",
    "armchair",
    "teapot",
    "skateboard",
    "camera",
    "bowl of strawberries",
    "hot air balloon",
    "paper lantern",
    "typewriter",
    "surfboard",
    "owl",
]
COLOURS = ["red", "blue", "green", "yellow", "orange", "purple", "teal", "pink", "white", "black"]
SETTINGS = [
    "on a sunlit brick wall, morning light",
    "in a foggy pine forest, cinematic wide shot",
    "on a marble counter, top-down studio shot",
    "on a wet city street at night, neon reflections",
    "on a sandy beach at golden hour",
    "in a minimalist white studio, soft shadows",
    "on a snowy mountain ridge under a clear sky",
    "in a cosy library with warm lamplight",
]
SIZES = ["landscape_4_3", "square_hd", "landscape_16_9", "portrait_4_3"]
FORMATS = ["jpeg", "png", "webp"]


def demo_rows(count: int) -> list[dict[str, str]]:
    """``count`` varied prompts; the same count always gives the same rows."""
    rows = []
    for index in range(count):
        subject = SUBJECTS[index % len(SUBJECTS)]
        colour = COLOURS[(index // len(SUBJECTS) + index) % len(COLOURS)]
        scene = SETTINGS[(index * 3 + index // len(SUBJECTS)) % len(SETTINGS)]
        slug = subject.replace("pair of ", "").replace("bowl of ", "").replace(" ", "_")
        rows.append(
            {
                "id": f"p{index + 1:04d}_{slug}",
                "prompt": f"A {colour} {subject} {scene}, product photograph",
                "image_size": SIZES[index % len(SIZES)],
                "output_format": FORMATS[(index // 7) % len(FORMATS)],
                "subject": subject,
                "colour": colour,
            }
        )
    return rows


def demo_csv(count: int) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(demo_rows(1)[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(demo_rows(count))
    return buffer.getvalue().encode("utf-8")


def _marker_path() -> Path:
    return settings.state_dir() / "demo_campaign.sha256"


def write_demo_campaign(count: int) -> Path:
    """Write ``demo.csv`` into the campaigns folder, refusing to overwrite a user's own file
    of that name (one the demo did not write)."""
    folder = settings.campaigns_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{CAMPAIGN}.csv"
    content = demo_csv(count)
    if path.exists():
        current = hashlib.sha256(path.read_bytes()).hexdigest()
        ours = _marker_path().read_text().strip() if _marker_path().exists() else None
        if current != ours and path.read_bytes() != content:
            raise UserError(
                f"{path} exists and was not written by the demo. Fix: move it away, or run the "
                "demo with another FALASSETS_DATA_DIR"
            )
    for other in (".jsonl", ".parquet"):
        if (folder / f"{CAMPAIGN}{other}").exists():
            raise UserError(
                f"{folder / (CAMPAIGN + other)} exists: the demo needs the campaign name "
                f"'{CAMPAIGN}'. Fix: move it away, or use another FALASSETS_DATA_DIR"
            )
    if not path.exists() or path.read_bytes() != content:
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_bytes(content)
        os.replace(temporary, path)
    _marker_path().parent.mkdir(parents=True, exist_ok=True)
    _marker_path().write_text(hashlib.sha256(content).hexdigest() + "\n")
    return path


def choose_winners(completed: list[str], count: int) -> list[str]:
    """``count`` ids spread evenly over the completed drafts (deterministic)."""
    if count <= 0 or not completed:
        return []
    if count >= len(completed):
        return list(completed)
    step = len(completed) / count
    return [completed[int(index * step)] for index in range(count)]


def estimated_cost(count: int, winners: int) -> float:
    from falassets.engine.pricing import price_usd

    rows = demo_rows(count)
    drafts = sum(price_usd({"image_size": r["image_size"], "quality": DRAFT.quality}) for r in rows)
    picked = choose_winners([r["image_size"] for r in rows], winners)
    finals = sum(price_usd({"image_size": size, "quality": FINAL.quality}) for size in picked)
    return round(drafts + finals, 2)


def _run_pass(argv: list[str], env: dict[str, str]) -> int:
    command = [sys.executable, "-m", "falassets.cli", "run", *argv]
    return subprocess.run(command, env=env, check=False).returncode


def _heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


def command_demo(args: argparse.Namespace) -> int:
    from falassets.lineage import decisions, queries
    from falassets.pipeline import launch

    if args.prompts < 1 or args.winners < 0:
        raise UserError("--prompts must be at least 1 and --winners at least 0")
    if args.time_scale <= 0:
        raise UserError("--time-scale must be more than 0")
    real = not settings.is_simulated()
    if real and not args.real:
        raise UserError(
            f"FAL_KEY is set, so the demo would render on fal.ai and spend about "
            f"${estimated_cost(args.prompts, args.winners):,.2f} ({args.prompts} drafts at low, "
            f"{args.winners} finals at high). Fix: unset FAL_KEY to use the emulator, or pass "
            "--real to spend the money"
        )
    started = time.monotonic()
    path = write_demo_campaign(args.prompts)
    print(f"Demo campaign: {path} ({args.prompts} prompts)")
    env = dict(os.environ)
    env["FALASSETS_DATA_DIR"] = str(settings.data_dir())
    env["DAGSTER_HOME"] = str(launch.prepare_dagster_home())
    sim = None
    try:
        if not real:
            from falassets.sim.control import SimProcess

            sim = SimProcess.start("--time-scale", str(args.time_scale), port=0)
            env.update(sim.env())
            print(
                f"The demo's own emulator on {sim.host} (time scale {args.time_scale:g}; "
                "everything simulated; stopped when the demo ends, the built-in one on "
                "FALASSETS_SIM_PORT is left alone)"
            )
        common = ["--concurrency", str(args.concurrency)]
        if args.plain:
            common.append("--plain")

        _heading(f"1/4 draft pass: {args.prompts} prompts at quality=low")
        code = _run_pass([str(path), "--pass", "draft", *common], env)
        if code == 2:
            return 2
        completed = [
            row["prompt_id"]
            for (key, _), row in sorted(queries.latest_requests(CAMPAIGN, "draft").items())
            if row.get("status") == "completed"
            and row.get("prompt_id") in {r["id"] for r in demo_rows(args.prompts)}
        ]
        winners = choose_winners(completed, args.winners)

        _heading(f"2/4 automatic pick: {len(winners)} winners")
        if winners:
            decisions.record_decisions(CAMPAIGN, winners, "pick", source="demo")
            shown = ", ".join(winners[:6]) + (" ..." if len(winners) > 6 else "")
            print(f"Picked {shown} (decisions recorded with source 'demo')")
        else:
            print("No completed drafts to pick from.")

        _heading(f"3/4 final pass ({args.mode}): the winners at quality=high")
        final_code = 0
        if winners:
            final_code = _run_pass([CAMPAIGN, "--pass", "final", "--mode", args.mode, *common], env)
            if final_code == 2:
                return 2

        _heading("4/4 campaign report")
        launch.quiet_dagster_warnings()
        launch.materialize_campaign_asset(
            CAMPAIGN, "campaign_report", launch_id=f"demo-{os.getpid()}"
        )
        report = _read_report()
    except launch.LaunchError as error:
        raise UserError(str(error)) from None
    finally:
        if sim is not None:
            sim.stop()
    _print_where_to_look(report, time.monotonic() - started)
    return 0 if code == 0 and final_code == 0 else 1


def _read_report() -> dict[str, Any]:
    path = settings.data_dir() / "reports" / CAMPAIGN / "report.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _print_where_to_look(report: dict[str, Any], elapsed_s: float) -> None:
    from falassets.engine.progress import format_duration

    data = settings.data_dir()
    drafts = report.get("drafts") or {}
    finals = report.get("finals") or {}
    sheets = report.get("contact_sheets") or []
    print(f"\nDone in {format_duration(elapsed_s)}.")
    if report:
        print(
            f"  drafts {drafts.get('done', '?')} done / {drafts.get('failed', '?')} failed, "
            f"{report.get('picked', '?')} picked, finals {finals.get('done', '?')} done / "
            f"{finals.get('failed', '?')} failed"
        )
        print(
            f"  spend ${report.get('spend_total_usd', 0):,.2f} (simulated) vs "
            f"${report.get('all_high_usd', 0):,.2f} for every prompt at high"
        )
    print("\nWhere to look:")
    print(f"  renders        {location_of(renders_store().key_uri(CAMPAIGN))}/draft and /final")
    if sheets:
        print(f"  contact sheet  {sheets[0]}")
    print(f"  report         {data / 'reports' / CAMPAIGN / 'report.json'}")
    print("  lineage        falassets lineage")
    print(f"                 duckdb -readonly {settings.lineage_db_path()}")
    print(
        f"  review page    falassets review    (pick more winners, then: falassets run "
        f"{CAMPAIGN} --pass final)"
    )
    print(f"  Dagster UI     falassets dev       (DAGSTER_HOME={settings.dagster_home()})")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the whole two-pass flow on the emulator, end to end, with a report",
        description=(
            "Write a generated campaign 'demo' into the campaigns folder, render drafts, pick "
            "some winners automatically, render their finals, build the campaign report and "
            "print where to look. Without FAL_KEY it runs on a private emulator with a time "
            "scale (well under two minutes); with FAL_KEY it refuses unless --real."
        ),
    )
    parser.add_argument("--prompts", type=int, default=200, help="prompts to generate (200)")
    parser.add_argument("--winners", type=int, default=12, help="winners to pick (12)")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=0.2,
        help="emulator latency multiplier (0.2: five times faster than fal)",
    )
    parser.add_argument(
        "--mode",
        choices=("refine", "rerun"),
        default="refine",
        help="final pass mode (refine: the chosen draft through the edit endpoint)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"requests in flight ({DEFAULT_CONCURRENCY})",
    )
    parser.add_argument("--plain", action="store_true", help="plain progress lines")
    parser.add_argument(
        "--real", action="store_true", help="with FAL_KEY set: really render on fal.ai (costs)"
    )
    parser.set_defaults(handler=command_demo)
