"""Asset checks: what a materialization promises and a later look can verify.

``final_file_matches_sha256``: each final's image on disk is still the file that was rendered
(the sha256 its materialization recorded). Finals are what a campaign ships; a file replaced,
truncated or deleted after the render would otherwise go unnoticed until someone opens it.

Why one check over many partitions: ``AssetCheckResult`` has no partition argument, and in a
single-run backfill a check runs once for the run. So the check covers the partitions of the
run it belongs to (all winners when run on its own) and lists every mismatch in its metadata.
It is not blocking: a mismatch is a warning on the asset, never a reason to stop a pass.
"""

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import dagster as dg

from falassets import settings
from falassets.pipeline.assets.finals import final_renders
from falassets.pipeline.assets.partitions import run_partition_keys

_LISTED = 50  # mismatches named in the description; the metadata has them all


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def latest_recorded_files(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, keys: Iterable[str]
) -> dict[str, tuple[str, str]]:
    """``{partition: (image_path, sha256)}`` from each partition's latest materialization."""
    wanted = list(dict.fromkeys(keys))
    found: dict[str, tuple[str, str]] = {}
    cursor = None
    while wanted:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=wanted),
            limit=1000,
            cursor=cursor,
            ascending=False,
        )
        for record in page.records:
            key = record.partition_key
            materialization = record.asset_materialization
            if key is None or key in found or materialization is None:
                continue
            metadata = materialization.metadata
            path, sha = metadata.get("image_path"), metadata.get("sha256")
            found[key] = (str(getattr(path, "value", "") or ""), str(getattr(sha, "value", "")))
        if not page.has_more:
            break
        cursor = page.cursor
    return found


def mismatches(recorded: Mapping[str, tuple[str, str]]) -> dict[str, str]:
    """``{partition: what is wrong}`` for files that are missing or differ from their sha256."""
    wrong: dict[str, str] = {}
    for key, (image_path, sha) in sorted(recorded.items()):
        if not image_path or not sha:
            wrong[key] = "the materialization recorded no image path or sha256"
            continue
        path = Path(image_path)
        if not path.is_absolute():
            path = settings.data_dir() / path
        try:
            actual = file_sha256(path)
        except OSError as exc:
            wrong[key] = f"{path}: cannot read the file ({exc.strerror or exc})"
            continue
        if actual != sha:
            wrong[key] = f"{path}: sha256 {actual[:12]}… differs from the recorded {sha[:12]}…"
    return wrong


@dg.asset_check(
    asset=final_renders,
    name="final_file_matches_sha256",
    blocking=False,
    description=(
        "Each final image on disk is the file that was rendered: its sha256 equals the one "
        "its latest materialization recorded (the run's partitions, or every winner when run "
        "on its own). Mismatches are listed in the metadata."
    ),
)
def final_file_matches_sha256(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    instance = context.instance
    ordered = instance.get_dynamic_partitions("winner")
    keys = run_partition_keys(context.run, ordered) or list(ordered)
    recorded = latest_recorded_files(instance, final_renders.key, keys)
    wrong = mismatches(recorded)
    listed = [f"- {key}: {problem}" for key, problem in list(wrong.items())[:_LISTED]]
    if len(wrong) > len(listed):
        listed.append(f"- … and {len(wrong) - len(listed)} more")
    return dg.AssetCheckResult(
        passed=not wrong,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(wrong)} of {len(recorded)} final(s) differ from their recorded sha256:\n"
            + "\n".join(listed)
            if wrong
            else f"{len(recorded)} final(s) match their recorded sha256"
        ),
        metadata={
            "checked": len(recorded),
            "mismatched": len(wrong),
            "mismatches": dg.MetadataValue.json(wrong),
        },
    )
