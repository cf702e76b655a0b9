"""`falassets show REQUEST_ID`: one request as lineage knows it, and what fal still has.

When a render looks off in review, its request id leads here: the exact input fal saw, how the
request went (every snapshot, every attempt of the job), what it cost, the files it left, the
Dagster run that made it and the reviewer's decision; then fal's own answer for it (status
with logs, the result) while fal still keeps it. The lineage part asks nothing of the network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from typing import Any
from urllib.parse import urlsplit

from falassets import settings
from falassets.cli.errors import UserError
from falassets.cli.table import cell, format_table
from falassets.lineage.request_record import RequestRecord, find_request, unknown_request_message
from falassets.lineage.variants import request_images

#: Input strings longer than this (a refine's data URI, a long prompt) are shortened on screen.
LONG_STRING = 300
#: fal's log lines shown, the last ones.
LOG_LINES = 20
_DAGSTER_RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_LABEL = 16


def load_record(request_id: str) -> RequestRecord:
    """The record of ``request_id``, or a UserError (exit 2) naming it and how to list ids."""
    record = find_request(request_id)
    if record is None:
        raise UserError(unknown_request_message(request_id[:200]))
    return record


def command_show(args: argparse.Namespace) -> int:
    record = load_record(args.request_id)
    print("\n".join(lineage_lines(record)))
    if not args.no_fal:
        print()
        print("\n".join(asyncio.run(fal_lines(record.row))))
    return 0


# -- what lineage knows ----------------------------------------------------------------------


def _line(label: str, value: Any) -> str:
    return f"{label:<{_LABEL}}{value}"


def lineage_lines(record: RequestRecord) -> list[str]:
    row = record.row
    simulated = " (simulated: rendered by the emulator, nothing billed)" if row["simulated"] else ""
    lines = [_line("request", f"{row['request_id']}{simulated}")]
    where = [
        f"campaign {row['campaign']}" if row["campaign"] else None,
        f"prompt {row['prompt_id']}" if row["prompt_id"] else None,
        f"pass {row['pass']}" if row["pass"] else None,
        f"partition {row['partition_key']}" if row["partition_key"] else None,
    ]
    lines.append(_line("of", " · ".join(part for part in where if part) or "-"))
    if record.original is not None or row.get("replay_of"):
        status = record.original.get("status") if record.original else "not in lineage"
        lines.append(_line("replay of", f"{row['replay_of']} ({status})"))
    lines.append(_line("endpoint", row["endpoint"] or "-"))
    lines.append(_line("input", "as sent to fal" + _shortened_note(row)))
    lines += ["  " + text for text in _input_text(row["input"]).splitlines()]
    lines.append(_line("status", _status_text(row)))
    if row["error_message"]:
        lines.append(_line("", row["error_message"]))
    lines.append(_line("times", _times_text(row)))
    lines.append(_line("cost", _cost_text(row)))
    lines += _file_lines(row)
    lines.append(_line("run", _run_text(row.get("run_id"))))
    lines.append(_line("decision", _decision_text(record)))
    lines += _attempt_lines(record)
    if record.replays:
        lines.append(_line("replays", f"{len(record.replays)} request(s) replay this one"))
        lines += _rows_table(record.replays, ("request_id", "status", "error_type", "cost_usd"))
    lines.append(_line("snapshots", f"{len(record.snapshots)} journalled, oldest first"))
    lines += _rows_table(record.snapshots, ("recorded_at", "status", "error_type", "writer"))
    return lines


def _input_text(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(_shorten(value), indent=2, ensure_ascii=False, sort_keys=True)


def _shorten(value: Any) -> Any:
    if isinstance(value, str) and len(value) > LONG_STRING:
        return f"{value[:LONG_STRING]}… ({len(value):,} characters)"
    if isinstance(value, dict):
        return {key: _shorten(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shorten(item) for item in value]
    return value


def _shortened_note(row: dict[str, Any]) -> str:
    if _shorten(row["input"]) == row["input"]:
        return ""
    rid = str(row["request_id"]).replace("'", "''")
    return (
        f" (long strings shortened here; in full: falassets lineage "
        f"\"select input from requests where request_id = '{rid}'\")"
    )


def _status_text(row: dict[str, Any]) -> str:
    parts = [str(row["status"] or "-")]
    if row["error_type"]:
        parts.append(f"error_type {row['error_type']}")
    if row["http_status"]:
        parts.append(f"HTTP {row['http_status']}")
    parts.append(f"attempt {row['attempt'] or '-'}")
    return " · ".join(parts)


def _times_text(row: dict[str, Any]) -> str:
    parts = [
        f"{name.removesuffix('_at')} {row[name]}"
        for name in ("submitted_at", "started_at", "completed_at")
        if row.get(name)
    ]
    if row.get("queued_s") is not None:
        parts.append(f"queued {row['queued_s']:.2f}s")
    if row.get("latency_s") is not None:
        parts.append(f"latency {row['latency_s']:.2f}s")
    return " · ".join(parts) or "-"


def _cost_text(row: dict[str, Any]) -> str:
    text = f"${float(row['cost_usd'] or 0.0):.4f}"
    if row["cost_source"] == "billed" and row["billable_units"] is not None:
        text += f" · from fal's billable units ({row['billable_units']:g})"
    else:
        text += " · estimated from fal's price table"
    return text + (" · simulated: what fal would bill, nothing was" if row["simulated"] else "")


def _file_lines(row: dict[str, Any]) -> list[str]:
    """Every output image (one per variant), each checked against the render store."""
    images = request_images(row)
    lines: list[str] = []
    for image in images:
        location = image.get("image_path") or image.get("image_uri")
        label = "image" if len(images) == 1 else f"variant {image['variant']}"
        lines.append(_line(label, f"{location}  {_file_state(location, image.get('sha256'))}"))
        size = f"{image['width']}x{image['height']} · " if image.get("width") else ""
        lines.append(_line("", f"{size}sha256 {image.get('sha256') or '-'}"))
        labels = {"image_uri": "stored at", "thumbnail_path": "thumbnail"}
        for name, name_label in labels.items():  # image_uri: once the render store records it
            if image.get(name) and image.get(name) != location:
                lines.append(_line(name_label, image[name]))
    if row.get("output_url"):
        lines.append(_line("fal's output", row["output_url"]))
    return lines or [_line("files", "none (no output was downloaded)")]


def _file_state(location: str, sha256: str | None) -> str:
    """Whether the recorded output is still in the render store (a folder or a bucket),
    unchanged."""
    from falassets.storage.renders import render_sha256

    try:
        found = render_sha256(location)
    except OSError:
        return "(missing from the render store)"
    return "(present, sha256 matches)" if found == sha256 else "(CHANGED since it was recorded)"


def _run_text(run_id: Any) -> str:
    if not run_id:
        return "-"
    run_id = str(run_id)
    if not _DAGSTER_RUN_ID.fullmatch(run_id):
        return f"{run_id} (falassets' own id, outside Dagster)"
    try:
        from falassets.pipeline.launch import dagster_instance

        run = dagster_instance().get_run_by_id(run_id)
    except Exception as error:  # the lineage answer matters more than Dagster's
        return f"Dagster run {run_id} (DAGSTER_HOME unreadable: {type(error).__name__})"
    if run is None:
        return f"Dagster run {run_id} (not in DAGSTER_HOME {settings.dagster_home()})"
    tags = run.tags or {}
    partitions = tags.get("dagster/partition") or "–".join(
        tags[name]
        for name in ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
        if name in tags
    )
    shown = f", partitions {partitions}" if partitions else ""
    return f"Dagster run {run_id}: job {run.job_name}, {run.status.value}{shown}"


def _decision_text(record: RequestRecord) -> str:
    row = record.row
    if not row["campaign"] or not row["prompt_id"]:
        return "-"
    decision = record.decision or "none yet"
    return f"{decision} (the reviewer's latest on {row['campaign']}/{row['prompt_id']})"


def _attempt_lines(record: RequestRecord) -> list[str]:
    if len(record.attempts) <= 1:
        return []
    return [
        _line("attempts", f"{len(record.attempts)} requests of this job ({record.row['job_key']})"),
        *_rows_table(record.attempts, ("attempt", "request_id", "status", "error_type", "run_id")),
    ]


def _rows_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> list[str]:
    table = format_table(columns, [[row.get(name) for name in columns] for row in rows])
    return ["  " + text for text in table.splitlines()]


# -- what fal still has ----------------------------------------------------------------------


async def fal_lines(row: dict[str, Any]) -> list[str]:
    """fal's status (with logs) and result for a recorded request, or why it was not asked.

    The key only ever goes to the queue host this process is configured for, and only for a
    request recorded there: a simulated row is asked of the emulator, never with a real key.
    """
    from falassets.engine.session import queue_host

    label = "fal"
    status_url, response_url = row.get("status_url"), row.get("response_url")
    key = settings.fal_key()
    if not status_url or not response_url:
        return [_line(label, "not asked: fal never accepted this request (no status URL)")]
    if row["simulated"] and key:
        return [_line(label, "not asked: an emulator request, and FAL_KEY is set (unset it)")]
    if not row["simulated"] and not key:
        return [_line(label, "not asked: no FAL_KEY (export it to ask fal about this request)")]
    host = urlsplit(str(status_url)).netloc
    if host != queue_host() or urlsplit(str(response_url)).netloc != host:
        return [
            _line(
                label,
                f"not asked: recorded at {host}, but the queue host is now {queue_host()} "
                "(the key only goes to the configured host)",
            )
        ]
    from falassets.pipeline.fal_environment import prepare_fal

    prepare_fal(key)
    return await _ask(str(status_url), str(response_url), key)


async def _ask(status_url: str, response_url: str, key: str | None) -> list[str]:
    import httpx
    from fal_client import FalClientHTTPError

    from falassets.engine.queue_client import raise_for_status
    from falassets.engine.session import PLACEHOLDER_KEY

    who = "fal" if key else "emulator"
    lines: list[str] = []
    async with httpx.AsyncClient(
        headers={"Authorization": f"Key {key or PLACEHOLDER_KEY}", "User-Agent": "falassets/0.1"},
        timeout=httpx.Timeout(30.0, connect=10.0),
        trust_env=True,
    ) as http:
        try:
            response = await http.get(status_url, params={"logs": "1"})
            raise_for_status(response)
            status = response.json()
        except (FalClientHTTPError, httpx.HTTPError, ValueError) as error:
            return [_line(f"{who} status", _redact(_http_problem(error), key))]
        lines += _status_lines(who, status)
        if status.get("status") != "COMPLETED":
            return lines
        try:
            response = await http.get(response_url)
            raise_for_status(response)
            result = response.json()
        except (FalClientHTTPError, httpx.HTTPError, ValueError) as error:
            return [*lines, _line(f"{who} result", _redact(_http_problem(error), key))]
    return [*lines, *_result_lines(who, result)]


def _status_lines(who: str, status: dict[str, Any]) -> list[str]:
    text = str(status.get("status") or "?")
    if status.get("queue_position") is not None:
        text += f" · queue position {status['queue_position']}"
    if status.get("error"):
        text += f" · error {status.get('error_type') or ''} {status['error']}".rstrip()
    metrics = status.get("metrics") or {}
    if isinstance(metrics, dict) and metrics.get("inference_time") is not None:
        text += f" · inference {float(metrics['inference_time']):.2f}s"
    lines = [_line(f"{who} status", text)]
    logs = status.get("logs") or []
    if isinstance(logs, list) and logs:
        shown = logs[-LOG_LINES:]
        lines.append(_line(f"{who} logs", f"{len(logs)} line(s), last {len(shown)}:"))
        for entry in shown:
            if isinstance(entry, dict):
                stamp = entry.get("timestamp") or ""
                lines.append(f"  {stamp} {entry.get('level') or ''} {entry.get('message') or ''}")
    else:
        lines.append(_line(f"{who} logs", "none"))
    return lines


def _result_lines(who: str, result: Any) -> list[str]:
    images = result.get("images") if isinstance(result, dict) else None
    lines = [_line(f"{who} result", f"{len(images or [])} image(s)")]
    for image in images or []:
        if isinstance(image, dict):
            size = f"{image.get('width')}x{image.get('height')} " if image.get("width") else ""
            kind = image.get("content_type") or ""
            lines.append(f"  {size}{kind} {cell(image.get('url'), limit=200)}".rstrip())
    others = {k: v for k, v in result.items() if k != "images"} if isinstance(result, dict) else {}
    if others:
        lines.append("  " + cell(json.dumps(others, ensure_ascii=False), limit=300))
    return lines


def _http_problem(error: Exception) -> str:
    from fal_client import FalClientHTTPError

    if isinstance(error, FalClientHTTPError):
        gone = " (fal no longer keeps it)" if error.status_code in (404, 410) else ""
        return f"HTTP {error.status_code}{gone}: {cell(str(error), limit=200)}"
    return f"could not ask ({type(error).__name__})"


def _redact(text: str, key: str | None) -> str:
    return text.replace(key, "[FAL_KEY]") if key and len(key) >= 4 else text


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    show = subparsers.add_parser(
        "show",
        help="one request: its exact input, status, cost, files, run, decision; fal's answer",
        description=(
            "Everything lineage knows about one fal request (the input exactly as sent, "
            "status and error, every attempt of its job, cost, the files it left and whether "
            "they are intact, the Dagster run, the reviewer's decision, the request it replays "
            "or its replays), then what fal still has for it: its status with logs and its "
            "result (with FAL_KEY; without it, the emulator is asked about simulated requests). "
            "Exit 0, or 2 when lineage has no such request."
        ),
        epilog=(
            'examples:\n  falassets show 0b6f0d7e-...\n  falassets lineage "select request_id, '
            "status from requests where status = 'failed'\"  # ids to show"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("request_id", metavar="REQUEST_ID", help="a request_id from lineage")
    show.add_argument(
        "--no-fal", action="store_true", help="lineage only: ask fal (or the emulator) nothing"
    )
    show.set_defaults(handler=command_show)
