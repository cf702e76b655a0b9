"""Everything Dagster loads (``workspace.yaml`` and ``dagster dev`` point here)."""

from __future__ import annotations

import dagster as dg

from falassets import settings
from falassets.assets.drafts import draft_renders
from falassets.assets.finals import final_renders
from falassets.assets.jobs import draft_pass, final_pass, prompts_pass, report_pass, review_pass
from falassets.assets.prompts import prompts
from falassets.assets.reports import campaign_report
from falassets.assets.review import review_selections
from falassets.fal.resource import FalRenderer
from falassets.sensors import campaign_file_sensor, report_sensor, winners_sensor


def fal_renderer() -> FalRenderer:
    """fal.ai with the key from the environment (never stored in config), else the emulator."""
    if settings.fal_key():
        return FalRenderer(fal_key=dg.EnvVar("FAL_KEY"))
    return FalRenderer()


defs = dg.Definitions(
    assets=[prompts, draft_renders, review_selections, final_renders, campaign_report],
    jobs=[prompts_pass, draft_pass, review_pass, final_pass, report_pass],
    sensors=[campaign_file_sensor, winners_sensor, report_sensor],
    resources={"fal": fal_renderer()},
)
