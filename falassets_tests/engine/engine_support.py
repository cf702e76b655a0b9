"""Helpers shared by the engine tests: jobs, a batch runner, lineage and ledger readers."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from falassets import settings
from falassets.engine.jobs import RenderJob, RenderOutcome, canonical_json
from falassets.lineage.journal import latest_by, read_journal
from falassets.pipeline.resources import FalRenderer

#: Fast retries for tests; the defaults (0.5 s base) are for fal.
FAST = {"backoff_base_s": 0.01, "backoff_cap_s": 0.05}


def make_jobs(
    n: int, *, tag: str = "p", words: str = "", quality: str = "low", campaign: str = "spring"
) -> list[RenderJob]:
    return [
        RenderJob(
            partition_key=f"{campaign}-{tag}{i:03d}",
            campaign=campaign,
            prompt_id=f"{tag}{i:03d}",
            pass_name="draft",
            input={
                "prompt": f"a lighthouse at dusk, study {tag}{i} {words}".strip(),
                "quality": quality,
                "image_size": "landscape_4_3",
                "num_images": 1,
                "output_format": "png",
            },
        )
        for i in range(n)
    ]


async def render_all(
    jobs: list[RenderJob], renderer: FalRenderer | None = None, **overrides: Any
) -> list[RenderOutcome]:
    renderer = renderer or FalRenderer(concurrency=4)
    async with renderer.engine(run_id="test-run", **{**FAST, **overrides}) as engine:
        return [outcome async for outcome in engine.render(jobs)]


def lineage_rows() -> dict[str, dict[str, Any]]:
    """Latest journal snapshot per request id."""
    latest = latest_by(read_journal(settings.journal_dir(), "requests"), "request_id")
    return {key[0]: row for key, row in latest.items()}


def all_journal_lines() -> list[dict[str, Any]]:
    return list(read_journal(settings.journal_dir(), "requests"))


def billed_inputs(ledger: dict[str, Any]) -> Counter[str]:
    return Counter(canonical_json(r["input"]) for r in ledger["requests"] if r["billed"])


def wait_for(condition: Callable[[], Any], *, timeout: float = 30.0, what: str = "") -> Any:
    """Poll ``condition`` until it is truthy (or fail after ``timeout``): no blind sleeps."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


CHILD = """
import asyncio, json, sys
from falassets.engine.jobs import RenderJob
from falassets.engine.session import open_engine

spec = json.loads(sys.argv[1])
jobs = [RenderJob(**job) for job in spec["jobs"]]

async def main():
    async with open_engine(
        run_id=spec["run_id"], concurrency=spec["concurrency"], backoff_base_s=0.01
    ) as engine:
        async for outcome in engine.render(jobs):
            print(json.dumps({"prompt_id": outcome.job.prompt_id, "status": outcome.status}),
                  flush=True)

asyncio.run(main())
"""


def spawn_engine(
    jobs: list[RenderJob], *, concurrency: int, run_id: str, env: dict[str, str]
) -> subprocess.Popen:
    """Run a batch in another process (crash and multi-process tests)."""
    spec = {
        "concurrency": concurrency,
        "run_id": run_id,
        "jobs": [
            {
                "partition_key": j.partition_key,
                "campaign": j.campaign,
                "prompt_id": j.prompt_id,
                "pass_name": j.pass_name,
                "input": j.input,
            }
            for j in jobs
        ],
    }
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def request_http_total(ledger: dict[str, Any]) -> int:
    http = ledger["http"]
    return sum(v for k, v in http.items() if k != "admin")


def files_exist(outcomes: list[RenderOutcome]) -> bool:
    return all(o.image_path is not None and Path(o.image_path).is_file() for o in outcomes)


def post_to_emulator(sim: Any, payload: dict[str, Any]) -> str:
    """Submit straight to the emulator, as a process that died before journalling would;
    returns the request id fal assigned."""
    context = ssl.create_default_context(cafile=str(sim.cert_file))
    with httpx.Client(verify=context, trust_env=False) as client:
        response = client.post(
            f"{sim.url}/openai/gpt-image-2",
            content=canonical_json(payload),
            headers={"Authorization": "Key simulated-no-key", "content-type": "application/json"},
        )
    response.raise_for_status()
    return response.json()["request_id"]
