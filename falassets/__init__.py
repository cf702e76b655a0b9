"""falassets: render image campaigns through fal.ai's queue as Dagster assets."""

import os

if os.environ.get("FALASSETS_QUIET_DAGSTER_WARNINGS"):  # a process falassets started
    from falassets.cli.dagster_notices import quiet_dagster_notices

    quiet_dagster_notices()
