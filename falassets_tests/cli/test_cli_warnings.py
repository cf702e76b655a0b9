"""falassets' commands hide Dagster's beta/preview notices and the `dg dev` notice, and only
those: every other warning still reaches the user."""

from __future__ import annotations

import warnings

from dagster_shared.utils.warnings import BetaWarning, PreviewWarning, SupersessionWarning

from falassets.cli.dagster_notices import (
    DG_DEV_NOTICE,
    QUIET_ENV,
    dagster_dev_env,
    quiet_dagster_notices,
)


def test_only_dagster_beta_preview_and_the_dg_dev_notice_are_hidden(monkeypatch) -> None:
    monkeypatch.setenv(QUIET_ENV, "")  # restored (unset) afterwards: the call sets it
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_dagster_notices()
        warnings.warn("Parameter `backfill_policy` is currently in beta", BetaWarning, stacklevel=1)
        warnings.warn("Class `X` is currently in preview", PreviewWarning, stacklevel=1)
        warnings.warn(
            f"{DG_DEV_NOTICE} and its usage is discouraged", SupersessionWarning, stacklevel=1
        )
        warnings.warn("Function `other` is superseded", SupersessionWarning, stacklevel=1)
        warnings.warn("a user warning", UserWarning, stacklevel=1)
        warnings.warn("a deprecation", DeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == [
        "Function `other` is superseded",
        "a user warning",
        "a deprecation",
    ]


def test_dagster_dev_env_adds_its_rule_to_the_users_own(monkeypatch) -> None:
    env = dagster_dev_env({"PYTHONWARNINGS": "error::ResourceWarning", "DAGSTER_HOME": "/h"})
    assert env["PYTHONWARNINGS"] == f"error::ResourceWarning,ignore:{DG_DEV_NOTICE}"
    assert env[QUIET_ENV] == "1" and env["DAGSTER_HOME"] == "/h"
    assert ":" not in DG_DEV_NOTICE and "," not in DG_DEV_NOTICE  # PYTHONWARNINGS separators
