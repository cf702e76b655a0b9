"""Everything Dagster: definitions, assets, partitions, automation, the fal resource,
launching runs and the event-log storage.

Never imports ``falassets.cli`` or ``falassets.review``.
"""
