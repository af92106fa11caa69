"""How long a production batch takes through the real ``score_batch`` job, next to the floor.

Builds a demo-like MLOPS_HOME in a temporary folder (the GSS history ingested and a first
champion trained, in this process), lands the production batches in the landing folder and
registers them as partitions, as the landing sensor does. Then:

* job: each batch through ``dagster job execute`` of ``<model>_score_batch_job`` on a real
  DagsterInstance (a fresh process per run, as a run worker is), timed from the event log:
  RUN_START to RUN_SUCCESS per run and STEP_START to STEP_SUCCESS per step.
* floor: the same assets of the same batches materialized in this process once it is warm (the
  libraries imported, one batch scored before timing), timed from the event log in the same way.
* training: one ``<model>_retrain_job`` through ``dagster job execute`` on a window that ends at
  the last scored batch (so a new version is fitted), beside the raw fit: the same estimator on
  the same training set with its default threads in this process, once nothing else of the
  benchmark runs. The model step sizes its thread pools to the run's CPU share; the table shows
  the step, the fit inside it (its ``fit_seconds`` metadata) and the raw fit, then the same fit
  beside a CPU-bound process the benchmark starts, with default threads and with the run's share.

The machine may be shared: compare the ratios of one run, not numbers from different runs.

Usage: python benchmarks/bench_batch.py [--batches N]
The last line printed is
``batch: p50 <s> s, p95 <s> s per score_batch run; floor <s> s``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg

from mlops_assets.assets.backfill import BATCH_ASSETS
from mlops_assets.contract import Asset, Job, Meta, TrainingFile, op_name, partitions_name, training_file
from mlops_assets.definitions import build_definitions
from mlops_assets.demo import _later_batches, ensure_instance
from mlops_assets.ml.cpus import cpu_budget
from mlops_assets.ml.data import batch_at_or_before, read_source_files
from mlops_assets.spec import load_specs
from resources.settings import Settings

MODEL = "gss_wages"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_timings(instance: dg.DagsterInstance, run_id: str) -> tuple[float, dict[str, float]]:
    """RUN_START to RUN_SUCCESS, and STEP_START to STEP_SUCCESS per step, from the event log."""
    events = instance.all_logs(run_id)
    at = {e.dagster_event.event_type: e.timestamp for e in events if e.dagster_event and not e.step_key}
    if dg.DagsterEventType.RUN_SUCCESS not in at:
        raise SystemExit(f"run {run_id} did not succeed; see {instance.root_directory}")
    started: dict[str, float] = {}
    steps: dict[str, float] = {}
    for e in events:
        if not e.dagster_event or not e.step_key:
            continue
        if e.dagster_event.event_type == dg.DagsterEventType.STEP_START:
            started[e.step_key] = e.timestamp
        elif e.dagster_event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            # Step keys are <model>__<asset>: the asset names the row.
            steps[e.step_key.split("__", 1)[-1]] = e.timestamp - started[e.step_key]
    return at[dg.DagsterEventType.RUN_SUCCESS] - at[dg.DagsterEventType.RUN_START], steps


def prepare(home: Path) -> tuple[dict[str, str], dg.Definitions, dg.DagsterInstance, list[str]]:
    """A trained champion and the production batches landed and registered."""
    env = {
        **os.environ,
        "MLOPS_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    # This process downloads artifacts too: no progress bars in the table.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    ensure_instance(home / "dagster")
    settings = Settings.from_env(env)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    spec = next(s for s in load_specs(settings.pipelines) if s.name == MODEL)

    def materialize(nouns: tuple[str, ...], partition: str | None = None) -> dg.ExecuteInProcessResult:
        result = dg.materialize(
            defs.assets,
            instance=instance,
            selection=[dg.AssetKey([MODEL, n]) for n in nouns],
            partition_key=partition,
            resources=defs.resources,
        )
        assert result.success
        return result

    materialize((Asset.SOURCE_BATCHES, Asset.VALIDATION_SUITE))
    known = instance.get_dynamic_partitions(partitions_name(MODEL))
    history = [b for b in known if batch_at_or_before(b, spec.training.initial_until)]
    for b in history:
        materialize((Asset.RAW_BATCH, Asset.VALIDATED_BATCH, Asset.FEATURES), b)
    materialize((Asset.TRAINING_DATASET, Asset.MODEL, Asset.EVALUATION, Asset.PROMOTION))
    landing = defs.resources["landing"].folder(MODEL)
    landing.mkdir(parents=True, exist_ok=True)
    later, _refused = _later_batches(spec, read_source_files(spec.source), known=set(known))
    for batch, frame in later:
        frame.to_parquet(landing / f"{batch}.parquet", index=False)
    batches = [b for b, _ in later]
    instance.add_dynamic_partitions(partitions_name(MODEL), batches)
    return env, defs, instance, batches


def retrain_timings(
    instance: dg.DagsterInstance, env: dict[str, str], until: str
) -> tuple[float, float, int, str, str]:
    """The retrain job run as a run worker would be, on the window ending at ``until``: the model
    step's seconds, the fit's seconds and threads (its metadata), and the window's fingerprint."""
    job = Job.retrain(MODEL)
    config = {"ops": {op_name(MODEL, Asset.TRAINING_DATASET): {"config": {"until": until}}}}
    # Run config as a file: JSON is YAML.
    config_file = Path(env["MLOPS_HOME"]) / "retrain-config.yaml"
    config_file.write_text(json.dumps(config))
    command = [sys.executable, "-m", "dagster", "job", "execute", "-m", "mlops_assets.definitions", "-j", job]
    command += ["-c", str(config_file)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the retrain job failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    record = instance.get_run_records(dg.RunsFilter(job_name=job), limit=1)[0]
    _total, per_step = run_timings(instance, record.dagster_run.run_id)
    event = instance.get_latest_materialization_event(dg.AssetKey([MODEL, Asset.MODEL]))
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    if Meta.FIT_SECONDS not in metadata:
        raise SystemExit(f"the retrain on the window to {until} reused a version: no fit to time")
    fingerprint = metadata[Meta.TRAINING_FINGERPRINT].value
    return (
        per_step[Asset.MODEL],
        float(metadata[Meta.FIT_SECONDS].value),
        int(metadata[Meta.FIT_THREADS].value),
        str(fingerprint),
        record.dagster_run.run_id,
    )


def warm_model_step(defs: dg.Definitions, instance: dg.DagsterInstance, until: str) -> float:
    """The model step of a retrain on the window ending at ``until``, in this process once MLflow
    and scikit-learn are imported: what the step costs beside its run worker's imports."""
    config = {"ops": {op_name(MODEL, Asset.TRAINING_DATASET): {"config": {"until": until}}}}
    result = dg.materialize(
        defs.assets,
        instance=instance,
        selection=[dg.AssetKey([MODEL, Asset.TRAINING_DATASET]), dg.AssetKey([MODEL, Asset.MODEL])],
        resources=defs.resources,
        run_config=config,
    )
    assert result.success
    return run_timings(instance, result.run_id)[1][Asset.MODEL]


def window_fit(defs: dg.Definitions, fingerprint: str) -> Callable[[], float]:
    """A function that fits the spec's estimator on the window's training set here and returns
    the seconds it took (with whatever thread limits the caller set)."""
    from mlops_assets.ml.data import LABEL
    from mlops_assets.ml.trainers import build_estimator, prepare_inputs
    from mlops_assets.preflight import resolve

    settings = Settings.from_env(os.environ)
    spec = next(s for s in load_specs(settings.pipelines) if s.name == MODEL)
    train = defs.resources["lake"].read_frame(
        MODEL, Asset.TRAINING_DATASET, training_file(fingerprint, TrainingFile.TRAIN)
    )
    columns = resolve(spec, cache_dir=None).columns
    inputs = prepare_inputs(train, columns.numeric, columns.categorical)
    y = train[LABEL].to_numpy(dtype="int64")

    def fit() -> float:
        estimator = build_estimator(
            spec.training.model,
            numeric=columns.numeric,
            categorical=columns.categorical,
            params=spec.training.params,
            seed=spec.training.seed,
        )
        began = time.perf_counter()
        estimator.fit(inputs, y)
        return time.perf_counter() - began

    return fit


def busy_fits(fit: Callable[[], float], repeats: int = 3) -> tuple[float, float, int]:
    """Median seconds of the fit beside one CPU-bound process: with default threads, and with
    the threads the model step would use (``run_share``); and that share."""
    from mlops_assets.ml.cpus import cpu_share, run_share

    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1)
        default, shared, share = [], [], 1
        for _ in range(repeats):
            default.append(fit())
            share = run_share()
            with cpu_share(share):
                shared.append(fit())
    finally:
        burner.kill()
        burner.wait()
    return statistics.median(default), statistics.median(shared), share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=None, help="score only the first N production batches")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        began = time.monotonic()
        env, defs, instance, batches = prepare(home)
        batches = batches[: args.batches] if args.batches else batches
        print(f"prepared {home} in {time.monotonic() - began:.0f}s; {len(batches)} production batches")
        job = Job.score_batch(MODEL)
        runs: list[float] = []
        steps: dict[str, list[float]] = {}
        for batch in batches:
            command = [sys.executable, "-m", "dagster", "job", "execute", "-m", "mlops_assets.definitions"]
            command += ["-j", job, "--tags", json.dumps({"dagster/partition": batch})]
            subprocess.run(command, env=env, check=True, capture_output=True)
            record = instance.get_run_records(dg.RunsFilter(job_name=job, tags={"dagster/partition": batch}), limit=1)[
                0
            ]
            total, per_step = run_timings(instance, record.dagster_run.run_id)
            runs.append(total)
            for step, seconds in per_step.items():
                steps.setdefault(step, []).append(seconds)
            print(f"  job   {batch}: {total:5.2f}s", flush=True)
        # The floor: one warm process. The first batch warms it up and is not timed.
        floor_runs: list[float] = []
        floor_steps: dict[str, list[float]] = {}
        for i, batch in enumerate([batches[0], *batches]):
            result = dg.materialize(
                defs.assets,
                instance=instance,
                selection=[dg.AssetKey([MODEL, a]) for a in BATCH_ASSETS],
                partition_key=batch,
                resources=defs.resources,
            )
            assert result.success
            total, per_step = run_timings(instance, result.run_id)
            if i == 0:
                continue
            floor_runs.append(total)
            for step, seconds in per_step.items():
                floor_steps.setdefault(step, []).append(seconds)
            print(f"  floor {batch}: {total:5.2f}s", flush=True)
        model_step, fit, threads, fingerprint, _run = retrain_timings(instance, env, batches[-1])
        fit_window = window_fit(defs, fingerprint)
        raw_fit, raw_threads = statistics.median(fit_window() for _ in range(3)), cpu_budget()
        busy_default, busy_shared, busy_share = busy_fits(fit_window)
        warm_step = warm_model_step(defs, instance, batches[-2]) if len(batches) > 1 else None
        instance.dispose()
    print(f"\n{'training (retrain job to ' + batches[-1] + ')':<44} {'s':>7} {'threads':>8} {'vs raw fit':>11}")
    training = [
        ("model step (run worker)", model_step, threads),
        ("  fit inside it", fit, threads),
        *([(f"model step (this process, warm, to {batches[-2]})", warm_step, "")] if warm_step is not None else []),
        ("raw fit (this process, default threads)", raw_fit, raw_threads),
        ("beside a busy process: default threads", busy_default, raw_threads),
        ("beside a busy process: the run's share", busy_shared, busy_share),
    ]
    for label, seconds, used in training:
        print(f"{label:<44} {seconds:>7.2f} {used:>8} {seconds / raw_fit:>10.1f}x")
    print(f"\n{'step':<18} {'job p50 s':>10} {'floor p50 s':>12} {'ratio':>7}")
    rows = [(s, statistics.median(steps[s]), statistics.median(floor_steps.get(s, [0.0]))) for s in steps]
    rows.append(("run (start-end)", statistics.median(runs), statistics.median(floor_runs)))
    for step, job_s, floor_s in rows:
        ratio = f"{job_s / floor_s:6.1f}x" if floor_s > 0 else "     -"
        print(f"{step:<18} {job_s:>10.2f} {floor_s:>12.2f} {ratio:>7}")
    p50, p95, floor = statistics.median(runs), percentile(runs, 0.95), statistics.median(floor_runs)
    print(f"batch: p50 {p50:.2f} s, p95 {p95:.2f} s per score_batch run; floor {floor:.2f} s")


if __name__ == "__main__":
    main()
