"""What the final pass sends for one winner: the one rule the asset and the review page share.

A winner is a (prompt, variant): ``refine`` sends the chosen variant's image as the reference,
and names its sha256 in the job's variant (``lineage.passes.refine_reference``), so another
choice is another render and the same choice again is answered from lineage. ``rerun``
renders the prompt at high: its input does not depend on the choice. No Dagster import here:
the review page prices and judges finals with it without loading Dagster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from falassets import campaigns
from falassets.campaigns import PromptRow
from falassets.engine.jobs import RenderJob
from falassets.lineage.passes import FINAL, refine_reference
from falassets.lineage.variants import variant_image

Mode = Literal["rerun", "refine"]


def edit_endpoint(endpoint: str) -> str:
    return endpoint if endpoint.endswith("/edit") else f"{endpoint}/edit"


def final_job(
    key: str,
    row: PromptRow,
    *,
    endpoint: str,
    mode: Mode,
    draft: Mapping[str, Any] | None = None,
    variant: int = 1,
    force: bool = False,
) -> RenderJob:
    """The final render of one winner; ``draft`` (its lineage row) is required for refine,
    which starts from its image ``variant`` (the reviewer's choice)."""
    campaign, prompt_id = campaigns.split_partition_key(key)
    payload = FINAL.render_input(row)
    reference = ""
    if mode == "refine":
        image = variant_image(draft, variant)
        assert image is not None, f"{key}: the draft has no variant {variant}"
        payload = {**payload, "image_urls": [image["output_url"]]}
        endpoint = edit_endpoint(endpoint)
        reference = refine_reference(image["sha256"])
    return RenderJob(
        partition_key=key,
        campaign=campaign,
        prompt_id=prompt_id,
        pass_name="final",
        input=payload,
        endpoint=endpoint,
        variant=reference,
        force=force,
    )
