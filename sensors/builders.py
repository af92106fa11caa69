"""Sensor and schedule builders for one model. They receive jobs, keys and policy as arguments
and never import the definitions.

Ticks are cheap: one directory listing or a few indexed event-log queries, then a pure decision
from ``sensors.policy``. No data is read and no ML library is imported in a tick.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import dagster as dg

from mlops_assets.assets.common import ModelPipeline
from mlops_assets.assets.deployment import wants_html_report
from mlops_assets.check_results import RunPartitions, check_result_batch
from mlops_assets.contract import (
    DAGSTER_PID_METADATA,
    TAG_BATCH,
    TAG_CHECK_RECORDS,
    TAG_LANDING_FILE,
    TAG_MODEL,
    TAG_REASON,
    TAG_TRIGGER,
    Asset,
    Meta,
    Sensor,
    op_name,
)
from resources.alerts import AlertDeliveryError, AlertSink
from resources.landing import LandingZone, RefusedFile
from sensors.policy import (
    CheckCursor,
    CheckRecord,
    Outcome,
    alert_text,
    decide_cadence,
    decide_retrain,
    plan_landing,
    settle,
)

# Records read per query while catching up; a tick reads every record after its cursor.
PAGE = 200
# AssetCheckExecutionRecordStatus values (the enum is not public API).
_OUTCOMES: dict[str, Outcome] = {"PLANNED": "planned", "SUCCEEDED": "passed", "FAILED": "failed"}
FINISHED_RUN_STATUSES = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
# The engine event a launched run worker writes first, with its pid (dagster/_grpc/impl.py).
_WORKER_STARTED = "Started process for run"


# The landing sensor ticks at least this often, whatever the other sensors' interval: its tick is
# a directory listing (6 ms on an instance with 1,320 check results), and the wait for it was
# most of the time from a dropped file to its drift verdict (up to the 30 s default interval,
# against about 6 s of work).
LANDING_INTERVAL_SECONDS = 5


def build_landing_sensor(
    pipeline: ModelPipeline, *, job: dg.UnresolvedAssetJobDefinition, interval_seconds: int
) -> dg.SensorDefinition:
    """Registers each settled file in the landing folder as a partition and scores it."""
    name = pipeline.name
    settle_seconds = pipeline.spec.monitoring.landing_settle_seconds

    @dg.sensor(
        name=Sensor.landing(name),
        job=job,
        minimum_interval_seconds=min(interval_seconds, LANDING_INTERVAL_SECONDS),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Ingests batch files dropped into the landing folder of {name} (<batch>.parquet or .csv).",
    )
    def landing_sensor(
        context: dg.SensorEvaluationContext, landing: LandingZone, alerts: AlertSink
    ) -> dg.SensorResult | dg.SkipReason:
        seen = json.loads(context.cursor) if context.cursor else {}
        scan = landing.scan(name, max_bytes=pipeline.spec.limits.max_file_bytes)
        plan = plan_landing(scan.files, seen=seen, now=time.time(), settle_seconds=settle_seconds)
        refusals = report_refused(context, name, str(landing.folder(name)), scan.refused, seen, alerts)
        cursor = {**plan.seen, **refusals}
        if not plan.ingest:
            skip = plan.skip_reason(str(landing.folder(name)))
            if scan.refused:
                skip += "; refused: " + "; ".join(r.describe() for r in scan.refused[:10])
            # The cursor still moves: a refusal is alerted once per version of the entry.
            return dg.SensorResult(skip_reason=skip, cursor=json.dumps(cursor, sort_keys=True))
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
            cursor=json.dumps(cursor, sort_keys=True),
        )

    return landing_sensor


# Cursor keys of refused landing entries; a landed file's key is its path, which never starts so.
REFUSED_PREFIX = "refused:"


def report_refused(
    context: dg.SensorEvaluationContext,
    model: str,
    folder: str,
    refused: Sequence[RefusedFile],
    seen: dict[str, str],
    alerts: AlertSink,
) -> dict[str, str]:
    """Alerts each refused landing entry once per version; returns the cursor entries of those
    reported. An alert the webhook does not take is tried again next tick."""
    reported = {}
    deadline = time.monotonic() + alerts.tick_budget_seconds
    for entry in refused:
        key = REFUSED_PREFIX + entry.name
        if seen.get(key) == entry.identity:
            reported[key] = entry.identity
            continue
        text = f"{model}: landing entry {entry.name} in {folder} refused: {entry.reason}"
        try:
            details = {"model": model, "file": entry.name, "reason": entry.reason}
            alerts.send(context.log, text, details, deadline=deadline)
        except AlertDeliveryError as e:
            context.log.warning("%s; the alert is tried again next tick", e)
            continue
        reported[key] = entry.identity
    return reported


def read_check_records(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetCheckKey], cursor: CheckCursor
) -> list[CheckRecord]:
    """Every record of ``keys`` above ``cursor.after`` and the current state of its pending ones.

    A planned record whose run has ended is read once more after the run was seen ending: its
    evaluation, written before the run ended, may have arrived since the first read.
    """
    storage = instance.event_log_storage
    by_name = {key.to_user_string(): key for key in keys}
    raw = []
    for key in keys:
        before = None
        while True:
            page = storage.get_asset_check_execution_history(key, limit=PAGE, cursor=before)
            raw += [r for r in page if r.id > cursor.after]
            if len(page) < PAGE or page[-1].id <= cursor.after:
                break
            before = page[-1].id
    for record_id, key_name in cursor.pending:
        if key_name in by_name and (found := _record(instance, by_name[key_name], record_id)) is not None:
            raw.append(found)
    planned_runs = {r.run_id for r in raw if r.status.value == "PLANNED"}
    live = {
        run.run_id
        for run in (instance.get_runs(dg.RunsFilter(run_ids=sorted(planned_runs))) if planned_runs else [])
        if run.status not in FINISHED_RUN_STATUSES
    }
    runs = RunPartitions(instance)
    records = []
    for r in raw:
        run_ended = r.status.value == "PLANNED" and r.run_id not in live
        if run_ended:
            r = _record(instance, r.key, r.id) or r
            run_ended = r.status.value == "PLANNED"
        records.append(_check_record(r, runs=runs, run_ended=run_ended))
    return records


def _record(instance: dg.DagsterInstance, key: dg.AssetCheckKey, record_id: int):  # noqa: ANN202 - Dagster's record type is not public
    found = instance.event_log_storage.get_asset_check_execution_history(key, limit=1, cursor=record_id + 1)
    return found[0] if found and found[0].id == record_id else None


def _check_record(record, *, runs: RunPartitions, run_ended: bool) -> CheckRecord:  # noqa: ANN001
    outcome = _OUTCOMES.get(record.status.value, "planned")
    evaluation = record.evaluation if outcome != "planned" else None
    if outcome != "planned" and not isinstance(evaluation, dg.AssetCheckEvaluation):
        outcome = "planned"
    return CheckRecord(
        record_id=record.id,
        key=record.key.to_user_string(),
        check=record.key.name,
        outcome=outcome,
        batch=(check_result_batch(evaluation, record.run_id, runs=runs) or "") if evaluation is not None else "",
        run_id=record.run_id,
        run_ended=run_ended,
        description=(evaluation.description or "") if evaluation is not None else "",
    )


def process_alive(pid: int, *, started_by: float) -> bool:
    """Whether process ``pid`` runs and is the one that existed at ``started_by`` (epoch seconds).

    A pid that now names a process started later (the pid was reused, e.g. after a reboot) or a
    zombie counts as gone. Where there is no ``/proc``, existence alone decides.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
    except (OSError, StopIteration, ValueError):
        return True
    # The command name may hold spaces and parentheses: the fields start after its last ")".
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return False
    started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return started <= started_by + 1.0


def _worker(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of the run's worker process and when it reported itself, if it did."""
    events = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=20).records
    for record in events:
        entry = record.event_log_entry
        event = entry.dagster_event
        if not entry.message.startswith(_WORKER_STARTED) or event is None:
            continue
        pid = event.engine_event_data.metadata.get(DAGSTER_PID_METADATA)
        if pid is not None:
            return int(str(pid.value)), entry.timestamp
    return None


def dead_runs(instance: dg.DagsterInstance, model: str) -> list[tuple[dg.DagsterRun, str]]:
    """The model's STARTED runs whose worker process is gone, each with why.

    Only where runs are launched as local processes (``DefaultRunLauncher``): there Dagster
    cannot check a worker's health, and the sensor's code server runs on the same machine. Other
    launchers (Kubernetes) have Dagster's run monitoring check their workers.
    """
    if not isinstance(instance.run_launcher, dg.DefaultRunLauncher):
        return []
    dead = []
    for record in instance.get_run_records(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED], tags={TAG_MODEL: model})
    ):
        run = record.dagster_run
        worker = _worker(instance, run.run_id)
        if worker is None or process_alive(worker[0], started_by=worker[1]):
            continue
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(worker[1]))
        dead.append((run, f"its run worker (pid {worker[0]}, started {since} UTC) is gone"))
    return dead


def end_dead_runs(instance: dg.DagsterInstance, model: str, log: dg.DagsterLogManager) -> list[str]:
    """Reports each of the model's runs whose worker died as failed; returns their run ids."""
    ended = []
    for run, why in dead_runs(instance, model):
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status != dg.DagsterRunStatus.STARTED:
            continue
        message = f"Marked failed by {Sensor.run_watchdog(model)}: {why}, so this run cannot finish"
        instance.report_run_failed(current, message)
        log.warning("%s: run %s (%s) %s; marked it failed", model, run.run_id, run.job_name, why)
        ended.append(run.run_id)
    return ended


def build_run_watchdog_sensor(pipeline: ModelPipeline, *, interval_seconds: int) -> dg.SensorDefinition:
    """Ends the model's runs whose processes died without reporting (a reboot, a killed daemon).

    Dagster's run monitoring ends such a run only after its maximum runtime when runs are local
    processes; this sensor ends it within one tick.
    """
    name = pipeline.name

    @dg.sensor(
        name=Sensor.run_watchdog(name),
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Marks {name}'s runs failed when their run worker process is gone (local run launcher).",
    )
    def run_watchdog(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        ended = end_dead_runs(context.instance, name, context.log)
        return dg.SkipReason(
            f"marked {len(ended)} run(s) failed whose worker died: {', '.join(ended)}"
            if ended
            else "every started run's worker is alive"
        )

    return run_watchdog


def _active_run(instance: dg.DagsterInstance, job_name: str, model: str) -> str | None:
    """A retrain run queued or running, not counting runs whose worker died."""
    dead = {run.run_id for run, _ in dead_runs(instance, model)}
    for record in instance.get_run_records(dg.RunsFilter(job_name=job_name, statuses=ACTIVE_RUN_STATUSES), limit=10):
        if record.dagster_run.run_id not in dead:
            return record.dagster_run.run_id
    return None


def _covered(instance: dg.DagsterInstance, job_name: str, model: str, trigger: str) -> set[int]:
    """The check records that retrain runs of this trigger already act on (their tag)."""
    runs = instance.get_runs(dg.RunsFilter(job_name=job_name, tags={TAG_MODEL: model, TAG_TRIGGER: trigger}))
    return {int(i) for run in runs for i in run.tags.get(TAG_CHECK_RECORDS, "").split(",") if i}


def _trained_until(instance: dg.DagsterInstance, pipeline: ModelPipeline) -> str | None:
    event = instance.get_latest_materialization_event(pipeline.key(Asset.TRAINING_DATASET))
    if event is None or event.asset_materialization is None:
        return None
    until = event.asset_materialization.metadata.get(Meta.WINDOW_UNTIL)
    return str(until.value) if until is not None and str(until.value) != "(all)" else None


def build_retrain_sensor(
    pipeline: ModelPipeline,
    *,
    trigger: str,
    checks: Sequence[dg.AssetCheckKey],
    job: dg.UnresolvedAssetJobDefinition,
    interval_seconds: int,
    cadence: bool = False,
) -> dg.SensorDefinition:
    """Requests a retrain when monitored checks fail: one request per set of failed evaluations,
    each evaluation acted on once whatever order the runs finish in.

    With ``cadence``, it also retrains once ``monitoring.retrain_every`` batches were scored after
    the last training window, drift or not (trigger ``schedule``). With no ``checks`` it does only
    that.
    """
    name = pipeline.name
    training_op = op_name(name, Asset.TRAINING_DATASET)
    every = pipeline.spec.monitoring.retrain_every if cadence else None
    watched = ", ".join(sorted({c.name for c in checks}))
    description = (
        f"Retrains {name} when {watched} fails on a batch"
        if checks
        else f"Retrains {name} every {every} scored batches"
    )
    if checks and every:
        description += f", and every {every} scored batches"

    @dg.sensor(
        name=Sensor.retrain(name, trigger),
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description + ".",
    )
    def retrain_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        instance = context.instance
        cursor = CheckCursor.decode(context.cursor)
        settled = settle(cursor, read_check_records(instance, checks, cursor) if checks else [])
        in_progress = _active_run(instance, job.name, name)
        trained_until = _trained_until(instance, pipeline)
        decision = decide_retrain(
            model=name,
            trigger=trigger,
            completed=settled.completed,
            retrain_in_progress=in_progress,
            trained_until=trained_until,
            covered=_covered(instance, job.name, name, trigger) if any(r.failed for r in settled.completed) else (),
        )
        trigger_tag = trigger
        if decision.run_key is None and every is not None:
            scheduled = decide_cadence(
                model=name,
                every=every,
                scored=list(instance.get_materialized_partitions(pipeline.key(Asset.DRIFT_REPORT))),
                trained_until=trained_until,
                retrain_in_progress=in_progress,
            )
            if scheduled is not None:
                decision = replace(scheduled, acted_on=decision.acted_on)
                trigger_tag = "schedule"
        acted = {r.record_id for r in decision.acted_on}
        context.update_cursor(settled.cursor(r for r in settled.completed if r.record_id not in acted).encode())
        if decision.run_key is None:
            return dg.SkipReason(decision.reason or f"no {trigger} check failed and no retrain is due")
        context.log.info("%s: %s; requesting a retrain up to batch %s", name, decision.reason, decision.until)
        tags = {
            **pipeline.tags,
            TAG_TRIGGER: trigger_tag,
            TAG_BATCH: decision.batch or "",
            TAG_REASON: decision.reason[:200],
        }
        if decision.records:
            tags[TAG_CHECK_RECORDS] = ",".join(str(i) for i in decision.records)
        return dg.RunRequest(
            run_key=decision.run_key,
            run_config={"ops": {training_op: {"config": {"until": decision.until}}}},
            tags=tags,
        )

    return retrain_sensor


def build_check_alert_sensor(
    pipeline: ModelPipeline, *, checks: Sequence[dg.AssetCheckKey], interval_seconds: int
) -> dg.SensorDefinition:
    """Reports every failed asset check of the model to the alert sink, once per check record.

    Failed checks do not fail runs, so run-failure sensors never see them; this one reads the
    check records themselves. Alerts go out oldest first; the cursor keeps every one not yet
    delivered, so a webhook that fails or is slow delays alerts and never drops them. A tick that
    delivered nothing because the webhook failed fails, visibly.
    """
    name = pipeline.name

    @dg.sensor(
        name=Sensor.check_alert(name),
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Sends failed asset checks of {name} to the alert sink (Dagster log; webhook if configured).",
    )
    def check_alert_sensor(context: dg.SensorEvaluationContext, alerts: AlertSink) -> dg.SkipReason:
        deadline = time.monotonic() + alerts.tick_budget_seconds
        # A delivery starts only if it can run to its own timeout, so the budget never cuts one
        # off half-sent (which the receiver might have taken, and would then get twice).
        per_send = min(alerts.timeout_seconds, alerts.tick_budget_seconds)
        cursor = CheckCursor.decode(context.cursor)
        settled = settle(cursor, read_check_records(context.instance, checks, cursor))
        failed = [r for r in settled.completed if r.failed]
        delivered: list[CheckRecord] = []
        error: AlertDeliveryError | None = None
        for record in failed:
            if deadline - time.monotonic() < per_send:
                break
            try:
                alerts.send(context.log, alert_text(name, record), _details(name, record), deadline=deadline)
            except AlertDeliveryError as e:
                error = e
                break
            delivered.append(record)
        waiting = [r for r in failed if r not in delivered]
        if error is not None and not delivered:
            raise AlertDeliveryError(f"{name}: {len(waiting)} alert(s) wait for delivery: {error}") from error
        context.update_cursor(settled.cursor(waiting).encode())
        summary = f"sent {len(delivered)} alert(s) for {len(settled.completed)} new check result(s)"
        if waiting:
            why = (
                f"the webhook failed: {error}"
                if error
                else f"the tick's {alerts.tick_budget_seconds:g}s budget ran out"
            )
            context.log.error("%s: %d alert(s) wait for the next tick, %s", name, len(waiting), why)
            summary += f"; {len(waiting)} wait for the next tick ({why})"
        return dg.SkipReason(summary if settled.completed else "no new check result")

    return check_alert_sensor


def _details(model: str, record: CheckRecord) -> dict[str, object]:
    return {
        "model": model,
        "check": record.check,
        "check_key": record.key,
        "batch": record.batch,
        "record_id": record.record_id,
        "run_id": record.run_id,
        "description": record.description,
    }


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

        ready = sorted_batches(context.instance.get_materialized_partitions(pipeline.key(Asset.FEATURES)))
        if not ready:
            return dg.SkipReason(f"{name} has no batch with features yet")
        latest = ready[-1]
        return dg.RunRequest(partition_key=latest, tags={**pipeline.tags, TAG_TRIGGER: "schedule", TAG_BATCH: latest})

    return recheck_schedule


# Materializations read per tick: a burst of scored batches is worked off over a few ticks.
DRIFT_REPORT_PAGE = 100


def build_drift_report_sensor(
    pipeline: ModelPipeline, *, job: dg.JobDefinition, interval_seconds: int
) -> dg.SensorDefinition:
    """Renders the Evidently HTML report of each batch the spec wants one for (``drift.html_report``:
    drifted batches, or every batch) in a run of its own, so scoring never waits on Evidently.

    Its tick is one indexed read of the drift_report materializations after its cursor (the
    storage id of the last one seen; a materialization is written when its step ends, so ids
    follow completion). Each materialization is requested once (run key: batch and storage id).
    """
    name = pipeline.name
    key = pipeline.key(Asset.DRIFT_REPORT)
    mode = pipeline.spec.drift.html_report

    @dg.sensor(
        name=Sensor.drift_report(name),
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Renders the Evidently HTML drift report of each {name} batch scored "
        f"({'every batch' if mode == 'always' else 'drifted batches'}; spec drift.html_report: {mode}).",
    )
    def drift_report_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        after = int(context.cursor) if context.cursor else None
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=DRIFT_REPORT_PAGE, ascending=True
        ).records
        if not records:
            return dg.SensorResult(skip_reason=f"no {name} batch scored since the last tick", cursor=context.cursor)
        requests = []
        for record in records:
            materialization = record.asset_materialization
            if materialization is None or materialization.partition is None:
                continue
            drifted = materialization.metadata.get(Meta.DATASET_DRIFT)
            if not wants_html_report(mode, dataset_drift=bool(drifted and drifted.value)):
                continue
            batch = materialization.partition
            requests.append(
                dg.RunRequest(
                    run_key=f"{name}:drift_report:{batch}:{record.storage_id}",
                    partition_key=batch,
                    tags={**pipeline.tags, TAG_TRIGGER: "drift", TAG_BATCH: batch},
                )
            )
        cursor = str(records[-1].storage_id)
        if not requests:
            return dg.SensorResult(
                skip_reason=f"{len(records)} {name} batch(es) scored, none wants an HTML report "
                f"(drift.html_report: {mode})",
                cursor=cursor,
            )
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return drift_report_sensor
