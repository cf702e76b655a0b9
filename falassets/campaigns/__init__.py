"""Read and validate campaign files; make prompt ids and partition keys.

A campaign file (CSV, JSONL or Parquet) becomes a :class:`Campaign`: a name from the file stem
and one :class:`PromptRow` per prompt, each already checked against GPT Image 2's limits
(``engine/model.py``), so nothing that fal would refuse is ever submitted or billed. Bad input is
reported as one :class:`CampaignError` listing every problem found (file, row, column, fix), so
a user repairs a file in one pass. Loading only reads: it never writes, renames or deletes.

Ids are validated, never rewritten: silently slugging ``a b`` to ``a_b`` could merge two prompts
into one partition. Keys are ``<campaign>-<prompt_id>``, made of ``[a-z0-9_-]`` and at most 255
characters, because Dagster does not validate dynamic partition keys and commas, spaces, ``/``
and very long keys break its UI, backfills and file paths.
"""

from __future__ import annotations

from falassets.campaigns.changes import (
    changed_prompts,
    input_fingerprint,
    removed_prompts,
    render_input,
)
from falassets.campaigns.errors import CampaignError, Problem
from falassets.campaigns.keys import (
    campaign_name,
    is_partition_key,
    partition_key,
    split_partition_key,
    suggest_name,
)
from falassets.campaigns.limits import (
    CAMPAIGN_SUFFIXES,
    FORMATS,
    ID_RE,
    KEY_ID_RE,
    MAX_ID_CHARS,
    MAX_KEY_CHARS,
    MAX_LINE_BYTES,
    MAX_LISTED_PROBLEMS,
    MAX_NAME_CHARS,
    MAX_PROMPT_CHARS,
    MAX_ROWS,
    MAX_VARIANTS,
    NAME_RE,
    TABLE_VERSION,
)
from falassets.campaigns.load import load_campaign
from falassets.campaigns.model import Campaign, PromptRow
from falassets.campaigns.table import TABLE_SCHEMA, read_table, size_text, table_path, write_table
from falassets.campaigns.variants import (
    default_variants,
    record_default_variants,
    variants_problem,
)

__all__ = [
    "CAMPAIGN_SUFFIXES",
    "FORMATS",
    "ID_RE",
    "KEY_ID_RE",
    "MAX_ID_CHARS",
    "MAX_KEY_CHARS",
    "MAX_LINE_BYTES",
    "MAX_LISTED_PROBLEMS",
    "MAX_NAME_CHARS",
    "MAX_PROMPT_CHARS",
    "MAX_ROWS",
    "MAX_VARIANTS",
    "NAME_RE",
    "TABLE_SCHEMA",
    "TABLE_VERSION",
    "Campaign",
    "CampaignError",
    "Problem",
    "PromptRow",
    "campaign_name",
    "changed_prompts",
    "default_variants",
    "input_fingerprint",
    "is_partition_key",
    "load_campaign",
    "partition_key",
    "read_table",
    "record_default_variants",
    "removed_prompts",
    "render_input",
    "size_text",
    "split_partition_key",
    "suggest_name",
    "table_path",
    "variants_problem",
    "write_table",
]
