"""Sensors that keep the pipeline moving without clicks.

- ``campaign_file_sensor``: a new or changed campaign file registers its campaign and runs
  ``prompts``; then every prompt whose draft input has never been attempted (new, or edited
  since) gets a draft run. Editing one prompt re-renders that prompt only.
- ``winners_sensor``: new decisions refresh ``review_selections`` and send newly picked
  winners without a final render for their current input to the final pass.
- ``report_sensor``: a finished draft or final run refreshes its campaigns' reports.

"Already attempted" is read from lineage (the input each request sent), not from sensor
state, so a crash, a manual run or a sensor restart never causes a second render.

Why sensors and not ``AutomationCondition``s: each of these does something a declarative
condition cannot. Campaign files and review decisions live outside Dagster (an automation
condition sees only Dagster's own events), and new prompts and winners must be *registered* as
dynamic partitions before anything can target them (``dynamic_partitions_requests``). "Needs a
render" means "no request for this exact input in lineage", not "missing or stale in Dagster"
(an edited prompt is materialized yet needs a render; a failed one must not be retried in a
loop). The final pass needs run config (the refine/rerun mode), which automation cannot pass.
And a report refreshes after every finished render run, failed ones included, while ``eager()``
reacts to materializations only and, over the report's all-partitions dependencies, waits while
any prompt is missing or failed. Runs are tagged and configured as ``falassets.pipeline.launch``
does (``partition_tags``, ``pass_tags``, ``pass_run_config``), so a pass looks the same wherever
it started.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from falassets import campaigns, settings
from falassets.campaigns import Campaign, CampaignError
from falassets.lineage import decisions, queries
from falassets.lineage.passes import DRAFT, FINAL, RequestRow, chosen_reference, freshness
from falassets.pipeline.assets.lookup import read_table_or_none
from falassets.pipeline.assets.partitions import (
    campaign_partitions,
    contiguous_ranges,
    range_run_request,
    run_partition_keys,
    unregistered,
    winner_partitions,
)
from falassets.pipeline.deployment import split_runs
from falassets.pipeline.jobs import (
    draft_pass,
    final_pass,
    pass_run_config,
    pass_tags,
    prompts_pass,
    report_pass,
    review_pass,
)

SENSOR_INTERVAL_S = 15
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
FINISHED_STATUSES = [
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
]


# ---------------------------------------------------------------- shared helpers


def keys_in_active_runs(
    instance: dg.DagsterInstance, job_name: str, ordered_keys: list[str]
) -> set[str]:
    """Partitions a queued or running run of ``job_name`` is already going to render."""
    runs = instance.get_runs(dg.RunsFilter(job_name=job_name, statuses=ACTIVE_STATUSES))
    return {key for run in runs for key in run_partition_keys(run, ordered_keys)}


def not_yet_attempted(
    campaign: str,
    pass_name: str,
    wanted_inputs: dict[str, dict[str, Any]],
    references: dict[str, str | None] | None = None,
) -> list[str]:
    """Keys whose latest request in lineage was not for ``wanted_inputs[key]`` (or none);
    ``references``: a final's chosen draft variant per key (``lineage.passes.freshness``)."""
    latest = queries.latest_requests(campaign, pass_name)
    refs = references or {}
    return [
        key
        for key, wanted in wanted_inputs.items()
        if not freshness(
            wanted, RequestRow.of(latest.get((key, pass_name))), reference=refs.get(key)
        ).attempted
    ]


def _table(campaign: str) -> Campaign | None:
    """The loaded table, or None when there is none yet or it is damaged (the prompts run
    that rebuilds it reports the problem)."""
    try:
        return read_table_or_none(campaign)
    except (CampaignError, ValueError):
        return None


def run_ranges(ordered: list[str], keys: Iterable[str]) -> list[list[str]]:
    """The keys of each run a sensor requests: contiguous ranges of ``ordered``, cut into
    runs of at most ``FALASSETS_PARTITIONS_PER_RUN`` keys as the launch path cuts them."""
    return split_runs(contiguous_ranges(ordered, keys), settings.partitions_per_run())


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- campaign files


@dataclass
class FileCursor:
    """What the campaign sensor has seen: file stat + content hash, last prompts event."""

    files: dict[str, list[Any]] = field(default_factory=dict)  # name -> [mtime_ns, size, sha]
    prompts_after: int = 0  # storage id of the last `prompts` materialization handled

    @classmethod
    def load(cls, text: str | None) -> FileCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(files=data.get("files", {}), prompts_after=int(data.get("prompts_after", 0)))

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def changed_campaign_files(cursor: FileCursor, log: Callable[[str], None]) -> list[tuple[str, str]]:
    """(campaign, sha) for files that are new or whose content changed; updates the cursor.

    Stat first, hash only when mtime or size moved, so an idle tick reads no file contents.
    """
    directory = settings.campaigns_dir()
    seen: dict[str, list[Any]] = {}
    changed: list[tuple[str, str]] = []
    paths = sorted(
        p for p in directory.glob("*") if p.suffix in campaigns.CAMPAIGN_SUFFIXES and p.is_file()
    )
    for path in paths:
        stat = path.stat()
        before = cursor.files.get(path.name)
        if before and before[0] == stat.st_mtime_ns and before[1] == stat.st_size:
            seen[path.name] = before
            continue
        try:
            sha = _sha256(path)
        except OSError as exc:  # vanished or unreadable mid-scan: look again next tick
            log(f"cannot read {path}: {exc}")
            continue
        seen[path.name] = [stat.st_mtime_ns, stat.st_size, sha]
        if before and before[2] == sha:
            continue
        try:
            changed.append((campaigns.campaign_name(path), sha))
        except CampaignError as exc:
            log(str(exc))
    cursor.files = seen
    return changed


def draft_requests_for(
    instance: dg.DagsterInstance, campaign_names: Iterable[str], storage_id: int
) -> list[dg.RunRequest]:
    """Draft runs for prompts never attempted at their current input (:func:`run_ranges`)."""
    ordered = instance.get_dynamic_partitions("prompt")
    busy = keys_in_active_runs(instance, draft_pass.name, ordered)
    requests = []
    for campaign in sorted(set(campaign_names)):
        table = _table(campaign)
        if table is None:
            continue
        wanted = {
            campaigns.partition_key(campaign, row.prompt_id): DRAFT.render_input(row)
            for row in table.rows
        }
        needed = [key for key in not_yet_attempted(campaign, DRAFT.name, wanted) if key not in busy]
        for keys in run_ranges(ordered, needed):
            requests.append(
                range_run_request(
                    keys,
                    job_name=draft_pass.name,
                    run_key=f"drafts:{storage_id}:{keys[0]}",
                    run_config=pass_run_config("draft"),
                    tags=pass_tags(campaign, "draft"),
                )
            )
    return requests


@dg.sensor(
    jobs=[prompts_pass, draft_pass],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    description=(
        "New or changed files in $FALASSETS_DATA_DIR/campaigns run `prompts`; new or edited "
        "prompts then get draft renders (only those)."
    ),
)
def campaign_file_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    cursor = FileCursor.load(context.cursor)
    changed = changed_campaign_files(cursor, context.log.warning)
    new_campaigns = unregistered(context.instance, campaign_partitions, [c for c, _ in changed])
    run_requests = [
        dg.RunRequest(
            run_key=f"prompts:{campaign}:{sha[:16]}",
            job_name=prompts_pass.name,
            partition_key=campaign,
        )
        for campaign, sha in changed
    ]
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("prompts"), after_storage_id=cursor.prompts_after
        ),
        limit=1000,
        ascending=True,
    ).records
    if records:
        cursor.prompts_after = max(record.storage_id for record in records)
        loaded = [record.partition_key for record in records if record.partition_key]
        run_requests += draft_requests_for(context.instance, loaded, cursor.prompts_after)
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=(
            [campaign_partitions.build_add_request(new_campaigns)] if new_campaigns else []
        ),
        cursor=cursor.dump(),
    )


# ---------------------------------------------------------------- winners


def decisions_fingerprint() -> str:
    """Changes whenever any decisions journal grows or is replaced (cheap: stat only)."""
    stats = [
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(settings.journal_dir().glob("decisions-*.jsonl"))
    ]
    return _digest(stats)


@dataclass
class WinnersCursor:
    journal: str = ""
    campaigns: dict[str, str] = field(default_factory=dict)  # campaign -> digest of decisions

    @classmethod
    def load(cls, text: str | None) -> WinnersCursor:
        return cls(**json.loads(text)) if text else cls()

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dg.sensor(
    jobs=[review_pass, final_pass],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    description=(
        "New review decisions refresh `review_selections`; newly picked winners without a "
        "final render for their current input are rendered by the final pass, in the mode "
        "FALASSETS_AUTO_FINAL_MODE names (rerun, the default, or refine)."
    ),
)
def winners_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    mode = settings.auto_final_mode()  # a bad value fails the tick with the fix, before anything
    cursor = WinnersCursor.load(context.cursor)
    journal = decisions_fingerprint()
    if journal == cursor.journal:
        return dg.SkipReason("no new decisions")
    cursor.journal = journal
    by_campaign: dict[str, dict[str, str]] = {}
    chosen = decisions.chosen_variants()  # another variant of a winner is a new decision
    for (campaign, prompt_id), decision in decisions.current_decisions().items():
        variant = chosen.get((campaign, prompt_id), 1)
        marked = f"{decision}:{variant}" if variant != 1 else decision
        by_campaign.setdefault(campaign, {})[prompt_id] = marked
    instance = context.instance
    ordered = list(instance.get_dynamic_partitions("winner"))
    busy = keys_in_active_runs(instance, final_pass.name, ordered)
    registered_campaigns = set(instance.get_dynamic_partitions("campaign"))
    run_requests: list[dg.RunRequest] = []
    new_winners: list[str] = []
    needed: dict[str, list[str]] = {}  # campaign -> winner keys to render
    for campaign, decided in sorted(by_campaign.items()):
        digest = _digest(decided)
        if cursor.campaigns.get(campaign) == digest or campaign not in registered_campaigns:
            continue
        table = _table(campaign)
        if table is None:
            continue  # decisions for a campaign not loaded yet: look again next time
        cursor.campaigns[campaign] = digest
        run_requests.append(
            dg.RunRequest(
                run_key=f"review:{campaign}:{digest}",
                job_name=review_pass.name,
                partition_key=campaign,
            )
        )
        rows = {row.prompt_id: row for row in table.rows}
        picked = [pid for pid in decisions.winners(campaign) if pid in rows]
        wanted = {
            campaigns.partition_key(campaign, pid): campaigns.render_input(rows[pid], FINAL.quality)
            for pid in picked
        }
        new_winners += unregistered(instance, winner_partitions, wanted)
        drafts = queries.latest_requests(campaign, DRAFT.name)
        references = {  # a final refined from another variant than the chosen one is stale
            key: chosen_reference(drafts.get((key, DRAFT.name)), chosen.get((campaign, pid), 1))
            for pid, key in ((pid, campaigns.partition_key(campaign, pid)) for pid in picked)
        }
        needed[campaign] = [
            key
            for key in not_yet_attempted(campaign, FINAL.name, wanted, references)
            if key not in busy
        ]
    ordered += [key for key in new_winners if key not in ordered]
    for campaign, keys_needed in needed.items():  # one campaign per run: its pass tags name it
        for keys in run_ranges(ordered, keys_needed):
            run_requests.append(
                range_run_request(
                    keys,
                    job_name=final_pass.name,
                    run_key=f"finals:{journal}:{keys[0]}",
                    run_config=pass_run_config("final", mode=mode),
                    tags=pass_tags(campaign, "final"),
                )
            )
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=(
            [winner_partitions.build_add_request(new_winners)] if new_winners else []
        ),
        cursor=cursor.dump(),
    )


# ---------------------------------------------------------------- reports


@dg.sensor(
    job=report_pass,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    description="A finished draft or final run refreshes the reports of its campaigns.",
)
def report_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    after = float(context.cursor or 0)
    instance = context.instance
    campaigns_touched: set[str] = set()
    latest = after
    for job, partitions in ((draft_pass, "prompt"), (final_pass, "winner")):
        records = instance.get_run_records(
            dg.RunsFilter(
                job_name=job.name,
                statuses=FINISHED_STATUSES,
                updated_after=_utc(after) if after else None,
            ),
            limit=200,
        )
        if not records:
            continue
        ordered = list(instance.get_dynamic_partitions(partitions))
        for record in records:
            latest = max(latest, record.update_timestamp.timestamp())
            for key in run_partition_keys(record.dagster_run, ordered):
                campaigns_touched.add(campaigns.split_partition_key(key)[0])
    if latest == after:
        return dg.SkipReason("no finished render runs")
    known = set(instance.get_dynamic_partitions("campaign"))
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"report:{campaign}:{latest}",
                job_name=report_pass.name,
                partition_key=campaign,
            )
            for campaign in sorted(campaigns_touched & known)
        ],
        cursor=str(latest),
    )


def _utc(timestamp: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, tz=UTC)
