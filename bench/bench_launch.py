"""One draft pass through ``launch.run_pass`` (the path `falassets run` and the review page take),
prompts asset included, against a private emulator. Prints one JSON line; run it against two
checkouts one after the other to compare (``PYTHONPATH=<checkout>``).

    .venv/bin/python bench/bench_launch.py --prompts 300 --time-scale 1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--time-scale", type=float, default=1.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="falassets-bench-launch-"))
    os.environ["FALASSETS_DATA_DIR"] = str(work / "data")
    os.environ["DAGSTER_HOME"] = str(work / "dagster_home")
    os.environ.pop("FAL_KEY", None)
    os.environ.pop("DAGSTER_EVENT_BATCH_SIZE", None)
    from falassets.sim.control import SimProcess

    sim = SimProcess.start(
        "--time-scale", str(args.time_scale), "--concurrency", "10", "--mode", "queue"
    )
    os.environ.update(sim.env())
    try:
        import falassets
        from falassets.pipeline import launch

        campaigns = work / "data" / "campaigns"
        campaigns.mkdir(parents=True)
        with (campaigns / "bench.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "prompt", "image_size", "output_format"])
            for i in range(args.prompts):
                writer.writerow(
                    [f"p{i:05d}", f"benchmark prompt {i}: a lighthouse", "square", "jpeg"]
                )
        launch.quiet_dagster_warnings()
        started = time.perf_counter()
        result = launch.run_pass("bench", "draft")
        figures = {
            "src": falassets.__file__,
            "prompts": args.prompts,
            "wall_s": round(time.perf_counter() - started, 2),
            "succeeded": len(result.succeeded),
            "failed": len(result.failed),
            "runs": len(result.run_ids),
        }
        print(json.dumps(figures))
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
