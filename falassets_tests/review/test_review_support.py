"""Helpers for the review page tests (no tests here): a review server on a free loopback port,
raw HTTP requests that keep their path exactly as written, and campaigns with real renders.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from falassets.review.app import create_app
from falassets.review.security import TOKEN_HEADER, allowed_hosts
from falassets_tests.pipeline.test_pipeline_support import write_campaign

TOKEN = "test-token-0123456789"


def wait_for(
    condition: Callable[[], Any], *, timeout: float, what: str, every: float = 0.05
) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def wait_for_launch(launch_id: str, *, timeout: float) -> list[Any]:
    """The Dagster runs of a launch from the review page (``launch.submit_pass``), once the
    launch has ended and Dagster records each of its runs as finished.

    The page shows a launch id, not a run id: a pass is several runs (prompts, selections,
    one per range of partitions), each tagged ``LAUNCH_TAG=<id>``. The launch's result file
    says no further run will start, so "every run found is finished" cannot be read too early.
    """
    import dagster as dg

    from falassets.pipeline import launch

    instance = launch.dagster_instance()
    launch_filter = dg.RunsFilter(tags={launch.LAUNCH_TAG: launch_id})

    def finished_runs() -> list[Any]:
        if launch.launch_result(launch_id) is None:
            return []
        runs = instance.get_runs(filters=launch_filter)
        return runs if runs and all(run.is_finished for run in runs) else []

    return wait_for(finished_runs, timeout=timeout, what=f"the runs of launch {launch_id}")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ReviewServer:
    """``create_app`` served by uvicorn in a thread, on 127.0.0.1 and a free port.

    ``access="..."`` serves it in remote mode (that secret asked of every request)."""

    def __init__(self, **app_options: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        app_options.setdefault("token", TOKEN)
        self.token = app_options["token"]
        remote = app_options.get("access") is not None
        app_options.setdefault("hosts", allowed_hosts("127.0.0.1", remote=remote))
        self.app = create_app(**app_options)
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> ReviewServer:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=10, what="the review server to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        same_origin: bool = True,
    ) -> Reply:
        """One request with ``path`` sent verbatim (no dot-segment clean-up, no re-encoding).

        ``same_origin`` adds the Origin and token headers the page's own script sends.
        """
        sent = {"Host": f"127.0.0.1:{self.port}"}
        if same_origin and method != "GET":
            sent.update({"Origin": self.origin, TOKEN_HEADER: self.token})
        sent.update(headers or {})
        return http_request(self.port, method, path, body, headers=sent)


def http_request(
    port: int, method: str, path: str, body: Any = None, *, headers: dict[str, str]
) -> Reply:
    """One request to 127.0.0.1:``port`` with ``path`` and ``headers`` sent verbatim (the
    Host header too: pass it)."""
    sent = dict(headers)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in sent.items():
            connection.putheader(name, value)
        if data is not None:
            connection.putheader("Content-Length", str(len(data)))
        connection.endheaders(data)
        response = connection.getresponse()
        return Reply(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read(),
        )
    finally:
        connection.close()


def write_campaign_csv(
    data_dir: Path, name: str, prompts: dict[str, str], *, size: str = "square", tags: str = ""
) -> Path:
    return write_campaign(data_dir, name, prompts, size, mood=tags)


def seed_drafts(
    data_dir: Path, campaign: str, prompts: dict[str, str], *, failed: dict[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """A campaign whose drafts exist the way the pipeline leaves them, without rendering:
    the campaign table, one PNG + JPEG thumbnail per draft under ``renders/`` and a request
    row per draft in this process's request journal. ``failed``: prompt id -> error type.
    Returns the journalled rows by prompt id."""
    from PIL import Image

    from falassets import campaigns, settings
    from falassets.engine.pricing import price_usd
    from falassets.lineage.journal import Journal
    from falassets.lineage.schema import REQUEST_COLUMNS

    failed = failed or {}
    table = campaigns.load_campaign(write_campaign_csv(data_dir, campaign, prompts))
    campaigns.write_table(table, settings.tables_dir())
    out = settings.renders_dir() / campaign / "draft"
    (out / "thumbs").mkdir(parents=True, exist_ok=True)
    rows = {}
    with Journal(settings.journal_dir(), "requests") as journal:
        for index, row in enumerate(table.rows):
            sent = campaigns.render_input(row, "low")
            record: dict[str, Any] = dict.fromkeys(REQUEST_COLUMNS)
            record.update(
                request_id=f"req-{campaign}-{row.prompt_id}",
                partition_key=campaigns.partition_key(campaign, row.prompt_id),
                campaign=campaign,
                prompt_id=row.prompt_id,
                endpoint="openai/gpt-image-2",
                input=sent,
                attempt=1,
                submitted_at=f"2025-01-01T00:00:{index:02d}+00:00",
                simulated=True,
                run_id="seed",
            )
            record["pass"] = "draft"
            if row.prompt_id in failed:
                record.update(
                    status="failed",
                    error_type=failed[row.prompt_id],
                    error_message=f"{row.prompt_id} was refused by the test",
                )
            else:
                image = out / f"{row.prompt_id}-{index:012d}.png"
                thumb = out / "thumbs" / f"{row.prompt_id}-{index:012d}.jpg"
                colour = (40 + 25 * index % 200, 90, 160)
                Image.new("RGB", (64, 64), colour).save(image)
                Image.new("RGB", (32, 32), colour).save(thumb)
                record.update(
                    status="completed",
                    image_path=str(image),
                    thumbnail_path=str(thumb),
                    width=64,
                    height=64,
                    latency_s=1.5,
                    cost_usd=price_usd(sent),
                    completed_at=f"2025-01-01T00:01:{index:02d}+00:00",
                )
            journal.append(record)
            rows[row.prompt_id] = record
    return rows
