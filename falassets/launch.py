"""Launch a pass (draft or final) for a campaign as a real Dagster run in DAGSTER_HOME.

The CLI's `run`, the review page's "render winners" and "retry failed" all go through here, so
every render goes through the pipeline (lineage, partitions, run history), never a side door.

Why ranges: a single-run backfill runs a *contiguous range* of dynamic partition keys (in
insertion order) as one run, and that run materialises or fails every key in it. So the keys a
pass is meant for are split into contiguous stretches of the partition order; a gap between two
stretches is bridged only when every key in it is already up to date (the engine answers those
from lineage: no request, no bill), so a range never renders a key nobody asked for.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
import warnings
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from falassets import settings

PassName = Literal["draft", "final"]
Mode = Literal["rerun", "refine"]

PASS_ASSET: dict[str, str] = {"draft": "draft_renders", "final": "final_renders"}
PASS_JOB: dict[str, str] = {"draft": "draft_pass", "final": "final_pass"}
PASS_PARTITIONS: dict[str, str] = {"draft": "prompt", "final": "winner"}
CAMPAIGN_PARTITIONS = "campaign"

#: Every run of one launch carries this tag, so a launch (several runs) can be found again.
LAUNCH_TAG = "falassets/launch"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"


class LaunchError(ValueError):
    """The pass cannot start (unknown partitions, bad run config): nothing was rendered."""


@dataclass(frozen=True)
class PassResult:
    run_id: str  # the (first) run of the pass; "" when there was nothing to run
    succeeded: list[str]  # partition keys
    failed: list[str]
    run_ids: list[str] = field(default_factory=list)  # every run of the pass, in order
    run_errors: list[str] = field(default_factory=list)  # why runs failed, one line each
    failures: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (type, message)
    # fal refused the key or its host is not trusted: a configuration problem, not a render one
    auth_error: bool = False


# -- Dagster home and instance ---------------------------------------------------------------

_DAGSTER_YAML = """\
# Written by falassets when it created this DAGSTER_HOME. Edit freely.
telemetry:
  enabled: false
# Dagster's SQLite event log, storing a batch of events (the "materialization planned" event
# of every prompt in a run) in one transaction instead of one each: see
# falassets/dagster_event_log.py. Remove the block to go back to Dagster's default.
event_log_storage:
  module: falassets.dagster_event_log
  class: BatchedSqliteEventLogStorage
  config:
    dagster_home:
      env: DAGSTER_HOME
"""

# What earlier versions wrote: a home that still has exactly this gets the current file.
_OLD_DAGSTER_YAML = """\
# Written by falassets when it created this DAGSTER_HOME. Edit freely.
telemetry:
  enabled: false
"""


def prepare_dagster_home() -> Path:
    """Make sure DAGSTER_HOME is set and exists, so CLI runs and `dagster dev` share a home."""
    home = settings.dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or config.read_text() == _OLD_DAGSTER_YAML:
        config.write_text(_DAGSTER_YAML)
    return home


_instances: dict[Path, Any] = {}


def dagster_instance() -> Any:
    """The persistent instance in DAGSTER_HOME (what `dagster dev` shows), one per home and
    process: opening one checks the storage's schema migrations, which takes a second or two."""
    import dagster as dg

    home = prepare_dagster_home()
    if home not in _instances:
        _instances[home] = dg.DagsterInstance.get()
    return _instances[home]


def quiet_dagster_warnings() -> None:
    """Beta/preview warnings (single-run backfill policy) are for pipeline authors, not users."""
    warnings.filterwarnings("ignore", module=r"dagster(\..*)?$")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        import dagster as dg

        for name in ("BetaWarning", "PreviewWarning", "SupersessionWarning"):
            category = getattr(dg, name, None)
            if isinstance(category, type):
                warnings.filterwarnings("ignore", category=category)
    except ImportError:  # pragma: no cover - dagster is a dependency
        pass


# -- the jobs ---------------------------------------------------------------------------------

DEFINITIONS_MODULE = "falassets.definitions"
ASSET_JOB = "__ASSET_JOB"  # the implicit all-assets job: what the UI's "Materialize" runs


def reconstructable_job(job_name: str) -> Any:
    """The job as `dagster dev` loads it (module ``falassets.definitions``, attribute
    ``defs``), so runs started here can be re-executed from the UI."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repository = ReconstructableRepository.for_module(
        DEFINITIONS_MODULE, "defs", working_directory=os.getcwd()
    )
    return repository.get_reconstructable_job(job_name)


# -- ranges -----------------------------------------------------------------------------------


def contiguous_runs(
    order: Sequence[str], targets: Iterable[str], bridgeable: Container[str] = ()
) -> list[list[str]]:
    """Split ``targets`` into stretches of consecutive keys of ``order`` (the partition
    definition's insertion order). Keys strictly between two stretches are included, joining
    them, only when every one of them is in ``bridgeable``. Raises LaunchError naming keys
    that are not in ``order``."""
    position = {key: index for index, key in enumerate(order)}
    wanted = set(targets)
    unknown = sorted(wanted - position.keys())
    if unknown:
        shown = ", ".join(unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        raise LaunchError(f"partition keys not registered in Dagster: {shown}")
    indexes = sorted(position[key] for key in wanted)
    runs: list[list[str]] = []
    for index in indexes:
        if runs:
            last = position[runs[-1][-1]]
            gap = order[last + 1 : index]
            if all(key in bridgeable for key in gap):
                runs[-1].extend([*gap, order[index]])
                continue
        runs.append([order[index]])
    return runs


# -- running ----------------------------------------------------------------------------------


def _run_config(job_def: Any, extra: Mapping[str, Any], *, verbose: bool) -> dict[str, Any]:
    config: dict[str, Any] = dict(extra)
    executor = getattr(job_def, "executor_def", None)
    if getattr(executor, "name", None) == "multi_or_in_process_executor":
        # In-process: no step subprocess to start, and progress is read from this process.
        config["execution"] = {"config": {"in_process": {}}}
    if not verbose:
        # The CLI prints its own progress and summary; the full log stays in the run's event
        # log in DAGSTER_HOME (open it with `falassets dev`).
        config["loggers"] = {"console": {"config": {"log_level": "CRITICAL"}}}
    return config


def execute(
    job_name: str,
    *,
    run_id: str | None = None,
    tags: Mapping[str, str],
    run_config: Mapping[str, Any] | None = None,
    asset_selection: Sequence[str] | None = None,
    verbose: bool = False,
) -> Any:
    """Run one job in this process as a run recorded in DAGSTER_HOME; return the DagsterRun.

    This is ``dagster.execute_job`` with one addition: the run id is chosen by the caller, so
    ``submit_pass`` can hand it out before the run starts.
    """
    import dagster as dg
    from dagster._core.execution.api import execute_run

    quiet_dagster_warnings()
    instance = dagster_instance()
    recon = reconstructable_job(job_name)
    load_data = recon.repository.get_definition().repository_load_data
    recon = recon.with_repository_load_data(load_data)
    job_def = recon.get_definition()
    selection = frozenset(dg.AssetKey(name) for name in asset_selection or ()) or None
    try:
        run = instance.create_run_for_job(
            job_def=job_def,
            run_id=run_id or str(uuid.uuid4()),
            run_config=_run_config(job_def, run_config or {}, verbose=verbose),
            tags={**job_def.run_tags, **tags},
            job_code_origin=recon.get_python_origin(),
            repository_load_data=load_data,
            asset_selection=selection,
        )
    except dg.DagsterInvalidConfigError as error:
        raise LaunchError(f"invalid run configuration: {error}") from None
    execute_run(recon, run, instance, raise_on_error=False)
    return instance.get_run_by_id(run.run_id)


def _run_error(instance: Any, run_id: str) -> tuple[str | None, bool, str]:
    """The first failure of a run: its first line, whether it was fal refusing the key, and
    the whole description (the pipeline lists failed partitions there)."""
    from dagster import DagsterEventType

    from falassets.fal.retry import UNTRUSTED_HOST

    records = instance.get_records_for_run(
        run_id, of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        data = getattr(event, "step_failure_data", None)
        error = getattr(data, "error", None)
        names: list[str] = []
        while error is not None:
            names.append(error.cls_name or "")
            error = error.cause
        user = getattr(data, "user_failure_data", None)
        message = (
            getattr(user, "description", None)
            or record.event_log_entry.message
            or event.message
            or ""
        )
        first = message.strip().splitlines()[0] if message.strip() else "the run failed"
        is_auth = (
            "FalAuthError" in names or "refused the key" in message or UNTRUSTED_HOST in message
        )
        return first, is_auth, message
    return None, False, ""


_FAILURE_LINE = re.compile(r"^- (?P<key>[a-z0-9_][a-z0-9_-]*): (?P<type>[^:]+): (?P<message>.*)$")


def parse_failure_lines(description: str) -> dict[str, tuple[str, str]]:
    """``- <key>: <error type>: <message>`` lines of the pipeline's Failure description."""
    found: dict[str, tuple[str, str]] = {}
    for line in description.splitlines():
        match = _FAILURE_LINE.match(line.strip())
        if match:
            found[match["key"]] = (match["type"].strip(), match["message"].strip())
    return found


def materialized_in_run(instance: Any, run_id: str, asset: str) -> set[str]:
    """Partition keys of ``asset`` that the run really materialised."""
    from dagster import AssetKey, DagsterEventType

    key = AssetKey(asset)
    done: set[str] = set()
    cursor = None
    while True:
        connection = instance.get_records_for_run(
            run_id, cursor=cursor, of_type=DagsterEventType.ASSET_MATERIALIZATION, limit=1000
        )
        for record in connection.records:
            event = record.event_log_entry.dagster_event
            if event.asset_key == key and event.partition:
                done.add(event.partition)
        if not connection.has_more:
            return done
        cursor = connection.cursor


def register_campaign(campaign: str) -> None:
    instance = dagster_instance()
    if not instance.has_dynamic_partition(CAMPAIGN_PARTITIONS, campaign):
        instance.add_dynamic_partitions(CAMPAIGN_PARTITIONS, [campaign])


def materialize_campaign_asset(
    campaign: str, asset: str, *, launch_id: str, verbose: bool = False
) -> None:
    """Materialise one campaign-partitioned asset (prompts, review_selections, campaign_report)
    in its own run, like the UI's "Materialize" button; LaunchError when it fails."""
    from dagster import DagsterRunStatus

    register_campaign(campaign)
    run = execute(
        ASSET_JOB,
        tags={PARTITION_TAG: campaign, LAUNCH_TAG: launch_id},
        asset_selection=[asset],
        verbose=verbose,
    )
    if run.status != DagsterRunStatus.SUCCESS:
        message, _, _ = _run_error(dagster_instance(), run.run_id)
        raise LaunchError(f"{asset} for campaign '{campaign}' failed (run {run.run_id}): {message}")


def pass_partition_keys(campaign: str, pass_name: PassName) -> list[str]:
    """The campaign's keys of the pass's partition definition, in its order."""
    prefix = f"{campaign}-"
    keys = dagster_instance().get_dynamic_partitions(PASS_PARTITIONS[pass_name])
    return [key for key in keys if key.startswith(prefix)]


def winner_keys(campaign: str) -> list[str]:
    """Keys of the campaign's current winners (latest decision 'pick') that Dagster knows."""
    from falassets import decisions
    from falassets.campaigns import partition_key

    picked = {partition_key(campaign, prompt_id) for prompt_id in decisions.winners(campaign)}
    return [key for key in pass_partition_keys(campaign, "final") if key in picked]


def run_pass(
    campaign: str,
    pass_name: PassName,
    *,
    partition_keys: list[str] | None = None,
    concurrency: int | None = None,
    budget_usd: float | None = None,
    mode: Mode = "rerun",
    force: bool = False,
    run_id: str | None = None,
    bridgeable: Container[str] = (),
    prepare: bool = True,
    on_run_start: Callable[[str, list[str]], Any] | None = None,
    verbose: bool = False,
) -> PassResult:
    """Run the pass now (in this process, as Dagster runs recorded in DAGSTER_HOME).

    First ``prompts`` (and for finals ``review_selections``) for the campaign, then the pass
    asset over ``partition_keys`` (default: every prompt for drafts, every winner for finals),
    one run per contiguous stretch of keys. ``bridgeable`` are keys known to be up to date
    that may join two stretches into one run. ``on_run_start(run_id, keys)`` lets a caller
    follow each run's progress.
    """
    from dagster import DagsterRunStatus

    if pass_name not in PASS_JOB:
        raise LaunchError(f"unknown pass '{pass_name}': use 'draft' or 'final'")
    launch_id = run_id or str(uuid.uuid4())
    if prepare:
        materialize_campaign_asset(campaign, "prompts", launch_id=launch_id, verbose=verbose)
        if pass_name == "final":
            materialize_campaign_asset(
                campaign, "review_selections", launch_id=launch_id, verbose=verbose
            )
    order = dagster_instance().get_dynamic_partitions(PASS_PARTITIONS[pass_name])
    if partition_keys is None:
        targets = (
            pass_partition_keys(campaign, "draft")
            if pass_name == "draft"
            else winner_keys(campaign)
        )
    else:
        targets = list(dict.fromkeys(partition_keys))
    stretches = contiguous_runs(order, targets, bridgeable)

    op_config: dict[str, Any] = {"force": force}
    if pass_name == "final":
        op_config["mode"] = mode
    resource_config: dict[str, Any] = {}
    if concurrency is not None:
        resource_config["concurrency"] = concurrency
    if budget_usd is not None:
        resource_config["budget_usd"] = budget_usd
    run_config: dict[str, Any] = {"ops": {PASS_ASSET[pass_name]: {"config": op_config}}}
    if resource_config:
        run_config["resources"] = {"fal": {"config": resource_config}}

    instance = dagster_instance()
    succeeded: list[str] = []
    failed: list[str] = []
    run_ids: list[str] = []
    errors: list[str] = []
    failures: dict[str, tuple[str, str]] = {}
    auth_error = False
    for index, keys in enumerate(stretches):
        this_run_id = launch_id if index == 0 and run_id else str(uuid.uuid4())
        tags = {LAUNCH_TAG: launch_id, "falassets/campaign": campaign, "falassets/pass": pass_name}
        if len(keys) == 1:
            tags[PARTITION_TAG] = keys[0]
        else:
            tags[RANGE_START_TAG], tags[RANGE_END_TAG] = keys[0], keys[-1]
        if on_run_start is not None:
            on_run_start(this_run_id, keys)
        run = execute(
            PASS_JOB[pass_name],
            run_id=this_run_id,
            tags=tags,
            run_config=run_config,
            verbose=verbose,
        )
        run_ids.append(run.run_id)
        done = materialized_in_run(instance, run.run_id, PASS_ASSET[pass_name])
        wanted = set(targets)
        succeeded += [key for key in keys if key in done and key in wanted]
        failed += [key for key in keys if key not in done and key in wanted]
        if run.status != DagsterRunStatus.SUCCESS:
            message, is_auth, description = _run_error(instance, run.run_id)
            errors.append(f"run {run.run_id}: {message}")
            failures.update(parse_failure_lines(description))
            auth_error |= is_auth
        if auth_error:  # every further run would be refused the same way
            rest = [key for later in stretches[index + 1 :] for key in later if key in set(targets)]
            failed += rest
            break
    return PassResult(
        run_id=run_ids[0] if run_ids else "",
        succeeded=succeeded,
        failed=failed,
        run_ids=run_ids,
        run_errors=errors,
        failures={key: value for key, value in failures.items() if key in set(failed)},
        auth_error=auth_error,
    )


def launch_log_path(run_id: str) -> Path:
    """Output of a background launch (progress lines, errors)."""
    return settings.state_dir() / "launches" / f"{run_id}.log"


def write_launch_result(run_id: str, result: Mapping[str, Any]) -> None:
    """Record how a background launch ended (atomically: readers never see half a file)."""
    import json

    path = launch_log_path(run_id).with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(dict(result), indent=1))
    os.replace(temporary, path)


def launch_result(run_id: str) -> dict[str, Any] | None:
    """How a launch from :func:`submit_pass` ended: ``exit_code`` (0 all succeeded, 1 some
    failed, 2 bad input), ``succeeded``, ``failed``, ``run_ids`` (a pass over scattered
    partitions is several runs; ``run_id`` is the first), or ``error``. None while running."""
    import json

    try:
        return json.loads(launch_log_path(run_id).with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None


def submit_pass(
    campaign: str,
    pass_name: PassName,
    *,
    partition_keys: list[str] | None = None,
    mode: Mode = "rerun",
    concurrency: int | None = None,
    budget_usd: float | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Start the pass in a background process and return its Dagster run id at once.

    The process is ``falassets run <campaign> --run-id ID`` in its own session (it outlives a
    closed terminal or a restarted review page); its output goes to ``launch_log_path(ID)``.
    """
    from falassets.campaigns import split_partition_key

    if pass_name not in PASS_JOB:
        raise LaunchError(f"unknown pass '{pass_name}': use 'draft' or 'final'")
    run_id = str(uuid.uuid4())
    argv = [sys.executable, "-m", "falassets.cli", "run", campaign, "--pass", pass_name]
    argv += ["--run-id", run_id, "--plain"]
    if pass_name == "final":
        argv += ["--mode", mode]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if budget_usd is not None:
        argv += ["--budget-usd", str(budget_usd)]
    log_path = launch_log_path(run_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if partition_keys is not None:
        ids = []
        for key in partition_keys:
            key_campaign, prompt_id = split_partition_key(key)
            if key_campaign != campaign:
                raise LaunchError(f"partition key '{key}' is not in campaign '{campaign}'")
            ids.append(prompt_id)
        only = log_path.with_suffix(".only")
        only.write_text("\n".join(ids) + "\n")
        argv += ["--only", f"@{only}"]
    child_env = {**os.environ, **(env or {})}
    child_env["DAGSTER_HOME"] = str(prepare_dagster_home())
    child_env["FALASSETS_DATA_DIR"] = str(settings.data_dir())
    with log_path.open("ab") as log:
        subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,
            close_fds=True,
        )
    return run_id
