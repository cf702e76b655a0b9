"""Everything Dagster loads (``workspace.yaml`` and ``dagster dev`` point here)."""

from __future__ import annotations

import dagster as dg

from falassets import settings
from falassets.pipeline import deployment, fal_environment
from falassets.pipeline.assets.checks import final_file_matches_sha256
from falassets.pipeline.assets.drafts import draft_renders
from falassets.pipeline.assets.finals import final_renders
from falassets.pipeline.assets.prompts import prompts
from falassets.pipeline.assets.reports import campaign_report
from falassets.pipeline.assets.selections import review_selections
from falassets.pipeline.automation import campaign_file_sensor, report_sensor, winners_sensor
from falassets.pipeline.jobs import draft_pass, final_pass, prompts_pass, report_pass, review_pass
from falassets.pipeline.resources import FalRenderer

# Dagster's code servers and run workers import this module, not the CLI: set up fal here
# (the engine's HTTPS clients read SSL_CERT_FILE and the queue host when a render starts).
fal_environment.configure()


def fal_renderer() -> FalRenderer:
    """fal.ai with the key from the environment (never stored in config), else the emulator."""
    if settings.fal_key():
        return FalRenderer(fal_key=dg.EnvVar("FAL_KEY"))
    return FalRenderer()


defs = dg.Definitions(
    assets=[prompts, draft_renders, review_selections, final_renders, campaign_report],
    asset_checks=[final_file_matches_sha256],
    jobs=[prompts_pass, draft_pass, review_pass, final_pass, report_pass],
    sensors=[campaign_file_sensor, winners_sensor, report_sensor],
    resources={"fal": fal_renderer()},
    # FALASSETS_EXECUTOR: Dagster's default (None) or the celery executor (pipeline/deployment)
    executor=deployment.executor_def(),
)


# Module-level builders of the resolved jobs, for ``dagster.reconstructable`` (what
# ``falassets.pipeline.launch`` hands ``dagster.execute_job``): a target must be a module-level
# function so Dagster can rebuild the job by importing this module wherever it executes the run.


def prompts_pass_job() -> dg.JobDefinition:
    return defs.resolve_job_def(prompts_pass.name)


def draft_pass_job() -> dg.JobDefinition:
    return defs.resolve_job_def(draft_pass.name)


def review_pass_job() -> dg.JobDefinition:
    return defs.resolve_job_def(review_pass.name)


def final_pass_job() -> dg.JobDefinition:
    return defs.resolve_job_def(final_pass.name)


def report_pass_job() -> dg.JobDefinition:
    return defs.resolve_job_def(report_pass.name)


JOB_BUILDERS = {
    prompts_pass.name: prompts_pass_job,
    draft_pass.name: draft_pass_job,
    review_pass.name: review_pass_job,
    final_pass.name: final_pass_job,
    report_pass.name: report_pass_job,
}
