"""Dagster's notices meant for pipeline authors, kept out of falassets' own commands.

Only two kinds, nothing else: Dagster's beta/preview warnings (``BackfillPolicy.single_run``
is beta; a user can do nothing about it) and the `dagster dev` -> `dg dev` supersession
notice (`falassets dev` is the command users type). Every other warning still shows.
"""

from __future__ import annotations

import os
import re
import warnings

#: Set for every process falassets starts, so Dagster's own subprocesses (the code server
#: that loads falassets.pipeline.definitions) install the same filters when they import falassets.
QUIET_ENV = "FALASSETS_QUIET_DAGSTER_WARNINGS"

#: How the `dagster dev` command's supersession warning begins (it names `dg dev`).
DG_DEV_NOTICE = "Function `dev_command` is superseded"


def quiet_dagster_notices() -> None:
    """Ignore Dagster's BetaWarning and PreviewWarning, and the `dg dev` notice, in this
    process and (through :data:`QUIET_ENV`) in the falassets processes it starts."""
    from dagster_shared.utils.warnings import BetaWarning, PreviewWarning, SupersessionWarning

    os.environ[QUIET_ENV] = "1"
    for category in (BetaWarning, PreviewWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings(
        "ignore", message=re.escape(DG_DEV_NOTICE), category=SupersessionWarning
    )


def dagster_dev_env(env: dict[str, str]) -> dict[str, str]:
    """The environment for the `dagster dev` subprocess tree.

    The `dagster` command warns before it imports anything of ours, so its notice is filtered
    with ``PYTHONWARNINGS``, which can name a message but not Dagster's warning classes (it
    is read before site-packages are importable); the code server imports falassets, which
    installs the category filters when :data:`QUIET_ENV` is set.
    """
    rules = [rule for rule in env.get("PYTHONWARNINGS", "").split(",") if rule]
    rules.append(f"ignore:{DG_DEV_NOTICE}")
    return {**env, QUIET_ENV: "1", "PYTHONWARNINGS": ",".join(rules)}
