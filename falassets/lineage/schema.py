"""The columns of the lineage journals, shared by their writers and the DuckDB views.

Each line of a request journal is a full snapshot of one fal request's row; the ``requests``
view keeps the latest snapshot per ``request_id``. Snapshots instead of partial updates keep
the view a plain ``arg_max`` and let any single line be read on its own.
"""

from __future__ import annotations

# name -> DuckDB type. Order is the order of the `requests` view.
REQUEST_COLUMNS: dict[str, str] = {
    "request_id": "VARCHAR",  # fal's id; for a submit whose answer was lost: "lost-<uuid>"
    "partition_key": "VARCHAR",  # <campaign>-<prompt_id>
    "campaign": "VARCHAR",
    "prompt_id": "VARCHAR",
    "pass": "VARCHAR",  # 'draft' | 'final'
    "endpoint": "VARCHAR",  # e.g. openai/gpt-image-2
    "input": "JSON",  # exactly the JSON body sent to fal
    "job_key": "VARCHAR",  # sha256(endpoint + canonical input + variant): the idempotency key
    "variant": "VARCHAR",  # what else distinguishes the job (e.g. refine:<draft sha256>)
    "status": "VARCHAR",  # 'pending' | 'completed' | 'failed' | 'cancelled'
    "error_type": "VARCHAR",  # fal's error type, or ours (timeout, transport, expired, ...)
    "error_message": "VARCHAR",
    "http_status": "INTEGER",
    "attempt": "INTEGER",  # 1 for the first submit of a job, 2 for its first retry, ...
    "submitted_at": "TIMESTAMPTZ",
    "started_at": "TIMESTAMPTZ",  # when fal began running it (IN_PROGRESS; null if never seen)
    "completed_at": "TIMESTAMPTZ",
    "latency_s": "DOUBLE",  # submit to result
    "queued_s": "DOUBLE",  # submit to started_at: time spent waiting in fal's queue
    # What fal last said while we waited: IN_QUEUE (the account's limit is reached),
    # IN_PROGRESS, COMPLETED; null before the first look (pending rows show the running level)
    "fal_status": "VARCHAR",
    "output_url": "VARCHAR",  # where fal served the output (refine passes it back to fal)
    "image_path": "VARCHAR",  # the output's local path (plain folder), else its URI
    "image_uri": "VARCHAR",  # where the output is stored: file:///..., s3://..., gs://...
    "thumbnail_path": "VARCHAR",
    "sha256": "VARCHAR",
    "width": "INTEGER",
    "height": "INTEGER",
    # Every output image, one per variant (num_images > 1 in a draft): a JSON list of
    # IMAGE_COLUMNS objects. The columns above are variant 1's; the `request_images` view
    # has a row per variant (lineage/variants.py).
    "images": "JSON",
    "cost_usd": "DOUBLE",  # what fal bills (or would bill) for this request
    "cost_source": "VARCHAR",  # 'billed' (from x-fal-billable-units) | 'estimated' (our rules)
    "billable_units": "DOUBLE",  # fal's x-fal-billable-units (output images), when it sent it
    "simulated": "BOOLEAN",  # rendered by the emulator, not by fal
    "run_id": "VARCHAR",  # Dagster run id, or the CLI's own id outside Dagster
    "replay_of": "VARCHAR",  # the request this one replays (`falassets replay`), else null
    "status_url": "VARCHAR",  # kept so a restarted process can resume without resubmitting
    "response_url": "VARCHAR",
    "cancel_url": "VARCHAR",
    "recorded_at": "TIMESTAMPTZ",  # when this snapshot was written; latest wins
    "writer": "VARCHAR",  # host-pid of the writing process
}

REQUEST_STATUSES = ("pending", "completed", "failed", "cancelled")

# One output image of a request: an entry of its `images` list, a row of `request_images`.
IMAGE_COLUMNS: dict[str, str] = {
    "variant": "INTEGER",  # 1..num_images, in the order fal listed the images
    "image_path": "VARCHAR",  # as the request's own image_path: local path, else the URI
    "image_uri": "VARCHAR",
    "thumbnail_path": "VARCHAR",
    "sha256": "VARCHAR",
    "width": "INTEGER",
    "height": "INTEGER",
    "output_url": "VARCHAR",  # where fal served it (a refine of this variant sends it back)
}

# One line per reviewer decision; the latest per (campaign, prompt_id) wins.
DECISION_COLUMNS: dict[str, str] = {
    "campaign": "VARCHAR",
    "prompt_id": "VARCHAR",
    "partition_key": "VARCHAR",
    "decision": "VARCHAR",  # 'pick' | 'reject' | 'undecided'
    "variant": "INTEGER",  # a pick's chosen draft variant (1-based); null: 1, or not a pick
    "source": "VARCHAR",  # 'review' | 'cli'
    "decided_at": "TIMESTAMPTZ",
    "recorded_at": "TIMESTAMPTZ",
    "writer": "VARCHAR",
}

DECISIONS = ("pick", "reject", "undecided")
