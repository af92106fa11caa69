"""Sensors evaluated on an instance that holds real materializations and check results."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from resources.alerts import AlertSink
from sensors.builders import process_alive
from tests.assets.pipeline_harness import Harness
from tests.conftest import gss, gss_spec

NAME = "gss_slice"
SCORING = ["raw_batch", "validated_batch", "features", "predictions", "drift_report"]


def sensor(h: Harness, name: str) -> dg.SensorDefinition:
    return h.defs.get_sensor_def(f"{NAME}_{name}")


def tick(h: Harness, sensor_def: dg.SensorDefinition, cursor: str | None = None, **resources: object):  # noqa: ANN201
    context = dg.build_sensor_context(
        instance=h.instance, cursor=cursor, resources={**h.resources, **resources}, definitions=h.defs
    )
    return sensor_def.evaluate_tick(context)


def failed_records(h: Harness, check: str, asset: str) -> list[int]:
    """Ids of the failed records of a check (other tests on the shared pipeline may add some)."""
    history = h.instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(h.key(asset), check), limit=50
    )
    return sorted(r.id for r in history if r.status.value == "FAILED")


def test_one_drift_event_gives_one_retrain_over_100_ticks(scored_pipeline: Harness) -> None:
    drift_sensor = sensor(scored_pipeline, "drift_sensor")
    records = failed_records(scored_pipeline, "drift_within_tolerance", "drift_report")
    assert 1 <= len(records) <= 4, records  # every one on batch 2010
    requests, cursor = [], None
    for _ in range(100):
        data = tick(scored_pipeline, drift_sensor, cursor)
        requests += data.run_requests
        cursor = data.cursor
    assert len(requests) == 1
    (request,) = requests
    assert request.run_key == f"{NAME}:drift:2010:{'+'.join(map(str, records))}"
    assert request.tags["mlops/trigger"] == "drift"
    assert request.tags["mlops/model"] == NAME
    assert request.tags["mlops/batch"] == "2010"
    assert request.tags["mlops/check_records"] == ",".join(map(str, records))
    assert request.run_config == {"ops": {f"{NAME}__training_dataset": {"config": {"until": "2010"}}}}
    # A lost cursor asks for the very same run, every time: Dagster starts one run per run key.
    lost = [r.run_key for _ in range(100) for r in tick(scored_pipeline, drift_sensor, None).run_requests]
    assert lost == [request.run_key] * 100
    assert tick(scored_pipeline, drift_sensor, cursor).skip_message == "no new drift check result"


def test_landing_registers_the_batch_and_requests_its_scoring(scored_pipeline: Harness) -> None:
    landing = scored_pipeline.resources["landing"]
    folder = landing.folder(NAME)
    folder.mkdir(parents=True, exist_ok=True)
    frame = gss()
    path = folder / "2016.parquet"
    frame[frame["year"] == 2016].to_parquet(path, index=False)
    landing_sensor = sensor(scored_pipeline, "landing_sensor")
    try:
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
        scored_pipeline.instance.delete_dynamic_partition(f"{NAME}_batches", "2016")


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


@pytest.fixture(scope="module")
def unfair_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    """History 1974-76 and batch 2010 scored, with a parity limit of 0.12: 2010 drifts (62% of
    columns) and its parity gap (0.154) fails the production check. The first model's holdout gap
    (0.25) fails the same gate, so it was promoted by a recorded override."""
    root = tmp_path_factory.mktemp("unfair")
    source = root / "data" / "gss.parquet"
    source.parent.mkdir()
    frame = gss()
    frame[frame["year"].isin([1974, 1975, 1976, 2010])].to_parquet(source, index=False)
    gates = {"min_metrics": {"roc_auc": 0.6}, "max_demographic_parity_difference": 0.12}
    (root / "pipelines").mkdir()
    (root / "pipelines" / "spec.yaml").write_text(yaml.safe_dump(gss_spec(source, gates=gates)))
    h = Harness(root / "home", root / "pipelines", NAME)
    assert h.materialize(["source_batches"]).success
    assert h.materialize(["validation_suite"]).success
    for batch in ("1974", "1975", "1976"):
        assert h.materialize(["raw_batch", "validated_batch", "features"], batch).success
    override = {"ops": {f"{NAME}__promotion": {"config": {"override": True, "override_reason": "test fixture"}}}}
    trained = h.materialize(["training_dataset", "model", "evaluation", "promotion"], run_config=override)
    assert trained.success, h.failure_message(trained)
    scored = h.materialize(SCORING, "2010")
    assert scored.success, h.failure_message(scored)
    assert h.check_results(scored)["drift_within_tolerance"] is False
    assert h.check_results(scored)["parity_gap_within_limit"] is False
    assert h.check_results(scored)["equalized_odds_within_limit"] is True
    h.spec_source = source  # type: ignore[attr-defined]
    h.root = root  # type: ignore[attr-defined]
    return h


MATRIX = [
    # retrain_on_drift, retrain_every, fairness_action -> {sensor: [(trigger, batch) of the first two ticks]}
    (True, None, "retrain", {"drift_sensor": [("drift", "2010")], "fairness_sensor": [("fairness", "2010")]}),
    (True, None, "alert", {"drift_sensor": [("drift", "2010")]}),
    (False, None, "retrain", {"fairness_sensor": [("fairness", "2010")]}),
    (False, None, "alert", {}),
    (
        True,
        1,
        "retrain",
        {"drift_sensor": [("drift", "2010"), ("schedule", "2010")], "fairness_sensor": [("fairness", "2010")]},
    ),
    (True, 1, "alert", {"drift_sensor": [("drift", "2010"), ("schedule", "2010")]}),
    (False, 1, "retrain", {"cadence_sensor": [("schedule", "2010")], "fairness_sensor": [("fairness", "2010")]}),
    (False, 1, "alert", {"cadence_sensor": [("schedule", "2010")]}),
]


@pytest.mark.parametrize(("on_drift", "every", "fairness", "expected"), MATRIX)
def test_monitoring_flags_decide_which_checks_retrain(
    unfair_pipeline: Harness, tmp_path: Path, on_drift: bool, every: int | None, fairness: str, expected: dict
) -> None:
    """Every combination of the three flags, on one instance where drift and parity both failed:
    what each retrain sensor requests on its first two ticks, and that alerts go out regardless."""
    h = unfair_pipeline
    monitoring = {"retrain_on_drift": on_drift, "retrain_every": every, "fairness_action": fairness}
    gates = {"min_metrics": {"roc_auc": 0.6}, "max_demographic_parity_difference": 0.12}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(gss_spec(h.spec_source, gates=gates, monitoring=monitoring)))  # type: ignore[attr-defined]
    variant = Harness(h.root / "home", tmp_path, NAME, instance=h.instance)  # type: ignore[attr-defined]
    names = {s.name.removeprefix(f"{NAME}_") for s in variant.defs.sensors}
    # The drift report sensor renders HTML reports; it starts no retrain.
    retrain_sensors = names - {"landing_sensor", "check_alert_sensor", "run_watchdog_sensor", "drift_report_sensor"}
    assert retrain_sensors == set(expected)
    requested = {}
    for name in sorted(retrain_sensors):
        cursor, asked, keys = None, [], []
        for _ in range(2):
            data = tick(variant, sensor(variant, name), cursor)
            asked += [(r.tags["mlops/trigger"], r.tags["mlops/batch"]) for r in data.run_requests]
            keys += [r.run_key for r in data.run_requests]
            cursor = data.cursor
        # A request repeated with the same run key is one run (Dagster starts one per key).
        requested[name] = [a for i, a in enumerate(asked) if keys[i] not in keys[:i]]
    assert requested == expected
    alerts = tick(variant, sensor(variant, "check_alert_sensor"), None, alerts=AlertSink())
    # 28 validation checks and the re-landing check on each of four batches, the drift check and
    # two fairness checks.
    assert alerts.skip_message == "sent 2 alert(s) for 119 new check result(s)"


def test_process_alive_tells_a_running_worker_from_a_dead_or_reused_pid() -> None:
    before = time.time()
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_alive(worker.pid, started_by=time.time())
        # The pid now names a process that started after the run worker reported itself.
        assert not process_alive(worker.pid, started_by=before - 60)
    finally:
        worker.kill()
    # Killed but not reaped: a zombie runs nothing.
    time.sleep(0.5)
    assert not process_alive(worker.pid, started_by=time.time())
    worker.wait()
    assert not process_alive(worker.pid, started_by=time.time())


def test_ticks_stay_cheap_on_a_long_history(scored_pipeline: Harness) -> None:
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
    for name in ("drift_sensor", "fairness_sensor", "check_alert_sensor", "landing_sensor", "run_watchdog_sensor"):
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
