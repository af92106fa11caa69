"""One model's definitions from its resolved spec: assets, checks and jobs."""

from __future__ import annotations

import dagster as dg

from mlops_assets.assets.attributions import build_attribution_assets
from mlops_assets.assets.backfill import BATCH_ASSETS, build_backfill_job
from mlops_assets.assets.common import ModelPipeline
from mlops_assets.assets.deployment import build_deployment_assets, build_drift_report_job, fairness_checks
from mlops_assets.assets.evaluation import build_evaluation_assets
from mlops_assets.assets.features import build_feature_assets
from mlops_assets.assets.governance import build_governance_assets, build_rollback_job
from mlops_assets.assets.ingestion import build_ingestion_assets
from mlops_assets.assets.online import build_online_assets
from mlops_assets.assets.training import build_training_assets
from mlops_assets.assets.validation import build_validation_assets
from mlops_assets.contract import ATTRIBUTION_DRIFT_CHECK, DRIFT_CHECK, RELANDING_CHECK, TAG_MAX_RUNTIME, Asset, Job
from mlops_assets.k8s import training_op_tags
from sensors.builders import (
    build_check_alert_sensor,
    build_drift_report_sensor,
    build_landing_sensor,
    build_recheck_schedule,
    build_retrain_sensor,
    build_run_watchdog_sensor,
)

RETRAIN_ASSETS = (Asset.TRAINING_DATASET, Asset.MODEL, Asset.EVALUATION, Asset.PROMOTION)
# Run monitoring ends a run that outlives these (dagster/max_runtime), on every run launcher: a
# bound for runs whose processes died where nothing else notices. Far above what the jobs take
# (a GSS batch scores in under a minute, a retrain in about one), to leave room for big data.
MAX_RUNTIME_SECONDS = {"score_batch": 2 * 3600, "recheck": 2 * 3600, "retrain": 12 * 3600}


def build_pipeline(
    pipeline: ModelPipeline, *, on_kubernetes: bool, sensor_interval_seconds: int = 30
) -> dg.Definitions:
    """Assets keyed ``[<name>, <noun>]`` in group ``<name>``, the jobs that sensors and people
    launch, and the sensors and schedule that close the loop.

    Args:
        pipeline: the spec with its columns resolved.
        on_kubernetes: whether steps run as pods (then the training step carries its GPU config).
        sensor_interval_seconds: the minimum interval between ticks of each sensor.
    """
    name = pipeline.name
    assets = [
        *build_ingestion_assets(pipeline),
        *build_validation_assets(pipeline),
        *build_feature_assets(pipeline),
        *build_training_assets(pipeline, op_tags=training_op_tags(pipeline.spec.training, on_kubernetes=on_kubernetes)),
        *build_evaluation_assets(pipeline),
        *build_deployment_assets(pipeline),
        *build_attribution_assets(pipeline),
        *build_governance_assets(pipeline),
        *build_online_assets(pipeline),
    ]
    score_batch = dg.define_asset_job(
        Job.score_batch(name),
        selection=dg.AssetSelection.assets(*(pipeline.key(a) for a in BATCH_ASSETS)),
        partitions_def=pipeline.partitions,
        tags=_with_max_runtime(pipeline.tags, "score_batch"),
        description=f"Validates, featurizes, scores and drift-checks one {name} batch.",
    )
    retrain = dg.define_asset_job(
        Job.retrain(name),
        selection=dg.AssetSelection.assets(
            *(pipeline.key(a) for a in (*RETRAIN_ASSETS, Asset.MODEL_CARD, Asset.DEPLOYMENT))
        ),
        tags=_with_max_runtime(pipeline.tags, "retrain"),
        description=f"Trains a {name} candidate on the training window, evaluates it and decides its promotion.",
    )
    recheck = dg.define_asset_job(
        Job.recheck(name),
        selection=dg.AssetSelection.assets(pipeline.key(Asset.PREDICTIONS), pipeline.key(Asset.DRIFT_REPORT)),
        partitions_def=pipeline.partitions,
        tags=_with_max_runtime(pipeline.tags, "recheck"),
        description=f"Re-scores one {name} batch with the current champion and re-checks its drift and fairness.",
    )
    drift_report_job = build_drift_report_job(pipeline)
    monitoring = pipeline.spec.monitoring
    interval = sensor_interval_seconds
    drift = [dg.AssetCheckKey(pipeline.key(Asset.DRIFT_REPORT), DRIFT_CHECK)]
    fairness = [dg.AssetCheckKey(pipeline.key(Asset.PREDICTIONS), c) for c in fairness_checks(pipeline)]
    validation = [spec.key for spec in _check_specs(assets, pipeline.key(Asset.VALIDATED_BATCH))]
    attribution = [dg.AssetCheckKey(pipeline.key(Asset.ATTRIBUTIONS), ATTRIBUTION_DRIFT_CHECK)]
    relanding = [dg.AssetCheckKey(pipeline.key(Asset.RAW_BATCH), RELANDING_CHECK)]
    sensors = [
        build_landing_sensor(pipeline, job=score_batch, interval_seconds=interval),
        build_check_alert_sensor(
            pipeline, checks=[*validation, *drift, *fairness, *attribution, *relanding], interval_seconds=interval
        ),
        build_run_watchdog_sensor(pipeline, interval_seconds=interval),
    ]
    if pipeline.spec.drift.html_report != "on_demand":
        sensors.append(build_drift_report_sensor(pipeline, job=drift_report_job, interval_seconds=interval))
    cadence = monitoring.retrain_every is not None
    if monitoring.retrain_on_drift:
        sensors.append(
            build_retrain_sensor(
                pipeline, trigger="drift", checks=drift, job=retrain, interval_seconds=interval, cadence=cadence
            )
        )
    elif cadence:
        # A failed drift check then only alerts; retraining follows the count of scored batches.
        sensors.append(
            build_retrain_sensor(
                pipeline, trigger="cadence", checks=[], job=retrain, interval_seconds=interval, cadence=True
            )
        )
    if fairness and monitoring.fairness_action == "retrain":
        sensors.append(
            build_retrain_sensor(pipeline, trigger="fairness", checks=fairness, job=retrain, interval_seconds=interval)
        )
    schedules = (
        [build_recheck_schedule(pipeline, job=recheck, cron=monitoring.recheck_cron)] if monitoring.recheck_cron else []
    )
    return dg.Definitions(
        assets=assets,
        jobs=[
            score_batch,
            retrain,
            recheck,
            build_rollback_job(pipeline),
            drift_report_job,
            build_backfill_job(pipeline, assets),
        ],
        sensors=sensors,
        schedules=schedules,
    )


def _check_specs(assets: list[dg.AssetsDefinition], key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [spec for a in assets for spec in a.check_specs if spec.asset_key == key]


def _with_max_runtime(tags: dict[str, str], job: str) -> dict[str, str]:
    return {**tags, TAG_MAX_RUNTIME: str(MAX_RUNTIME_SECONDS[job])}
