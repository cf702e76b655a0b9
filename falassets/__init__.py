"""falassets: render image campaigns through fal.ai's queue as Dagster assets."""

import os

from falassets.settings import configure_fal_environment

configure_fal_environment()

if os.environ.get("FALASSETS_QUIET_DAGSTER_WARNINGS"):  # a process falassets started
    from falassets.cli.dagster_notices import quiet_dagster_notices

    quiet_dagster_notices()
