"""What falassets' schema lock costs an instance open on a Postgres deployment whose schema
exists (the steady state): ``deployment.open_instance()`` against Dagster's own
``DagsterInstance.get()``, alternating in one process on one private PostgreSQL.

    .venv/bin/python bench/bench_instance_open.py            # 30 rounds
    .venv/bin/python bench/bench_instance_open.py --rounds 100

open_instance() adds one connection and one catalog query (it takes the lock only while
Dagster's tables are missing, which a fresh database's first open alone sees).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from falassets_tests import services  # noqa: E402 (after sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    server = services.start_postgres()
    try:
        os.environ["FALASSETS_POSTGRES_URL"] = server.new_database("instance_open")
        os.environ["DAGSTER_HOME"] = tempfile.mkdtemp(prefix="falassets-bench-home-")
        from falassets.pipeline.launch import prepare_dagster_home, quiet_dagster_warnings

        prepare_dagster_home()
        quiet_dagster_warnings()
        import dagster as dg

        from falassets.pipeline.deployment import open_instance

        dg.DagsterInstance.get()  # creates the schema: what follows is the steady state
        cases = {"DagsterInstance.get()": dg.DagsterInstance.get, "open_instance()": open_instance}
        seconds: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, open_ in cases.items():
                started = time.perf_counter()
                open_()
                seconds[name].append(time.perf_counter() - started)
        medians = {name: statistics.median(values) for name, values in seconds.items()}
        for name, median in medians.items():
            print(f"{name:24} median {median * 1000:6.1f} ms over {args.rounds} opens")
        base, ours = medians.values()
        print(f"open_instance() / DagsterInstance.get(): {ours / base:.2f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
