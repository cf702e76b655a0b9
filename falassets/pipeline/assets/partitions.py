"""The three dynamic partition sets and the small helpers that register and select them.

Names and key formats are a contract: the CLI, the review page and the sensors build the same
keys (``<campaign>-<prompt_id>``, see ``falassets.campaigns.partition_key``).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence

import dagster as dg

#: One partition per campaign (the campaign file's stem).
campaign_partitions = dg.DynamicPartitionsDefinition(name="campaign")
#: One partition per prompt: ``<campaign>-<prompt_id>``.
prompt_partitions = dg.DynamicPartitionsDefinition(name="prompt")
#: Same keys as ``prompt``, winners only, so the final pass's view lists nothing else.
winner_partitions = dg.DynamicPartitionsDefinition(name="winner")

#: Dagster's public run tags naming the partition(s) a run covers: one key, or a range of
#: keys (single-run backfill policy) in the partition set's order.
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def unregistered(
    instance: dg.DagsterInstance,
    partitions_def: dg.DynamicPartitionsDefinition,
    keys: Iterable[str],
) -> list[str]:
    """Keys not yet registered, in the given order and without duplicates."""
    existing = set(instance.get_dynamic_partitions(_name(partitions_def)))
    seen: set[str] = set()
    missing = []
    for key in keys:
        if key not in existing and key not in seen:
            seen.add(key)
            missing.append(key)
    return missing


def register(
    instance: dg.DagsterInstance,
    partitions_def: dg.DynamicPartitionsDefinition,
    keys: Iterable[str],
) -> list[str]:
    """Add the keys that are not there yet (one bulk insert); return the ones added.

    Dynamic keys keep insertion order, and single-run backfills run contiguous ranges of that
    order, so a campaign registered in one call stays one range (one run).
    """
    missing = unregistered(instance, partitions_def, keys)
    if missing:
        instance.add_dynamic_partitions(_name(partitions_def), missing)
    return missing


def contiguous_ranges(
    ordered_keys: Sequence[str], wanted: Iterable[str], bridgeable: Container[str] = ()
) -> list[list[str]]:
    """Split ``wanted`` into runs of neighbours in ``ordered_keys`` (registration order).

    A single-run backfill policy can only run a contiguous range in one run, so every
    launcher asks for one run per range. Keys strictly between two ranges join them when
    every one of them is in ``bridgeable`` (known up to date: answered from lineage, not
    billed). Keys not in ``ordered_keys`` are ignored.
    """
    wanted_set = set(wanted)
    ranges: list[list[str]] = []
    current: list[str] = []
    gap: list[str] = []
    for key in ordered_keys:
        if key in wanted_set:
            if current and gap and all(k in bridgeable for k in gap):
                current.extend(gap)
            elif current and gap:
                ranges.append(current)
                current = []
            current.append(key)
            gap = []
        elif current:
            gap.append(key)
    if current:
        ranges.append(current)
    return ranges


def partition_tags(keys: Sequence[str]) -> dict[str, str]:
    """The tags of a run over ``keys`` (a contiguous range): the partition tag for one key,
    the range tags for more. The CLI, the review page and the sensors all tag runs this way."""
    if not keys:
        raise ValueError("a run needs at least one partition key")
    if len(keys) == 1:
        return {PARTITION_TAG: keys[0]}
    return {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}


def run_partition_keys(run: dg.DagsterRun, ordered_keys: Sequence[str]) -> list[str]:
    """The partition keys a run covers: its partition tag, or its range in ``ordered_keys``."""
    if run.tags.get(PARTITION_TAG):
        return [run.tags[PARTITION_TAG]]
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    if not start or not end or start not in ordered_keys or end not in ordered_keys:
        return []
    keys = list(ordered_keys)
    return keys[keys.index(start) : keys.index(end) + 1]


def range_run_request(
    keys: Sequence[str],
    *,
    job_name: str,
    run_key: str,
    run_config: dict | None = None,
    tags: dict[str, str] | None = None,
) -> dg.RunRequest:
    """One run over ``keys`` (a contiguous range): a partition key for one, range tags for more."""
    if len(keys) == 1:
        return dg.RunRequest(
            run_key=run_key,
            job_name=job_name,
            partition_key=keys[0],
            run_config=run_config or {},
            tags=tags or {},
        )
    return dg.RunRequest(
        run_key=run_key,
        job_name=job_name,
        run_config=run_config or {},
        tags={**(tags or {}), **partition_tags(keys)},
    )


def _name(partitions_def: dg.DynamicPartitionsDefinition) -> str:
    assert partitions_def.name is not None
    return partitions_def.name
