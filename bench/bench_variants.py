"""Variants (issue 14): a draft pass of N images per prompt, and the review page over them.

Two measurements, each runnable alone:

* ``engine``: 1,000 prompts x 3 variants (one request per prompt, fal's ``num_images`` 3)
  through ``open_engine(concurrency=10)`` in a child process against the emulator: every
  image downloaded, decode-checked and thumbnailed, lineage fsynced. Ideal is computed as in
  ``bench_engine.py``: prompts x the mean latency the emulator's ledger shows for these
  requests (a 3-image request takes 1.3x a 1-image one there) / 10. ``--variants 1,3`` also
  runs the one-variant pass for comparison.
* ``review``: a campaign of 1,000 prompts x 3 variants (table + lineage rows + 3,000 JPEG
  thumbnails written directly, no rendering) served by the review app; Debian's Chromium
  (Playwright) opens it and reports the time to the first grid render (navigation start to
  the first frame painted with every card in the grid), to the visible thumbnails loaded,
  and the time from a key press to the next painted frame when moving between cards (J) and
  between the variants of a card (L).

Run (a few minutes on 2 cores)::

    .venv/bin/python bench/bench_variants.py                       # both, 1,000 x 3
    .venv/bin/python bench/bench_variants.py engine --time-scale 1 --variants 1,3
    .venv/bin/python bench/bench_variants.py review --prompts 1000

Target: the engine keeps >= 97% of ideal at time scale 1 (the time-scale-1 figures are the
ones to quote, as in ``bench_engine.py``); the page stays responsive (a move well inside one
60 Hz frame budget of work, the grid up in about a second).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = 10
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def inputs(n: int, variants: int) -> list[dict[str, Any]]:
    return [
        {
            "prompt": f"bench {i}: a lighthouse at dusk, watercolour, variation {i % 17}",
            "quality": "low",
            "image_size": "square",
            "num_images": variants,
            "output_format": "png",
        }
        for i in range(n)
    ]


# -- engine ------------------------------------------------------------------------------------


def engine_child(n: int, variants: int) -> None:
    """Runs in a child process: the batch through the engine, its own CPU and memory."""
    import asyncio
    import resource

    from falassets.engine.jobs import RenderJob
    from falassets.engine.session import open_engine

    jobs = [
        RenderJob(f"bench-p{i:05d}", "bench", f"p{i:05d}", "draft", payload)
        for i, payload in enumerate(inputs(n, variants))
    ]

    async def run() -> dict[str, Any]:
        ok = failed = images = 0
        async with open_engine(run_id="bench", concurrency=CONCURRENCY) as engine:
            async for outcome in engine.render(jobs):
                ok += outcome.ok
                failed += not outcome.ok
                images += len(outcome.images)
        return {"ok": ok, "failed": failed, "images": images}

    cpu0, wall0 = time.process_time(), time.monotonic()
    result = asyncio.run(run())
    result.update(
        wall_s=time.monotonic() - wall0,
        cpu_s=time.process_time() - cpu0,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    print(json.dumps(result), flush=True)


def measure_engine(sim: Any, n: int, variants: int, time_scale: float) -> dict[str, Any]:
    from bench_engine import _seconds

    sim.reset()
    sim.configure(mode="queue", concurrency=CONCURRENCY, time_scale=time_scale)
    with tempfile.TemporaryDirectory(prefix="bench-variants-") as data:
        env = {**os.environ, **sim.env(), "FALASSETS_DATA_DIR": data}
        env.pop("FAL_KEY", None)
        argv = [sys.executable, __file__, "--engine-child", str(n), str(variants)]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=7200)
        if proc.returncode != 0:
            raise SystemExit(f"engine child failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    ledger = sim.ledger()
    latencies = [
        s
        for r in ledger["requests"]
        if r["outcome"] == "ok" and (s := _seconds(r["started_at"], r["completed_at"])) is not None
    ]
    mean = statistics.mean(latencies) if latencies else float("nan")
    ideal = n * mean / CONCURRENCY
    http = sum(v for k, v in ledger["http"].items() if k != "admin")
    return {
        "variants": variants,
        "wall_s": result["wall_s"],
        "ideal_s": ideal,
        "pct": 100 * ideal / result["wall_s"],
        "mean_latency_s": mean,
        "images": result["images"],
        "images_billed": ledger["totals"]["images_billed"],
        "http_per_prompt": http / n,
        "cpu_ms_per_prompt": 1000 * result["cpu_s"] / n,
        "peak_rss_mb": result["peak_rss_mb"],
        "failed": result["failed"],
    }


def run_engine(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from falassets.sim.control import SimProcess

    sim = SimProcess.start("--time-scale", str(args.time_scale), "--concurrency", str(CONCURRENCY))
    rows = []
    try:
        for variants in [int(v) for v in args.variants.split(",")]:
            started = time.monotonic()
            rows.append(measure_engine(sim, args.prompts, variants, args.time_scale))
            print(
                f"{variants} variant(s) done in {time.monotonic() - started:.0f}s", file=sys.stderr
            )
    finally:
        sim.stop()
    print(
        f"\nengine: {args.prompts} prompts, account limit {CONCURRENCY}, time scale "
        f"{args.time_scale}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| variants | wall s | ideal s | % of ideal | mean latency s | images stored | "
        "images billed | HTTP/prompt | CPU ms/prompt | peak RSS MB | failed |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in rows:
        print(
            f"| {r['variants']} | {r['wall_s']:.1f} | {r['ideal_s']:.1f} | {r['pct']:.1f}% | "
            f"{r['mean_latency_s']:.2f} | {r['images']} | {r['images_billed']} | "
            f"{r['http_per_prompt']:.2f} | {r['cpu_ms_per_prompt']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['failed']} |"
        )


# -- review page -------------------------------------------------------------------------------


def seed_campaign(data: Path, n: int, variants: int) -> None:
    """A drafted campaign as the pipeline leaves it: table, lineage rows, thumbnails."""
    from PIL import Image

    from falassets import campaigns, settings
    from falassets.campaigns import Campaign, PromptRow
    from falassets.lineage.journal import Journal
    from falassets.lineage.schema import REQUEST_COLUMNS

    rows = tuple(
        PromptRow(
            f"p{i:05d}", f"bench {i}: a lighthouse at dusk", "square", "png", {}, i + 2, variants
        )
        for i in range(n)
    )
    table = Campaign("bench", data / "campaigns" / "bench.csv", rows)
    campaigns.write_table(table, settings.tables_dir())
    out = settings.renders_dir() / "bench" / "draft" / "thumbs"
    out.mkdir(parents=True, exist_ok=True)
    with Journal(settings.journal_dir(), "requests") as journal:
        for index, row in enumerate(rows):
            images = []
            for v in range(1, variants + 1):
                thumb = out / f"{row.prompt_id}-{v}.jpg"
                colour = ((37 * index) % 200 + 30, (53 * v) % 200 + 30, 140)
                Image.new("RGB", (256, 256), colour).save(thumb, quality=80)
                images.append(
                    {
                        "variant": v,
                        "image_path": str(thumb),
                        "thumbnail_path": str(thumb),
                        "sha256": f"{index:08x}{v}",
                        "width": 512,
                        "height": 512,
                    }
                )
            record: dict[str, Any] = dict.fromkeys(REQUEST_COLUMNS)
            record.update(
                request_id=f"req-{row.prompt_id}",
                partition_key=f"bench-{row.prompt_id}",
                campaign="bench",
                prompt_id=row.prompt_id,
                endpoint="openai/gpt-image-2",
                input=campaigns.render_input(row, "low", images=variants),
                status="completed",
                attempt=1,
                submitted_at=f"2025-01-01T00:00:00.{index:06d}+00:00",
                completed_at=f"2025-01-01T00:01:00.{index:06d}+00:00",
                simulated=True,
                run_id="bench",
                cost_usd=0.01 * variants,
                images=images,
                **{
                    k: images[0][k]
                    for k in ("image_path", "thumbnail_path", "sha256", "width", "height")
                },
            )
            record["pass"] = "draft"
            journal.append(record)


# Installed before the page's own script (through the DevTools protocol, so the page's CSP
# does not apply): marks when the grid is first painted full, and when each key press is
# followed by a painted frame (a setTimeout queued from requestAnimationFrame runs after it).
PROBE = """
window.__bench = { grid: null, moves: [] };
const expected = %d;
new MutationObserver((_, observer) => {
  const grid = document.getElementById('grid');
  if (grid && grid.children.length >= expected && window.__bench.grid === null) {
    window.__bench.grid = -1;
    observer.disconnect();
    requestAnimationFrame(() => setTimeout(() => { window.__bench.grid = performance.now(); }, 0));
  }
}).observe(document, { childList: true, subtree: true });
document.addEventListener('keydown', (event) => {
  const start = performance.now();
  requestAnimationFrame(() => setTimeout(() => {
    window.__bench.moves.push([event.key, performance.now() - start]);
  }, 0));
}, true);
"""

# The thumbnails the grid shows at first (inside its scroll box) once all have arrived: when
# the last of them finished loading, from the browser's own resource timing.
VISIBLE_LOADED = """() => {
  const box = document.getElementById('grid').getBoundingClientRect();
  const imgs = [...document.querySelectorAll('#grid img')].filter((img) => {
    const r = img.getBoundingClientRect();
    return r.bottom > box.top && r.top < box.bottom && r.width > 0;
  });
  if (!imgs.length || !imgs.every((img) => img.complete && img.naturalWidth > 0)) return null;
  const loaded = performance.getEntriesByType('resource');
  const ends = new Map(loaded.map((e) => [e.name, e.responseEnd]));
  return { at: Math.max(...imgs.map((img) => ends.get(img.currentSrc) || 0)), count: imgs.length };
}"""


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run_review(args: argparse.Namespace) -> None:
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    sys.path.insert(0, str(ROOT))
    for variants in [int(v) for v in str(args.review_variants).split(",")]:
        measure_review(args, variants)


def measure_review(args: argparse.Namespace, variants: int) -> None:
    """One campaign of ``variants`` variants per prompt, in a data dir of its own."""
    import uvicorn
    from playwright.sync_api import sync_playwright

    from falassets.review.app import create_app
    from falassets.review.security import allowed_hosts

    data = Path(tempfile.mkdtemp(prefix="bench-review-"))
    os.environ["FALASSETS_DATA_DIR"] = str(data)
    started = time.monotonic()
    seed_campaign(data, args.prompts, variants)
    print(
        f"seeded {args.prompts} x {variants} in {time.monotonic() - started:.1f}s", file=sys.stderr
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(token="bench-token-0123456789", hosts=allowed_hosts("127.0.0.1"))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}/#/c/bench"
    loads, visible, moves, variant_moves = [], [], [], []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for attempt in range(args.loads):
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                page.add_init_script(PROBE % args.prompts)
                page.goto(url)
                grid = _wait(page, "() => window.__bench.grid > 0 ? window.__bench.grid : null")
                seen = _wait(page, VISIBLE_LOADED)
                loads.append(grid)
                visible.append((seen["at"], seen["count"]))
                if attempt == args.loads - 1:
                    keys = ["j"] * args.moves + ["l"] * (args.moves // 2 if variants > 1 else 0)
                    for done, key in enumerate(keys, start=1):  # one at a time, as a person
                        page.keyboard.press(key)
                        _wait(page, f"() => window.__bench.moves.length >= {done} || null", 0.005)
                    recorded = page.evaluate("() => window.__bench.moves")
                    moves = [ms for key, ms in recorded if key == "j"]
                    variant_moves = [ms for key, ms in recorded if key == "l"]
                page.close()
            version = browser.version
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    print(
        f"\nreview page: {args.prompts} prompts x {variants} variant(s) "
        f"({args.prompts * variants} thumbnails), Chromium {version} headless, "
        f"viewport 1440x900, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| measure | median ms | p95 ms | max ms | samples |\n|---|---:|---:|---:|---:|")
    for label, values in (
        ("first grid render (navigation start to the full grid painted)", loads),
        ("visible thumbnails loaded", [at for at, _ in visible]),
        ("move to the next card (J), key to painted frame", moves),
        ("move to the next variant (L), key to painted frame", variant_moves),
    ):
        if not values:
            continue
        print(
            f"| {label} | {statistics.median(values):.1f} | {_percentile(values, 95):.1f} | "
            f"{max(values):.1f} | {len(values)} |"
        )
    print(f"\n{visible[-1][1]} thumbnails in the first viewport")


def _wait(page: Any, expression: str, every_s: float = 0.02, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {expression[:60]}")
        time.sleep(every_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", choices=("engine", "review", "both"), default="both")
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--variants", default="3", help="engine: variants per prompt, e.g. 1,3")
    parser.add_argument("--time-scale", type=float, default=1.0, help="emulator latency scale")
    parser.add_argument(
        "--review-variants", default="3,1", help="review: variants per prompt, e.g. 3,1"
    )
    parser.add_argument("--loads", type=int, default=5, help="review: page loads measured")
    parser.add_argument("--moves", type=int, default=200, help="review: key presses measured")
    parser.add_argument("--engine-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine_child:
        engine_child(*args.engine_child)
        return
    if args.what in ("engine", "both"):
        run_engine(args)
    if args.what in ("review", "both"):
        run_review(args)


if __name__ == "__main__":
    main()
