"""Sensors evaluated on an instance that holds real materializations and check results."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from tests.assets.pipeline_harness import Harness
from tests.conftest import gss

NAME = "gss_slice"


def sensor(h: Harness, name: str) -> dg.SensorDefinition:
    return h.defs.get_sensor_def(f"{NAME}_{name}")


def tick(h: Harness, sensor_def: dg.SensorDefinition, cursor: str | None = None):  # noqa: ANN201
    context = dg.build_sensor_context(instance=h.instance, cursor=cursor, resources=h.resources, definitions=h.defs)
    return sensor_def.evaluate_tick(context)


def test_one_drift_event_gives_one_retrain_over_100_ticks(scored_pipeline: Harness) -> None:
    drift_sensor = sensor(scored_pipeline, "drift_sensor")
    requests, cursor = [], None
    for _ in range(100):
        data = tick(scored_pipeline, drift_sensor, cursor)
        requests += data.run_requests
        cursor = data.cursor
    assert len(requests) == 1
    (request,) = requests
    assert request.run_key.startswith(f"{NAME}:drift:2010:")
    assert request.tags["mlops/trigger"] == "drift"
    assert request.tags["mlops/model"] == NAME
    assert request.tags["mlops/batch"] == "2010"
    assert request.run_config == {"ops": {f"{NAME}__training_dataset": {"config": {"until": "2010"}}}}
    # A lost cursor re-requests the same run key, which Dagster runs at most once.
    assert [r.run_key for r in tick(scored_pipeline, drift_sensor, None).run_requests] == [request.run_key]
    later = tick(scored_pipeline, drift_sensor, cursor)
    assert later.skip_message == f"no new drift check result since record {cursor}"


def test_landing_registers_the_batch_and_requests_its_scoring(scored_pipeline: Harness) -> None:
    landing = scored_pipeline.resources["landing"]
    folder = landing.folder(NAME)
    folder.mkdir(parents=True, exist_ok=True)
    frame = gss()
    path = folder / "2016.parquet"
    frame[frame["year"] == 2016].to_parquet(path, index=False)
    landing_sensor = sensor(scored_pipeline, "landing_sensor")
    try:
        import os

        os.utime(path, (time.time(), time.time()))
        settling = tick(scored_pipeline, landing_sensor)
        assert "waiting for 2016.parquet" in settling.skip_message
        os.utime(path, (time.time() - 60, time.time() - 60))
        # Called directly: evaluate_tick would check the request's partition before the
        # partition this same result adds exists (the daemon adds it first).
        context = dg.build_sensor_context(
            instance=scored_pipeline.instance, resources=scored_pipeline.resources, definitions=scored_pipeline.defs
        )
        data = landing_sensor(context)
        (request,) = data.run_requests
        assert request.partition_key == "2016"
        assert request.tags["mlops/trigger"] == "landing"
        (add,) = data.dynamic_partitions_requests
        assert list(add.partition_keys) == ["2016"]
        scored_pipeline.instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))
        again = tick(scored_pipeline, landing_sensor, data.cursor)
        assert again.run_requests == [] and "no new or changed file" in again.skip_message
    finally:
        path.unlink()


def test_a_malformed_landed_file_fails_naming_the_file(scored_pipeline: Harness) -> None:
    landing = scored_pipeline.resources["landing"]
    folder = landing.folder(NAME)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "2012.parquet"
    path.write_bytes(b"PAR1 this is half a file")
    try:
        result = scored_pipeline.materialize(["raw_batch", "validated_batch"], "2012")
        assert not result.success
        message = scored_pipeline.failure_message(result)
        assert f"landing file {path}: cannot be read as parquet" in message
        assert path.exists(), "a failed file must stay where it landed"
    finally:
        path.unlink()


def test_failed_checks_are_alerted_once(scored_pipeline: Harness, caplog: pytest.LogCaptureFixture) -> None:
    alert_sensor = sensor(scored_pipeline, "check_alert_sensor")
    first = tick(scored_pipeline, alert_sensor)
    assert first.skip_message.startswith("sent ")
    assert int(first.skip_message.split()[1]) >= 1
    second = tick(scored_pipeline, alert_sensor, first.cursor)
    assert second.skip_message == "no new check result"


def test_ticks_stay_cheap_on_a_long_history(tmp_path: Path, scored_pipeline: Harness) -> None:
    """Thirty years of batches, each with every check recorded: ticks stay far below the 60 s limit."""
    instance = dg.DagsterInstance.ephemeral()
    partitions = scored_pipeline.defs.resolve_asset_graph().get(scored_pipeline.key("features")).partitions_def
    batches = [str(y) for y in range(1980, 2010)]
    instance.add_dynamic_partitions(partitions.name, batches)
    check_keys = [
        spec.key
        for a in scored_pipeline.defs.assets
        for spec in a.check_specs  # type: ignore[union-attr]
    ]
    for batch in batches:
        for key in check_keys:
            instance.report_runless_asset_event(
                dg.AssetCheckEvaluation(
                    asset_key=key.asset_key, check_name=key.name, passed=batch != "2009", metadata={}, partition=batch
                )
            )
    h = scored_pipeline
    timings = {}
    for name in ("drift_sensor", "fairness_sensor", "check_alert_sensor", "landing_sensor"):
        sensor_def = sensor(h, name)
        started = time.perf_counter()
        cursor = None
        for _ in range(10):
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor, resources=h.resources, definitions=h.defs
            )
            cursor = sensor_def.evaluate_tick(context).cursor
        timings[name] = (time.perf_counter() - started) / 10
    print("\nmean tick seconds over", len(batches) * len(check_keys), "check results:", timings)
    assert max(timings.values()) < 5.0, timings
