"""The Evidently HTML report is off the per-batch path: rendered for drifted batches (the
default), for every batch or only on demand, while the drift check runs on every batch."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.assets.deployment import wants_html_report
from mlops_assets.contract import DRIFT_CHECK, Asset, Job, Sensor
from mlops_assets.spec import DriftSpec
from tests.assets.pipeline_harness import Harness

NAME = "gss_slice"
# A history year scored as if it were production: the same population, so it does not drift.
STEADY = "1976"


def _check_evaluations(h: Harness, batch: str) -> int:
    key = dg.AssetCheckKey(h.key(Asset.DRIFT_REPORT), DRIFT_CHECK)
    history = h.instance.event_log_storage.get_asset_check_execution_history(key, limit=1000)
    return sum(1 for r in history if r.event and r.event.dagster_event.partition == batch)


def _tick(h: Harness, cursor: str | None) -> tuple[list[dg.RunRequest], str | None]:
    sensor = h.defs.resolve_sensor_def(Sensor.drift_report(NAME))
    # Called directly, as the landing sensor's test does: the result as the daemon receives it.
    context = dg.build_sensor_context(instance=h.instance, cursor=cursor, resources=h.resources, definitions=h.defs)
    data = sensor(context)
    return list(data.run_requests or []), data.cursor


def test_a_batch_that_did_not_drift_gets_its_check_but_no_html(scored_pipeline: Harness) -> None:
    h = scored_pipeline
    result = h.materialize([Asset.PREDICTIONS, Asset.DRIFT_REPORT], STEADY)
    assert result.success, h.failure_message(result)
    assert h.check_results(result)[DRIFT_CHECK] is True
    meta = h.metadata(Asset.DRIFT_REPORT, STEADY)
    assert meta["dataset_drift"] is False
    assert "report" not in meta
    assert not h.resources["lake"].exists(NAME, Asset.DRIFT_REPORT, STEADY, "html")


def test_scoring_renders_no_html_and_the_sensor_launches_one_report_run_per_drifted_batch(
    scored_pipeline: Harness,
) -> None:
    h = scored_pipeline
    if not h.resources["lake"].exists(NAME, Asset.PREDICTIONS, STEADY, "parquet"):
        assert h.materialize([Asset.PREDICTIONS, Asset.DRIFT_REPORT], STEADY).success
    lake = h.resources["lake"]
    # The scoring run itself rendered nothing, drifted or not: Evidently is off its path.
    drifted = h.metadata(Asset.DRIFT_REPORT, "2010")
    assert drifted["dataset_drift"] is True
    assert "report" not in drifted
    lake_html = [b for b in ("2010", STEADY) if lake.exists(NAME, Asset.DRIFT_REPORT, b, "html")]
    assert lake_html == []

    requests, cursor = _tick(h, None)
    # One request: the drifted batch, not the steady one.
    assert [r.partition_key for r in requests] == ["2010"]
    (request,) = requests
    assert request.tags["mlops/trigger"] == "drift"
    # The next tick has nothing new to act on: each materialization is requested once.
    again, _ = _tick(h, cursor)
    assert again == []

    job = h.defs.resolve_job_def(Job.drift_report(NAME))
    run = job.execute_in_process(
        instance=h.instance, partition_key=request.partition_key, tags=request.tags, raise_on_error=False
    )
    assert run.success, h.failure_message(run)
    (observation,) = [
        e.asset_observation_data.asset_observation
        for e in run.all_events
        if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION
    ]
    assert observation.partition == "2010"
    assert Path(observation.metadata["report"].value).read_text().lstrip().lower().startswith("<!doctype html")
    assert lake.exists(NAME, Asset.DRIFT_REPORT, "2010", "html")


def test_the_report_job_renders_on_demand_without_rerunning_the_checks(scored_pipeline: Harness) -> None:
    h = scored_pipeline
    if not h.resources["lake"].exists(NAME, Asset.PREDICTIONS, STEADY, "parquet"):
        assert h.materialize([Asset.PREDICTIONS, Asset.DRIFT_REPORT], STEADY).success
    checks_before = _check_evaluations(h, STEADY)
    materialized_by = (
        h.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=h.key(Asset.DRIFT_REPORT), asset_partitions=[STEADY]), limit=1
        )
        .records[0]
        .run_id
    )
    job = h.defs.resolve_job_def(Job.drift_report(NAME))
    result = job.execute_in_process(instance=h.instance, partition_key=STEADY, raise_on_error=False)
    assert result.success, h.failure_message(result)
    (observation,) = [
        e.asset_observation_data.asset_observation
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION
    ]
    assert observation.partition == STEADY
    path = Path(observation.metadata["report"].value)
    assert path.read_text().lstrip().lower().startswith("<!doctype html")
    assert h.resources["lake"].exists(NAME, Asset.DRIFT_REPORT, STEADY, "html")
    # The verdict stays the scoring run's: no new check evaluation, no new materialization.
    assert _check_evaluations(h, STEADY) == checks_before
    latest = h.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=h.key(Asset.DRIFT_REPORT), asset_partitions=[STEADY]), limit=1
    ).records[0]
    assert latest.run_id == materialized_by


def test_the_report_job_names_a_batch_that_was_never_drift_checked(scored_pipeline: Harness) -> None:
    h = scored_pipeline
    job = h.defs.resolve_job_def(Job.drift_report(NAME))
    result = job.execute_in_process(instance=h.instance, partition_key="1975", raise_on_error=False)
    assert not result.success
    assert "batch 1975 has not been drift-checked" in h.failure_message(result)


@pytest.mark.parametrize(
    ("mode", "drifted", "rendered"),
    [
        ("on_drift", True, True),
        ("on_drift", False, False),
        ("always", False, True),
        ("always", True, True),
        ("on_demand", True, False),
        ("on_demand", False, False),
    ],
)
def test_html_report_modes(mode: str, drifted: bool, rendered: bool) -> None:
    assert wants_html_report(DriftSpec(html_report=mode).html_report, dataset_drift=drifted) is rendered


def test_html_report_defaults_to_on_drift_and_rejects_other_values() -> None:
    assert DriftSpec().html_report == "on_drift"
    assert "html_report" not in DriftSpec().policy_fields()
    with pytest.raises(ValueError, match="html_report"):
        DriftSpec(html_report="sometimes")
