"""Launch a pass (draft or final) for a campaign as a real Dagster run in DAGSTER_HOME.

The CLI's `run`, the review page's "render winners" and "retry failed" all go through here, so
every render goes through the pipeline (lineage, partitions, run history), never a side door.

Why ranges: a single-run backfill runs a *contiguous range* of dynamic partition keys (in
insertion order) as one run, and that run materialises or fails every key in it. So the keys a
pass is meant for are split into contiguous stretches of the partition order; a gap between two
stretches is bridged only when every key in it is already up to date (the engine answers those
from lineage: no request, no bill), so a range never renders a key nobody asked for.

Dagster's public API only: each run is ``dagster.execute_job`` over ``dagster.reconstructable``
of an explicit job in ``falassets.pipeline.definitions`` (one per pass and per campaign asset),
tagged with Dagster's public partition tags; what a run rendered and why partitions failed are read
from its ``JobExecutionResult`` (materialisation events, the step's ``Failure`` metadata).
The winners sensor builds its run requests from the same tags and run config.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import uuid
import warnings
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from falassets import settings
from falassets.lineage.passes import PASSES
from falassets.pipeline.assets.final_jobs import Mode
from falassets.process_exit import end_without_teardown

PassName = Literal["draft", "final"]

PASS_ASSET: dict[str, str] = {name: p.asset for name, p in PASSES.items()}
PASS_JOB: dict[str, str] = {"draft": "draft_pass", "final": "final_pass"}
PASS_PARTITIONS: dict[str, str] = {"draft": "prompt", "final": "winner"}
CAMPAIGN_PARTITIONS = "campaign"

#: Every run of one launch carries this tag, so a launch (several runs) can be found again.
LAUNCH_TAG = "falassets/launch"
#: Unique per run: how a launcher finds the id of the run ``dagster.execute_job`` created.
RUN_TOKEN_TAG = "falassets/run_token"
_RUN_LOOKUP_INTERVAL_S = 0.05


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
# Opt-in: Dagster's SQLite event log, storing a batch of events (the "materialization
# planned" event of every prompt in a run) in one transaction instead of one each: see
# falassets/pipeline/event_log.py. batch_writes: false (or removing the block) goes back to
# Dagster's own writes; runs already recorded stay either way.
event_log_storage:
  module: falassets.pipeline.event_log
  class: BatchedSqliteEventLogStorage
  config:
    dagster_home:
      env: DAGSTER_HOME
    batch_writes: true
"""

# What earlier versions wrote: a home that still has exactly this gets the current file.
_OLD_DAGSTER_YAML = """\
# Written by falassets when it created this DAGSTER_HOME. Edit freely.
telemetry:
  enabled: false
"""


def prepare_dagster_home() -> Path:
    """Make sure DAGSTER_HOME is set and exists, so CLI runs and `dagster dev` share a home.

    A home without a ``dagster.yaml`` gets one: the deployment's Postgres instance when
    ``FALASSETS_POSTGRES_URL`` is set (``pipeline.deployment.POSTGRES_DAGSTER_YAML``), else
    the embedded SQLite one. A file someone wrote is never replaced."""
    from falassets.pipeline.deployment import POSTGRES_DAGSTER_YAML

    home = settings.dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(POSTGRES_DAGSTER_YAML if settings.postgres_url() else _DAGSTER_YAML)
    elif config.read_text() == _OLD_DAGSTER_YAML:
        config.write_text(_DAGSTER_YAML)
    return home


_instances: dict[Path, Any] = {}


def dagster_instance() -> Any:
    """The persistent instance in DAGSTER_HOME (what `dagster dev` shows), one per home and
    process: opening one checks the storage's schema migrations, which takes a second or two."""
    from falassets.pipeline.deployment import open_instance

    home = prepare_dagster_home()
    if home not in _instances:
        _instances[home] = open_instance()
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

#: The explicit job of each campaign-partitioned asset (what the UI's "Materialize" runs).
CAMPAIGN_ASSET_JOB: dict[str, str] = {
    "prompts": "prompts_pass",
    "review_selections": "review_pass",
    "campaign_report": "report_pass",
}


def reconstructable_job(job_name: str) -> Any:
    """``dagster.reconstructable`` over the job's module-level builder in
    ``falassets.pipeline.definitions`` (the module ``workspace.yaml`` loads), so Dagster can rebuild
    the job wherever it executes it."""
    import dagster as dg

    from falassets.pipeline import definitions

    builder = definitions.JOB_BUILDERS.get(job_name)
    if builder is None:
        raise LaunchError(f"unknown job '{job_name}'")
    return dg.reconstructable(builder)


# -- ranges -----------------------------------------------------------------------------------


def contiguous_runs(
    order: Sequence[str], targets: Iterable[str], bridgeable: Container[str] = ()
) -> list[list[str]]:
    """``falassets.pipeline.assets.partitions.contiguous_ranges`` of ``targets`` in ``order`` (the
    partition definition's insertion order), refusing keys that are not registered: raises
    LaunchError naming them."""
    from falassets.pipeline.assets.partitions import contiguous_ranges

    known = set(order)
    wanted = list(dict.fromkeys(targets))
    unknown = sorted(key for key in wanted if key not in known)
    if unknown:
        shown = ", ".join(unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        raise LaunchError(f"partition keys not registered in Dagster: {shown}")
    return contiguous_ranges(order, wanted, bridgeable)


# -- running ----------------------------------------------------------------------------------


def _run_config(job_def: Any, extra: Mapping[str, Any], *, verbose: bool) -> dict[str, Any]:
    from falassets.pipeline.deployment import execution_config

    config: dict[str, Any] = dict(extra)
    executor = getattr(job_def, "executor_def", None)
    # Dagster's default executor: in process (no step subprocess to start, and progress is read
    # from this process); another executor (celery) keeps the config the definitions gave it.
    execution = execution_config(getattr(executor, "name", None))
    if execution is not None:
        config["execution"] = execution
    if not verbose:
        # The CLI prints its own progress and summary; the full log stays in the run's event
        # log in DAGSTER_HOME (open it with `falassets dev`).
        config["loggers"] = {"console": {"config": {"log_level": "CRITICAL"}}}
    return config


def _notify_run_created(
    instance: Any, token: str, callback: Callable[[str], Any], finished: threading.Event
) -> threading.Thread:
    """Call ``callback(run_id)`` as soon as the run tagged ``RUN_TOKEN_TAG=token`` exists.

    ``dagster.execute_job`` creates the run and executes it in one call and chooses the run
    id itself, so a caller following the run's progress learns the id from the run storage
    (public ``get_run_records``), looked up from a side thread while the run executes."""
    import dagster as dg

    def look() -> None:
        while True:
            records = instance.get_run_records(dg.RunsFilter(tags={RUN_TOKEN_TAG: token}), limit=1)
            if records:
                callback(records[0].dagster_run.run_id)
                return
            if finished.wait(_RUN_LOOKUP_INTERVAL_S):
                return

    thread = threading.Thread(target=look, name="falassets-run-start", daemon=True)
    thread.start()
    return thread


def execute(
    job_name: str,
    *,
    tags: Mapping[str, str],
    run_config: Mapping[str, Any] | None = None,
    verbose: bool = False,
    on_created: Callable[[str], Any] | None = None,
) -> Any:
    """Run one job from this process as a run recorded in DAGSTER_HOME, through
    ``dagster.execute_job``; return its ``JobExecutionResult``. ``on_created(run_id)`` is
    called once the run exists (before its step has finished). One at a time per process:
    see :func:`run_pass`."""
    import dagster as dg

    quiet_dagster_warnings()
    instance = dagster_instance()
    recon = reconstructable_job(job_name)
    token = tags.get(RUN_TOKEN_TAG) or str(uuid.uuid4())
    finished = threading.Event()
    watcher = _notify_run_created(instance, token, on_created, finished) if on_created else None
    try:
        return dg.execute_job(
            recon,
            instance=instance,
            run_config=_run_config(recon.get_definition(), run_config or {}, verbose=verbose),
            tags={**tags, RUN_TOKEN_TAG: token},
        )
    except dg.DagsterInvalidConfigError as error:
        raise LaunchError(f"invalid run configuration: {error}") from None
    finally:
        finished.set()
        if watcher is not None:
            watcher.join()


@dataclass(frozen=True)
class RunOutcome:
    """What one run of a pass did, read from Dagster's records of it."""

    run_id: str
    materialized: set[str]  # partition keys of the asset the run materialised
    error: str | None  # the first line of why the run failed; None when it succeeded
    failures: dict[str, tuple[str, str]]  # key -> (error type, message), from the Failure
    auth_error: bool  # fal refused the key or its host is not trusted


def recorded_materializations(run_id: str, asset: str) -> set[str]:
    """Partitions of ``asset`` the run's event log (in DAGSTER_HOME's storage) records as
    materialised. A step on another host records them there as they happen; if that host dies
    they never reach the result this process holds, yet Dagster shows them materialised."""
    import dagster as dg

    instance = dagster_instance()
    key = dg.AssetKey(asset)
    found: set[str] = set()
    cursor: str | None = None
    while True:
        connection = instance.get_records_for_run(
            run_id, cursor=cursor, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=1000
        )
        for record in connection.records:
            event = record.event_log_entry.dagster_event
            if event is not None and event.asset_key == key and event.partition:
                found.add(event.partition)
        cursor = connection.cursor
        if not connection.has_more:
            return found


def run_outcome(result: Any, asset: str) -> RunOutcome:
    """Materialised partitions and per-partition failures of ``asset`` in a finished run,
    from Dagster's own records: its materialisation events (the result's and the event log's)
    and the structured metadata of the step's ``Failure`` (see
    ``falassets.pipeline.assets.rendering.failure``), never its text."""
    from falassets.engine.retry import UNTRUSTED_HOST
    from falassets.pipeline.assets.rendering import AUTH_ERROR_METADATA, FAILURES_METADATA

    materialized = {
        event.partition
        for event in result.asset_materializations_for_node(asset)
        if event.partition
    }
    if not result.success:  # a step lost with its host: what it recorded before it died
        materialized |= recorded_materializations(result.run_id, asset)
    if result.success:
        return RunOutcome(result.run_id, materialized, None, {}, False)
    data = result.failure_data_for_node(asset)
    user = getattr(data, "user_failure_data", None)
    metadata = dict(getattr(user, "metadata", None) or {})
    table = metadata.get(FAILURES_METADATA)
    failures = {
        key: (str(value.get("error_type", "")), str(value.get("message", "")))
        for key, value in (getattr(table, "value", None) or {}).items()
    }
    names: list[str] = []
    error = getattr(data, "error", None)
    while error is not None:
        names.append(error.cls_name or "")
        error = error.cause
    flag = metadata.get(AUTH_ERROR_METADATA)
    message = (getattr(user, "description", None) or "") or _first_error_message(data, result)
    first = message.strip().splitlines()[0] if message.strip() else "the run failed"
    auth = bool(getattr(flag, "value", False)) or "FalAuthError" in names
    return RunOutcome(result.run_id, materialized, first, failures, auth or UNTRUSTED_HOST in first)


def _first_error_message(data: Any, result: Any) -> str:
    """Why a run failed when no step left a ``Failure``: the step's error, else the first
    failure event's message (a resource that could not start, a bad run config)."""
    error = getattr(data, "error", None)
    if error is not None and error.message:
        return str(error.message)
    for event in result.get_step_failure_events():
        if event.message:
            return str(event.message)
    failures = [event for event in result.all_events if event.is_failure and event.message]
    return str(failures[0].message) if failures else ""


def register_campaign(campaign: str) -> None:
    instance = dagster_instance()
    if not instance.has_dynamic_partition(CAMPAIGN_PARTITIONS, campaign):
        instance.add_dynamic_partitions(CAMPAIGN_PARTITIONS, [campaign])


def materialize_campaign_asset(
    campaign: str, asset: str, *, launch_id: str, verbose: bool = False
) -> None:
    """Materialise one campaign-partitioned asset (prompts, review_selections, campaign_report)
    in its own run of the asset's job, like the UI's "Materialize" button; LaunchError when
    it fails."""
    from falassets.pipeline.assets.partitions import PARTITION_TAG

    if asset not in CAMPAIGN_ASSET_JOB:
        raise LaunchError(f"'{asset}' is not a campaign asset")
    register_campaign(campaign)
    result = execute(
        CAMPAIGN_ASSET_JOB[asset],
        tags={PARTITION_TAG: campaign, LAUNCH_TAG: launch_id},
        verbose=verbose,
    )
    if not result.success:
        outcome = run_outcome(result, asset)
        raise LaunchError(
            f"{asset} for campaign '{campaign}' failed (run {result.run_id}): {outcome.error}"
        )


def pass_partition_keys(campaign: str, pass_name: PassName) -> list[str]:
    """The campaign's keys of the pass's partition definition, in its order."""
    prefix = f"{campaign}-"
    keys = dagster_instance().get_dynamic_partitions(PASS_PARTITIONS[pass_name])
    return [key for key in keys if key.startswith(prefix)]


def winner_keys(campaign: str) -> list[str]:
    """Keys of the campaign's current winners (latest decision 'pick') that Dagster knows."""
    from falassets.campaigns import partition_key
    from falassets.lineage import decisions

    picked = {partition_key(campaign, prompt_id) for prompt_id in decisions.winners(campaign)}
    return [key for key in pass_partition_keys(campaign, "final") if key in picked]


def pass_run_tags(campaign: str, pass_name: str, keys: Sequence[str]) -> dict[str, str]:
    """The tags of one run of a pass over ``keys`` (a contiguous range): the partition tags
    and the pass tags every launcher uses (the winners sensor too)."""
    from falassets.pipeline.assets.partitions import partition_tags
    from falassets.pipeline.jobs import pass_tags

    return {**partition_tags(keys), **pass_tags(campaign, pass_name)}


def run_pass(
    campaign: str,
    pass_name: PassName,
    *,
    partition_keys: list[str] | None = None,
    concurrency: int | None = None,
    budget_usd: float | None = None,
    mode: Mode = "rerun",
    force: bool = False,
    launch_id: str | None = None,
    bridgeable: Container[str] = (),
    prepare: bool = True,
    on_run_start: Callable[[str, list[str]], Any] | None = None,
    progress: contextlib.AbstractContextManager[Any] | None = None,
    verbose: bool = False,
) -> PassResult:
    """Run the pass now, as Dagster runs recorded in DAGSTER_HOME, launched from this process.

    First ``prompts`` (and for finals ``review_selections``) for the campaign, then the pass
    asset over ``partition_keys`` (default: every prompt for drafts, every winner for finals),
    one run per contiguous stretch of keys. ``bridgeable`` are keys known to be up to date
    that may join two stretches into one run. Every run carries ``LAUNCH_TAG=launch_id``.
    ``on_run_start(run_id, keys)`` is called as each run starts, so a caller can follow it;
    ``progress`` (a display that starts a thread) is entered once the pass's run processes
    exist, so they can be forked from a process with one thread (:func:`_start_method`).

    With ``FALASSETS_PARTITIONS_PER_RUN=K`` each stretch is cut into runs of at most K keys
    that go at once (``deployment.runs_at_once`` of them), so the executor spreads them over
    its hosts; the result still names every key's success or failure. Ctrl-C launches no
    further run; runs already going finish.
    """
    from falassets.lineage.passes import DEFAULT_CONCURRENCY
    from falassets.pipeline import deployment
    from falassets.pipeline.jobs import pass_run_config

    if pass_name not in PASS_JOB:
        raise LaunchError(f"unknown pass '{pass_name}': use 'draft' or 'final'")
    try:
        per_run = settings.partitions_per_run()
        deployment.check(dagster_instance())
    except LaunchError:
        raise
    except ValueError as error:  # a bad deployment setting: nothing has run yet
        raise LaunchError(str(error)) from None
    launch_id = launch_id or str(uuid.uuid4())
    with contextlib.ExitStack() as stack:
        # A run process takes seconds to start (Dagster's imports, the instance): when the
        # keys are known, the pass's run processes start while `prompts` runs. A pass makes
        # at least ceil(keys / K) runs, so it uses every process started here.
        expected = (
            deployment.runs_at_once(
                math.ceil(len(set(partition_keys)) / per_run),
                concurrency or DEFAULT_CONCURRENCY,
                per_run,
            )
            if per_run is not None and partition_keys
            else 1
        )
        runner = stack.enter_context(_RunProcesses(expected)) if expected > 1 else None
        if progress is not None:
            stack.enter_context(progress)
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
        runs = deployment.split_runs(contiguous_runs(order, targets, bridgeable), per_run)
        at_once = deployment.runs_at_once(len(runs), concurrency or DEFAULT_CONCURRENCY, per_run)
        run_config = pass_run_config(
            pass_name, mode=mode, force=force, concurrency=concurrency, budget_usd=budget_usd
        )
        refused = threading.Event()  # fal refused the key: every further run would be refused too
        asset = PASS_ASSET[pass_name]
        if at_once <= 1:
            runner = None
        elif runner is None or runner.at_once < at_once:
            if runner is not None:  # scattered keys made more runs than expected: start afresh
                runner.__exit__(None, None, None)
            runner = stack.enter_context(_RunProcesses(at_once))

        def run_one(keys: list[str]) -> RunOutcome | None:
            if refused.is_set():
                return None
            tags = {**pass_run_tags(campaign, pass_name, keys), LAUNCH_TAG: launch_id}
            created = (lambda run_id: on_run_start(run_id, keys)) if on_run_start else None
            if runner is None:  # one at a time: in this process, as passes always ran
                result = execute(
                    PASS_JOB[pass_name],
                    tags=tags,
                    run_config=run_config,
                    verbose=verbose,
                    on_created=created,
                )
                outcome = run_outcome(result, asset)
            else:
                outcome = runner.run(PASS_JOB[pass_name], tags, run_config, verbose, asset, created)
            if outcome.auth_error:
                refused.set()
            return outcome

        if runner is None:
            return _pass_result(runs, [run_one(keys) for keys in runs], set(targets))
        return _pass_result(runs, runner.map(run_one, runs), set(targets))


def _outcome_of_run(
    job_name: str, tags: dict[str, str], run_config: dict[str, Any], verbose: bool, asset: str
) -> RunOutcome:
    """One run and its outcome, in a run process of :class:`_RunProcesses`."""
    result = execute(job_name, tags=tags, run_config=run_config, verbose=verbose)
    return run_outcome(result, asset)


def _warm_up() -> None:
    """What every run needs (the definitions, the instance): loaded in each spawned run
    process, or once in this process before run processes are forked from it."""
    from falassets.pipeline import definitions  # noqa: F401

    dagster_instance()


#: A forked run process's copy of its parent's instances: kept, never used, never closed.
_inherited_instances: list[Any] = []


def _start_method() -> Literal["fork", "spawn"]:
    """How run processes start. ``fork`` takes milliseconds: the process inherits Dagster and
    the definitions already loaded here, which a spawned one imports again (~2 s, while
    the pass waits). Only on Linux, and only while this process has no other thread: a thread
    could hold a lock at the fork (a stream's, a connection's) that the child then waits on
    forever. Otherwise (the review page's launches, macOS) ``spawn``."""
    if sys.platform == "linux" and threading.active_count() == 1:
        return "fork"
    return "spawn"


def _start_run_process(forked: bool) -> None:
    """In a new run process, before its first run. A forked one opens its own instance (~80 ms
    with Dagster loaded): the parent's storages may hold pooled connections (``pool_size`` in
    dagster.yaml) that two processes must never share, and closing them here would end the
    parent's sessions, so the inherited instances are kept aside untouched."""
    end_without_teardown()
    if forked:
        _inherited_instances.extend(_instances.values())
        _instances.clear()


class _RunProcesses:
    """Runs of one pass at once, each ``dagster.execute_job`` in a process of its own.

    Why processes: ``execute_job`` is not safe on several threads of one process. Each run
    calls ``logging.config.dictConfig`` as it starts (Dagster's yaml-defined log handlers),
    which holds logging's module lock while it takes each handler's lock, and another run's
    thread holding its event-log handler's lock while its Postgres engine asks logging's
    module lock deadlocks both (observed: every thread stuck in ``logging._acquireLock``). And
    in-process steps swap the process's stdout/stderr (compute-log capture ``dup2``s fds 1
    and 2, and the last to finish restores another run's log file). A process per slot
    (forked or spawned: :func:`_start_method`) runs its runs one after another; this process
    keeps one thread per slot, which learns the run id for progress (``on_created``) from the
    run storage as before.
    """

    def __init__(self, at_once: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.at_once = at_once
        self.start_method = _start_method()
        if self.start_method == "fork":
            _warm_up()  # here, once: the forked processes inherit it
        self.processes = ProcessPoolExecutor(
            at_once,
            mp_context=multiprocessing.get_context(self.start_method),
            initializer=_start_run_process,
            initargs=(self.start_method == "fork",),
        )
        for _ in range(at_once):  # starts the processes, each loading what its runs need
            self.processes.submit(_warm_up)
        self.threads = ThreadPoolExecutor(at_once, thread_name_prefix="falassets-run")

    def run(
        self,
        job_name: str,
        tags: dict[str, str],
        run_config: dict[str, Any],
        verbose: bool,
        asset: str,
        on_created: Callable[[str], Any] | None,
    ) -> RunOutcome:
        token = str(uuid.uuid4())
        finished = threading.Event()
        watcher = (
            _notify_run_created(dagster_instance(), token, on_created, finished)
            if on_created
            else None
        )
        try:
            future = self.processes.submit(
                _outcome_of_run,
                job_name,
                {**tags, RUN_TOKEN_TAG: token},
                run_config,
                verbose,
                asset,
            )
            return future.result()
        finally:
            finished.set()
            if watcher is not None:
                watcher.join()

    def map(
        self, run_one: Callable[[list[str]], RunOutcome | None], runs: list[list[str]]
    ) -> list[RunOutcome | None]:
        """``run_one`` over every run's keys, ``at_once`` at a time, in the runs' order."""
        futures = [self.threads.submit(run_one, keys) for keys in runs]
        return [future.result() for future in futures]

    def __enter__(self) -> _RunProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        # Ctrl-C (or an error): launch nothing more; runs already going finish (a Ctrl-C at a
        # terminal reaches the run processes too, and Dagster stops their runs).
        self.threads.shutdown(wait=True, cancel_futures=True)
        self.processes.shutdown(wait=True, cancel_futures=True)


def _pass_result(
    runs: list[list[str]], outcomes: list[RunOutcome | None], wanted: set[str]
) -> PassResult:
    """One PassResult from the runs' outcomes (None: a run never launched, its keys failed)."""
    succeeded: list[str] = []
    failed: list[str] = []
    run_ids: list[str] = []
    errors: list[str] = []
    failures: dict[str, tuple[str, str]] = {}
    auth_error = False
    for keys, outcome in zip(runs, outcomes, strict=True):
        if outcome is None:
            failed += [key for key in keys if key in wanted]
            continue
        run_ids.append(outcome.run_id)
        succeeded += [key for key in keys if key in outcome.materialized and key in wanted]
        failed += [key for key in keys if key not in outcome.materialized and key in wanted]
        failures.update(outcome.failures)
        if outcome.error is not None:
            errors.append(f"run {outcome.run_id}: {outcome.error}")
        auth_error |= outcome.auth_error
    return PassResult(
        run_id=run_ids[0] if run_ids else "",
        succeeded=succeeded,
        failed=failed,
        run_ids=run_ids,
        run_errors=errors,
        failures={key: value for key, value in failures.items() if key in set(failed)},
        auth_error=auth_error,
    )


# -- launching in the background (the review page) ---------------------------------------------


def launch_log_path(launch_id: str) -> Path:
    """What a background launch reports as it goes (one line per run, then the outcome)."""
    return settings.state_dir() / "launches" / f"{launch_id}.log"


def write_launch_result(launch_id: str, result: Mapping[str, Any]) -> None:
    """Record how a background launch ended (atomically: readers never see half a file)."""
    import json

    from falassets.atomic_files import write_text_atomically

    write_text_atomically(
        launch_log_path(launch_id).with_suffix(".json"), json.dumps(dict(result), indent=1)
    )


def launch_result(launch_id: str) -> dict[str, Any] | None:
    """How a launch from :func:`submit_pass` ended: ``exit_code`` (0 all succeeded, 1 some
    failed, 2 bad input or fal refused the key), ``succeeded``, ``failed``, ``run_ids`` (a
    pass over scattered partitions is several runs), or ``error``. None while running."""
    import json

    try:
        return json.loads(launch_log_path(launch_id).with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None


def launch_runs_url(dagster_url: str, launch_id: str) -> str:
    """The Dagster UI's run list filtered to one launch's runs (by its ``LAUNCH_TAG``)."""
    from urllib.parse import quote

    return f"{dagster_url.rstrip('/')}/runs?q%5B0%5D={quote(f'tag:{LAUNCH_TAG}={launch_id}')}"


def submit_pass(
    campaign: str,
    pass_name: PassName,
    *,
    partition_keys: list[str] | None = None,
    mode: Mode = "rerun",
    concurrency: int | None = None,
    budget_usd: float | None = None,
) -> str:
    """Start :func:`run_pass` on a background thread of this process; return its launch id
    (the ``LAUNCH_TAG`` of each of its runs) at once.

    Why a thread of this process: the review page calls the pipeline's own launch function,
    not the command above it, and stays responsive while the pass renders. The pass ends
    with the process (a crash or a stop leaves pending requests that the next run resumes,
    never pays for twice). ``launch_result(id)`` tells how it ended; ``launch_log_path(id)``
    has a line per run.
    """
    from falassets.campaigns import split_partition_key

    if pass_name not in PASS_JOB:
        raise LaunchError(f"unknown pass '{pass_name}': use 'draft' or 'final'")
    for key in partition_keys or ():
        if split_partition_key(key)[0] != campaign:
            raise LaunchError(f"partition key '{key}' is not in campaign '{campaign}'")
    launch_id = str(uuid.uuid4())
    log_path = launch_log_path(launch_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.touch()
    thread = threading.Thread(
        target=_background_pass,
        args=(campaign, pass_name, launch_id),
        kwargs={
            "partition_keys": partition_keys,
            "mode": mode,
            "concurrency": concurrency,
            "budget_usd": budget_usd,
        },
        name=f"falassets-pass-{launch_id[:8]}",
    )
    thread.start()
    return launch_id


def _background_pass(campaign: str, pass_name: PassName, launch_id: str, **kwargs: Any) -> None:
    """Body of a background launch: run the pass, log each run, record the outcome."""
    log_path = launch_log_path(launch_id)

    def log(line: str) -> None:
        with log_path.open("a") as handle:
            handle.write(line + "\n")

    def started(run_id: str, keys: list[str]) -> None:
        log(f"run {run_id}: {len(keys)} partition(s), {keys[0]} .. {keys[-1]}")

    outcome: dict[str, Any] = {"exit_code": 2}
    try:
        result = run_pass(campaign, pass_name, launch_id=launch_id, on_run_start=started, **kwargs)
        outcome = {
            "exit_code": 2 if result.auth_error else (1 if result.failed else 0),
            "succeeded": result.succeeded,
            "failed": result.failed,
            "run_ids": result.run_ids,
            "errors": result.run_errors,
        }
        log(f"{len(result.succeeded)} succeeded, {len(result.failed)} failed")
    except LaunchError as error:
        outcome["error"] = str(error)
        log(f"error: {error}")
    except Exception as error:  # a background thread has nobody else to tell
        outcome["error"] = f"{type(error).__name__}: {error}"
        log(f"error: {outcome['error']}")
        raise
    finally:
        write_launch_result(launch_id, outcome)
