"""``mlops demo``: a model's whole lifecycle, driven through Dagster's own CLI.

It materializes everything from an empty MLOPS_HOME with ``dagster asset materialize`` (the same
runs a user starts from a terminal), then prints a table per batch. Running it again is safe:
unchanged data and code reuse the registered version.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlops_assets.contract import Asset, Fairness, LakeFolder, partitions_name
from mlops_assets.records import DriftSummary, ProductionEvaluation, PromotionRecord
from mlops_assets.spec import PipelineSpec
from resources.settings import Settings, resolved_resources

CODE_LOCATION = "mlops_assets.definitions"


@dataclass(frozen=True)
class Step:
    assets: tuple[str, ...]
    partition: str | None = None

    def label(self) -> str:
        return ",".join(self.assets) + (f" [{self.partition}]" if self.partition else "")


@dataclass(frozen=True)
class StepResult:
    step: Step
    ok: bool
    seconds: float
    error: str


def materialize(model: str, step: Step, env: dict[str, str]) -> StepResult:
    """One ``dagster asset materialize`` process for the step's assets (and partition)."""
    selection = ",".join(f"{model}/{asset}" for asset in step.assets)
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", CODE_LOCATION, "--select", selection]
    if step.partition is not None:
        command += ["--partition", step.partition]
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    error = "" if done.returncode == 0 else _failure_reason(done.stdout + done.stderr)
    return StepResult(step, done.returncode == 0, time.monotonic() - started, error)


def _failure_reason(log: str) -> str:
    """The first line of the user-facing failure (dagster.Failure or the exception), not the trace."""
    lines = log.splitlines()
    for marker in ("dagster._core.definitions.events.Failure:", "Failure:", "Error:"):
        for i, line in enumerate(lines):
            if marker in line and "Stack Trace" not in line:
                text = line.split(marker, 1)[1].strip()
                following = [s.strip() for s in lines[i + 1 : i + 6] if s.strip().startswith("- ")]
                return " ".join([text, *following]).strip()
    return lines[-1] if lines else "failed"


def run_steps(model: str, steps: Sequence[Step], env: dict[str, str]) -> list[StepResult]:
    results = [materialize(model, step, env) for step in steps]
    for result in results:
        print_result(result)
    return results


def print_result(result: StepResult) -> None:
    status = "ok" if result.ok else f"FAILED: {result.error}"
    print(f"  {result.step.label():<70} {result.seconds:5.1f}s  {status}", flush=True)


def backfill(model: str, batches: Sequence[str], assets: Sequence[str], env: dict[str, str]) -> list[StepResult]:
    """The batches through ``<model>_backfill_job`` with ``dagster job execute``: one process and
    one run, a step per batch; each batch's outcome read from its step's events."""
    import json
    import tempfile
    from datetime import UTC, datetime

    import dagster as dg

    from mlops_assets.assets.backfill import backfill_step, plan_op
    from mlops_assets.contract import TAG_TRIGGER, Job

    job = Job.backfill(model)
    config = {"ops": {plan_op(model): {"config": {"batches": list(batches), "assets": list(assets)}}}}
    began_at = datetime.now(UTC)
    started = time.monotonic()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as config_file:
        # Run config as a file (JSON is YAML): `dagster job execute` takes no inline config.
        json.dump(config, config_file)
        config_file.flush()
        command = [sys.executable, "-m", "dagster", "job", "execute", "-m", CODE_LOCATION, "-j", job]
        command += ["-c", config_file.name, "--tags", json.dumps({TAG_TRIGGER: "demo"})]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        records = instance.get_run_records(dg.RunsFilter(job_name=job, created_after=began_at), limit=1)
        events = instance.all_logs(records[0].dagster_run.run_id) if records else []
    if not records:
        reason = _failure_reason(done.stdout + done.stderr)
        return [StepResult(Step(tuple(assets), b), False, seconds, reason) for b in batches]
    started_at: dict[str, float] = {}
    ended: dict[str, tuple[bool, float, str]] = {}
    for entry in events:
        event = entry.dagster_event
        if event is None or entry.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started_at[entry.step_key] = entry.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            took = entry.timestamp - started_at.get(entry.step_key, entry.timestamp)
            ok = event.event_type == dg.DagsterEventType.STEP_SUCCESS
            ended[entry.step_key] = (ok, took, "" if ok else _step_error(event))
    results = []
    for i, batch in enumerate(batches):
        ok, took, error = ended.get(backfill_step(model, i, batch), (False, 0.0, "its step did not run"))
        results.append(StepResult(Step(tuple(assets), batch), ok, took, error))
    return results


def _step_error(event) -> str:  # noqa: ANN001 - a DagsterEvent; dagster stays lazy
    """A failed step's reason: a ``dagster.Failure`` says why itself; else the error's first line."""
    data = event.step_failure_data
    if data is None:
        return ""
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    message = data.error.message.strip() if data.error and data.error.message else "failed"
    return message.splitlines()[0]


INSTANCE_CONFIG = """\
# Written by `mlops demo` / `mlops init` when absent. Two runs at a time suit a 2-core machine.
concurrency:
  runs:
    max_concurrent_runs: 2
  pools:
    # Each model's promotion and rollback share pool <model>_registry: one at a time.
    default_limit: 1
# Dagster's default looks at the queue every 5 s: a landed batch's run then waited up to 5 s to
# start, more than its scoring takes. Once a second costs one small query of the run storage.
run_queue:
  dequeue_interval_seconds: 1
# A run whose processes died (a reboot, a killed daemon) would otherwise stay STARTED for good,
# holding a run slot and its pool slots. Dagster ends runs stuck starting or cancelling, and runs
# past their dagster/max_runtime tag (set on every job; the value below is for runs without one);
# the <model>_run_watchdog_sensor ends a run whose worker process is gone within one tick.
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_runtime_seconds: 86400
  poll_interval_seconds: 30
  free_slots_after_run_end_seconds: 60
telemetry:
  enabled: false
"""

# What the product relies on in an instance config it did not write.
EXPECTED_SETTINGS = {
    "run_monitoring": "runs whose processes died stay STARTED and block the retrain sensor's queue",
}


def ensure_instance(dagster_home: Path) -> list[str]:
    """A DAGSTER_HOME with our instance settings (kept as is when the user has their own).

    Returns:
        One line per setting the product relies on that an existing ``dagster.yaml`` lacks.
    """
    import yaml

    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text(INSTANCE_CONFIG)
        return []
    present = yaml.safe_load(config.read_text()) or {}
    return [
        f"{config}: no `{key}:` section, so {why}; see 'Runs whose processes died' in the README for the one we write"
        for key, why in EXPECTED_SETTINGS.items()
        if key not in present
    ]


def demo(spec: PipelineSpec, settings: Settings, *, sensor_interval: int = 3) -> int:
    """History through ``dagster asset materialize``, then production through the daemon."""
    from mlops_assets.cli import ARTIFACT_PROGRESS_BAR_ENV
    from mlops_assets.ml.data import batch_at_or_before, read_source_files, sorted_batches

    env = {
        **settings.environment,
        "MLOPS_HOME": str(settings.home),
        "MLOPS_SENSOR_INTERVAL_SECONDS": str(sensor_interval),
    }
    env.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    env.setdefault(ARTIFACT_PROGRESS_BAR_ENV, "false")
    for note in ensure_instance(Path(env["DAGSTER_HOME"])):
        print(f"note: {note}")
    name, until = spec.name, spec.training.initial_until
    started = time.monotonic()
    print(f"MLOPS_HOME={settings.home}\nDAGSTER_HOME={env['DAGSTER_HOME']}\n")

    print("1. Register the source's batches and learn the validation suite from the first training data")
    if not all(r.ok for r in run_steps(name, [Step((Asset.SOURCE_BATCHES, Asset.VALIDATION_SUITE))], env)):
        return 1
    batches = sorted_batches(_registered_batches(name, env))
    history = [b for b in batches if until is None or batch_at_or_before(b, until)]

    print(
        f"\n2. Ingest, validate and featurize the history ({history[0]}-{history[-1]}, {len(history)} batches) "
        f"in one backfill run, a step per batch"
    )
    from mlops_assets.assets.backfill import INGESTION

    ingested = backfill(name, history, INGESTION, env)
    for result in ingested:
        print_result(result)
    # A batch that fails stays out of training and the demo goes on, as production would; the
    # exit status still says that something failed.
    left_out = [r.step.partition for r in ingested if not r.ok]
    if left_out:
        print(f"  left out of training: {', '.join(str(b) for b in left_out)} (the failed runs are in the Dagster UI)")

    print("\n3. Train, evaluate and decide the first champion")
    retrain = Step((Asset.TRAINING_DATASET, Asset.MODEL, Asset.EVALUATION, Asset.PROMOTION))
    if not run_steps(name, [retrain], env)[0].ok:
        return 1
    source = read_source_files(spec.source)
    _print_promotion(settings, spec, source)
    _score_single_batch(spec, settings, env, history)

    later, refused = _later_batches(spec, source, known=set(batches))
    for problem in refused:
        print(f"  not replayed: {spec.source.batch_column} value {problem}")
    rows: list[dict] = []
    if later:
        print(f"\n4. Production: the daemon's sensors take over ({len(later)} batches, {later[0][0]}-{later[-1][0]})")
        from mlops_assets.loop import ClosedLoop

        with ClosedLoop(spec, settings, env) as loop:
            for batch, frame in later:
                rows.append(loop.land_and_follow(batch, frame))
    print()
    print_summary(spec, settings, rows)
    print(f"\nDone in {time.monotonic() - started:.0f}s. Where to look next:")
    print("  make ui         Dagster UI at http://127.0.0.1:3000 (lineage, checks, runs, sensors)")
    if settings.env == "prod":
        # The tracking server started by scripts/prod-stack.sh serves the UI itself.
        tracking_uri = resolved_resources(settings)["registry"].tracking_uri
        print(f"  MLflow UI       {tracking_uri} (runs, registered model, aliases)")
    else:
        print("  make mlflow-ui  MLflow UI at http://127.0.0.1:5000 (runs, registered model, aliases)")
    print(
        f"  drift reports   {_reports_location(settings, name)} (drifted batches; any other: "
        f"mlops report drift {name} --batch <batch>)"
    )
    champion = _champion(settings, name)
    if champion is None:
        print(
            f"\nNo champion: no version of {name} passed its gates, so nothing was scored. "
            "Change the gate named above (the baseline beside it says what the data allows) or the model, "
            "and run the demo again."
        )
        return 1
    return 0 if all(r["scored"] for r in rows) and not left_out else 1


def _champion(settings: Settings, name: str) -> str | None:
    from mlops_assets.contract import CHAMPION

    found = resolved_resources(settings)["registry"].by_alias(name, CHAMPION)
    return found.version if found else None


def _score_single_batch(spec: PipelineSpec, settings: Settings, env: dict[str, str], history: list[str]) -> None:
    """A source without a batch column is one batch: the champion scores it, and its predictions show."""
    if spec.source.batch_column is not None or _champion(settings, spec.name) is None:
        return
    (batch,) = history
    print(f"\n3b. Score batch {batch} (the whole source) with the champion")
    if not run_steps(spec.name, [Step((Asset.PREDICTIONS, Asset.DRIFT_REPORT), batch)], env)[0].ok:
        return
    lake = resolved_resources(settings)["lake"]
    predictions = lake.read_frame(spec.name, Asset.PREDICTIONS, batch)
    where = lake.uri(spec.name, Asset.PREDICTIONS, batch, "parquet")
    print(f"  {len(predictions)} predictions in {where}; the first rows:")
    print("  " + predictions.head(5).to_string(max_cols=8).replace("\n", "\n  "))


def _reports_location(settings: Settings, name: str) -> str:
    return resolved_resources(settings)["lake"].uri(name, Asset.DRIFT_REPORT, "<batch>", "html")


def _later_batches(spec: PipelineSpec, frame, *, known: set[str]) -> tuple[list, list[str]]:  # noqa: ANN001 - pandas stays lazy
    """Production, to be landed: every batch after the first training data (``training.initial_until``),
    whether registered from the source or held back by ``source.until``; and why each value of the
    batch column that is no batch name is left out (it would name a landing file)."""
    from mlops_assets.batches import batch_name_problem
    from mlops_assets.ml.data import batch_at_or_before, batch_key, sorted_batches

    if spec.source.batch_column is None:
        return [], []
    until = spec.training.initial_until
    keys = frame[spec.source.batch_column].dropna().map(batch_key)
    refused = sorted(f"{v!r} {batch_name_problem(v)}" for v in set(keys) if batch_name_problem(v) is not None)
    valid = keys[keys.map(lambda v: batch_name_problem(v) is None)]
    later = [
        (b, frame.loc[valid.index[valid == b]])
        for b in sorted_batches(valid)
        if b not in known or (until is not None and not batch_at_or_before(b, until))
    ]
    return later, refused


def _print_promotion(settings: Settings, spec: PipelineSpec, source) -> None:  # noqa: ANN001 - pandas stays lazy
    found = _lake_json(settings, spec.name, Asset.PROMOTION)
    if not found:
        return
    decision = PromotionRecord.from_dict(found[1], origin=found[0]).decision
    state = "promoted to champion" if decision.promote else "NOT promoted"
    print(f"  version {decision.candidate_version} {state}: {'; '.join(decision.reasons)}")
    if decision.promote:
        return
    for line in gate_explanation(spec, decision.failed_gates, source):
        print(f"    {line}")


def gate_explanation(spec: PipelineSpec, failed: Sequence, source) -> list[str]:  # noqa: ANN001 - pandas stays lazy
    """Per failed gate: by how much, against what the data allows (the baselines on the same holdout
    rows), and the spec key that sets it."""
    from mlops_assets.ml.baseline import measure_baseline

    lines = []
    baseline = None
    for gate in failed:
        where = f"set by {gate.spec_key} in {spec.origin}" if gate.spec_key else "not a spec setting"
        lines.append(f"{gate.gate}: {gate.detail} ({where})")
        metric = gate.gate.removeprefix("min_")
        if gate.gate.startswith("min_") and metric in ("roc_auc", "accuracy"):
            baseline = baseline or measure_baseline(spec, source)
            lines.append(f"  baselines on the first training data's holdout: {metric} {baseline.describe(metric)}")
    return lines


def _registered_batches(name: str, env: dict[str, str]) -> list[str]:
    import dagster as dg

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        return list(instance.get_dynamic_partitions(partitions_name(name)))


def print_summary(spec: PipelineSpec, settings: Settings, rows: list[dict]) -> None:
    """One line per production batch: what arrived, what the loop saw and what it did."""
    header = (
        f"{'batch':>6} {'rows':>5} {'scored by':>9} {'drift share':>11} {'drift':>5} {'pred. pos.':>10} "
        f"{'roc_auc':>7} {'parity gap':>10}  {'retrain':<8} {'decision':<10} {'champion':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        batch = row["batch"]
        drift, quality = _batch_records(settings, spec.name, batch)
        if not row["scored"]:
            print(f"{batch:>6}  not scored: {row['error'][:120]}")
            if drift is not None and row.get("drift_checked"):
                print(
                    f"{'':>6}  drift-checked all the same against v{drift.model_version}'s training data: "
                    f"drift share {_fmt(drift.drifted_share)}, drift {'yes' if drift.dataset_drift else 'no'}, "
                    f"retrain {row['retrain']}, decision {row['decision']}"
                )
            continue
        evaluation = quality.evaluation if quality else None
        rows_scored = evaluation.rows if evaluation else 0
        scored_by = "v" + (drift.model_version if drift else "-")
        share = _fmt(drift.drifted_share if drift else None)
        drifted = "yes" if drift and drift.dataset_drift else "no"
        positive = _fmt(evaluation.predicted_positive_rate if evaluation else None)
        auc = _fmt(evaluation.metrics.get("roc_auc") if evaluation else None)
        gap = _fmt(quality.worst(Fairness.DEMOGRAPHIC_PARITY) if quality else None)
        print(
            f"{batch:>6} {rows_scored:>5} {scored_by:>9} {share:>11} {drifted:>5} {positive:>10} {auc:>7} {gap:>10}  "
            f"{row['retrain']:<8} {row['decision']:<10} {'v' + str(row['champion']):>8}"
        )


def _batch_records(
    settings: Settings, model: str, batch: str
) -> tuple[DriftSummary | None, ProductionEvaluation | None]:
    """What the loop recorded about a production batch: its drift, and the champion's evaluation on it."""
    drift = _lake_json(settings, model, Asset.DRIFT_REPORT, batch)
    quality = _lake_json(settings, model, LakeFolder.PRODUCTION_EVALUATION, batch)
    return (
        DriftSummary.from_dict(drift[1], origin=drift[0]) if drift else None,
        ProductionEvaluation.from_dict(quality[1], origin=quality[0]) if quality else None,
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _lake_json(settings: Settings, model: str, asset: str, partition: str | None = None) -> tuple[str, dict] | None:
    """Where a JSON document the assets wrote to the lake (local folder or object store) is, and
    the document; None when it is absent."""
    lake = resolved_resources(settings)["lake"]
    if not lake.exists(model, asset, partition, "json"):
        return None
    return lake.uri(model, asset, partition, "json"), lake.read_json(model, asset, partition)
