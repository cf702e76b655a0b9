"""The definitions ``workspace.yaml`` loads, and the names other modules rely on."""

from __future__ import annotations

import dagster as dg

from falassets.pipeline.definitions import defs


def test_definitions_load_with_the_contracted_names() -> None:
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()} >= {
        "prompts",
        "draft_renders",
        "review_selections",
        "final_renders",
        "campaign_report",
    }
    assert repo.get_job("draft_pass").partitions_def.name == "prompt"
    assert repo.get_job("final_pass").partitions_def.name == "winner"
    sensors = {s.name: s for s in repo.sensor_defs}
    for name in ("campaign_file_sensor", "winners_sensor"):
        assert sensors[name].default_status == dg.DefaultSensorStatus.RUNNING
    assert "fal" in repo.get_top_level_resources()


def test_the_fal_key_is_an_env_var_never_a_literal(monkeypatch) -> None:
    import importlib

    import falassets.pipeline.definitions as module

    monkeypatch.setenv("FAL_KEY", "secret-key-that-must-not-leak")
    try:
        reloaded = importlib.reload(module)
        resource = reloaded.defs.get_repository_def().get_top_level_resources()["fal"]
        # The resource holds an EnvVar reference: the value is read at run time, not stored.
        assert "secret-key-that-must-not-leak" not in repr(resource)
        assert "secret-key-that-must-not-leak" not in str(
            reloaded.defs.get_repository_def().get_top_level_resources()
        )
    finally:
        monkeypatch.delenv("FAL_KEY")
        importlib.reload(module)
