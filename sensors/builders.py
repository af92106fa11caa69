"""Sensor and schedule builders for one model. They receive jobs, keys and policy as arguments
and never import the definitions.

Ticks are cheap: one directory listing or a few indexed event-log queries, then a pure decision
from ``sensors.policy``. No data is read and no ML library is imported in a tick.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import dagster as dg

from mlops_assets.assets.common import ModelPipeline
from mlops_assets.contract import TAG_BATCH, TAG_LANDING_FILE, TAG_REASON, TAG_TRIGGER, Asset, Meta, op_name
from resources.alerts import AlertSink
from resources.landing import LandingZone
from sensors.policy import CheckEvent, RetrainDecision, decide_cadence, decide_retrain, plan_landing

HISTORY_PER_TICK = 50
# AssetCheckExecutionRecordStatus values of finished evaluations (the enum is not public API).
COMPLETED = {"SUCCEEDED", "FAILED"}
ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def build_landing_sensor(
    pipeline: ModelPipeline, *, job: dg.UnresolvedAssetJobDefinition, interval_seconds: int
) -> dg.SensorDefinition:
    """Registers each settled file in the landing folder as a partition and scores it."""
    name = pipeline.name
    settle = pipeline.spec.monitoring.landing_settle_seconds

    @dg.sensor(
        name=f"{name}_landing_sensor",
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Ingests batch files dropped into the landing folder of {name} (<batch>.parquet or .csv).",
    )
    def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZone) -> dg.SensorResult | dg.SkipReason:
        seen = json.loads(context.cursor) if context.cursor else {}
        plan = plan_landing(landing.files(name), seen=seen, now=time.time(), settle_seconds=settle)
        if not plan.ingest:
            return dg.SkipReason(plan.skip_reason(str(landing.folder(name))))
        known = set(context.instance.get_dynamic_partitions(pipeline.partitions.name))
        new_batches = sorted({f.batch for f in plan.ingest} - known)
        requests = [
            dg.RunRequest(
                run_key=f"{name}:landing:{f.identity}",
                partition_key=f.batch,
                tags={**pipeline.tags, TAG_TRIGGER: "landing", TAG_BATCH: f.batch, TAG_LANDING_FILE: f.path},
            )
            for f in plan.ingest
        ]
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[pipeline.partitions.build_add_request(new_batches)] if new_batches else [],
            cursor=json.dumps(plan.seen, sort_keys=True),
        )

    return landing_sensor


def _check_events(instance: dg.DagsterInstance, keys: Sequence[dg.AssetCheckKey]) -> list[CheckEvent]:
    """The recent completed evaluations of ``keys`` (checks still planned or running are skipped)."""
    events = []
    for key in keys:
        for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=HISTORY_PER_TICK):
            evaluation = record.evaluation
            if record.status.value in COMPLETED and isinstance(evaluation, dg.AssetCheckEvaluation):
                events.append(
                    CheckEvent(record.id, _batch(instance, record.run_id, evaluation), evaluation.passed, key.name)
                )
    return events


def _batch(instance: dg.DagsterInstance, run_id: str, evaluation: dg.AssetCheckEvaluation) -> str:
    """The batch a check result is about. Results yielded by a partitioned asset's body carry no
    ``partition`` in daemon-launched runs, so our checks also record it as metadata."""
    if evaluation.partition:
        return evaluation.partition
    batch = evaluation.metadata.get(Meta.BATCH)
    if batch is not None:
        return str(batch.value)
    run = instance.get_run_by_id(run_id)
    return (run.tags.get("dagster/partition", "") if run else "") or ""


def _active_run(instance: dg.DagsterInstance, job_name: str) -> str | None:
    runs = instance.get_run_records(dg.RunsFilter(job_name=job_name, statuses=ACTIVE_RUN_STATUSES), limit=1)
    return runs[0].dagster_run.run_id if runs else None


def build_retrain_sensor(
    pipeline: ModelPipeline,
    *,
    trigger: str,
    checks: Sequence[dg.AssetCheckKey],
    job: dg.UnresolvedAssetJobDefinition,
    interval_seconds: int,
    cadence: bool = False,
) -> dg.SensorDefinition:
    """Requests a retrain (training window up to the failing batch) when a monitored check fails.

    With ``cadence``, it also retrains once ``monitoring.retrain_every`` batches were scored after
    the champion's training data, drift or not (trigger ``schedule``).
    """
    name = pipeline.name
    training_op = op_name(name, Asset.TRAINING_DATASET)

    @dg.sensor(
        name=f"{name}_{trigger}_sensor",
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Retrains {name} when {', '.join(sorted({c.name for c in checks}))} fails on a batch.",
    )
    def retrain_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        cursor = int(context.cursor or 0)
        decision = decide_retrain(
            model=name,
            trigger=trigger,
            events=_check_events(context.instance, checks),
            cursor=cursor,
            retrain_in_progress=_active_run(context.instance, job.name),
        )
        if decision.run_key is None and cadence:
            decision = _cadence(context.instance, pipeline) or decision
            trigger_tag = "schedule" if decision.run_key else trigger
        else:
            trigger_tag = trigger
        context.update_cursor(str(decision.cursor or cursor))
        if decision.run_key is None:
            return dg.SkipReason(decision.reason)
        context.log.info("%s: %s; requesting a retrain up to batch %s", name, decision.reason, decision.batch)
        return dg.RunRequest(
            run_key=decision.run_key,
            run_config={"ops": {training_op: {"config": {"until": decision.batch}}}},
            tags={
                **pipeline.tags,
                TAG_TRIGGER: trigger_tag,
                TAG_BATCH: decision.batch or "",
                TAG_REASON: decision.reason[:200],
            },
        )

    return retrain_sensor


def _cadence(instance: dg.DagsterInstance, pipeline: ModelPipeline) -> RetrainDecision | None:
    every = pipeline.spec.monitoring.retrain_every
    if every is None:
        return None
    scored = list(instance.get_materialized_partitions(pipeline.key("drift_report")))
    event = instance.get_latest_materialization_event(pipeline.key("training_dataset"))
    if event is None or event.asset_materialization is None:
        return None
    until = event.asset_materialization.metadata.get(Meta.WINDOW_UNTIL)
    return decide_cadence(
        model=pipeline.name, every=every, scored=scored, trained_until=str(until.value) if until else None
    )


def build_check_alert_sensor(
    pipeline: ModelPipeline, *, checks: Sequence[dg.AssetCheckKey], interval_seconds: int
) -> dg.SensorDefinition:
    """Reports every failed asset check of the model to the alert sink.

    Failed checks do not fail runs, so run-failure sensors never see them; this one reads the
    check results themselves. A sink that fails makes the tick fail, visibly.
    """
    name = pipeline.name

    @dg.sensor(
        name=f"{name}_check_alert_sensor",
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Sends failed asset checks of {name} to the alert sink (Dagster log; webhook if configured).",
    )
    def check_alert_sensor(context: dg.SensorEvaluationContext, alerts: AlertSink) -> dg.SkipReason:
        cursor = int(context.cursor or 0)
        new = sorted(
            (e for e in _check_events(context.instance, checks) if e.record_id > cursor), key=lambda e: e.record_id
        )
        failed = [e for e in new if not e.passed]
        for event in failed:
            alerts.send(
                context.log,
                f"{name}: check {event.check} failed on batch {event.batch or '(unpartitioned)'}",
                {"model": name, "check": event.check, "batch": event.batch, "record_id": event.record_id},
            )
        if new:
            context.update_cursor(str(new[-1].record_id))
        return dg.SkipReason(
            f"sent {len(failed)} alert(s) for {len(new)} new check result(s)" if new else "no new check result"
        )

    return check_alert_sensor


def build_recheck_schedule(
    pipeline: ModelPipeline, *, job: dg.UnresolvedAssetJobDefinition, cron: str
) -> dg.ScheduleDefinition:
    """Re-scores and re-checks the newest batch on a cron, e.g. after a champion change."""
    name = pipeline.name

    @dg.schedule(
        name=f"{name}_recheck_schedule",
        cron_schedule=cron,
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Re-scores and re-checks the drift and fairness of the newest {name} batch.",
    )
    def recheck_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        from mlops_assets.ml.data import sorted_batches

        ready = sorted_batches(context.instance.get_materialized_partitions(pipeline.key("features")))
        if not ready:
            return dg.SkipReason(f"{name} has no batch with features yet")
        latest = ready[-1]
        return dg.RunRequest(partition_key=latest, tags={**pipeline.tags, TAG_TRIGGER: "schedule", TAG_BATCH: latest})

    return recheck_schedule
