"""Jobs over the assets: one per pass; each takes its asset's partitions (Dagster infers them).

``draft_pass`` and ``final_pass`` are a contract (the CLI and the review page launch them).
"""

from __future__ import annotations

import dagster as dg

from falassets.assets.drafts import draft_renders
from falassets.assets.finals import final_renders
from falassets.assets.prompts import prompts
from falassets.assets.reports import campaign_report
from falassets.assets.review import review_selections

prompts_pass = dg.define_asset_job("prompts_pass", selection=[prompts])
draft_pass = dg.define_asset_job("draft_pass", selection=[draft_renders])
review_pass = dg.define_asset_job("review_pass", selection=[review_selections])
final_pass = dg.define_asset_job("final_pass", selection=[final_renders])
report_pass = dg.define_asset_job("report_pass", selection=[campaign_report])
