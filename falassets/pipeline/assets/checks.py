"""Asset checks: what a materialization promises and a later look can verify.

``final_file_matches_sha256``: each final's image in the render store (a folder or object
storage, read through :func:`falassets.storage.renders.render_sha256`) is still the file that
was rendered (the sha256 its materialization recorded). Finals are what a campaign ships; a
file replaced, truncated or deleted after the render would otherwise go unnoticed until
someone opens it.

Why one check over many partitions: ``AssetCheckResult`` has no partition argument, and in a
single-run backfill a check runs once for the run. So the check covers the partitions of the
run it belongs to (all winners when run on its own) and lists every mismatch in its metadata.
It is not blocking: a mismatch is a warning on the asset, never a reason to stop a pass.
"""

from collections.abc import Iterable, Mapping

import dagster as dg

from falassets.pipeline.assets.finals import final_renders
from falassets.pipeline.assets.partitions import run_partition_keys
from falassets.storage.renders import render_sha256, uri_of

_LISTED = 50  # mismatches named in the description; the metadata has them all


def latest_recorded_files(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, keys: Iterable[str]
) -> dict[str, tuple[str, str]]:
    """``{partition: (image location, sha256)}`` from each partition's latest materialization
    (its ``image_uri``, or the ``image_path`` materializations recorded before URIs)."""
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
            uri, path = metadata.get("image_uri"), metadata.get("image_path")
            location = getattr(uri, "value", "") or getattr(path, "value", "") or ""
            found[key] = (str(location), str(getattr(metadata.get("sha256"), "value", "")))
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
        location = uri_of(image_path)  # a relative path is relative to the data directory
        try:
            actual = render_sha256(location)
        except OSError as exc:
            wrong[key] = f"{image_path}: cannot read the file ({exc.strerror or exc})"
            continue
        if actual != sha:
            wrong[key] = (
                f"{image_path}: sha256 {actual[:12]}… differs from the recorded {sha[:12]}…"
            )
    return wrong


@dg.asset_check(
    asset=final_renders,
    name="final_file_matches_sha256",
    blocking=False,
    description=(
        "Each final image in the render store is the file that was rendered: its sha256 equals "
        "the one its latest materialization recorded (the run's partitions, or every winner "
        "when run on its own). Mismatches are listed in the metadata."
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
