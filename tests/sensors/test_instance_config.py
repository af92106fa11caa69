"""The Dagster instance config the product writes: run monitoring ends runs whose processes died."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from mlops_assets.demo import ensure_instance


def test_the_written_instance_monitors_runs(tmp_path: Path) -> None:
    assert ensure_instance(tmp_path) == []
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        assert "MONITORING" in instance.get_required_daemon_types()
        assert instance.run_monitoring_start_timeout_seconds == 180
        assert instance.run_monitoring_max_runtime_seconds == 86400
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 60
        assert isinstance(instance.run_launcher, dg.DefaultRunLauncher)


def test_an_existing_config_is_kept_and_what_it_lacks_is_named(tmp_path: Path) -> None:
    config = tmp_path / "dagster.yaml"
    config.write_text("telemetry:\n  enabled: false\n")
    (note,) = ensure_instance(tmp_path)
    assert note.startswith(f"{config}: no `run_monitoring:` section, so runs whose processes died stay STARTED")
    assert config.read_text() == "telemetry:\n  enabled: false\n"
