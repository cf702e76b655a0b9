"""falassets: render image campaigns through fal.ai's queue as Dagster assets."""

from falassets.settings import configure_fal_environment

configure_fal_environment()
