"""The ``mlops`` command: the demo, driven through Dagster's own CLI.

``mlops demo`` materializes a model's whole lifecycle from an empty MLOPS_HOME with
``dagster asset materialize`` (the same runs a user starts from a terminal), then prints a table
per batch. Running it again is safe: unchanged data and code reuse the registered version.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mlops_assets.spec import PipelineSpec, load_specs
from resources.settings import Settings

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


def run_steps(model: str, steps: Sequence[Step], env: dict[str, str], *, parallel: int) -> list[StepResult]:
    results = []
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for result in pool.map(lambda s: materialize(model, s, env), steps):
            status = "ok" if result.ok else f"FAILED: {result.error}"
            print(f"  {result.step.label():<70} {result.seconds:5.1f}s  {status}", flush=True)
            results.append(result)
    return results


def demo(spec: PipelineSpec, settings: Settings, *, parallel: int) -> int:
    from mlops_assets.ml.data import batch_at_or_before, sorted_batches

    env = {**os.environ, "MLOPS_HOME": str(settings.home)}
    env.setdefault("DAGSTER_HOME", str(settings.home / "dagster"))
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    name, until = spec.name, spec.training.initial_until
    started = time.monotonic()
    print(f"MLOPS_HOME={settings.home}\nDAGSTER_HOME={env['DAGSTER_HOME']}\n")

    print("1. Register the source's batches as partitions")
    if not run_steps(name, [Step(("source_batches",))], env, parallel=1)[0].ok:
        return 1
    batches = sorted_batches(_registered_batches(name, env))
    history = [b for b in batches if until is None or batch_at_or_before(b, until)]
    later = [b for b in batches if b not in history]

    print("\n2. Learn the validation suite from the first training data")
    if not run_steps(name, [Step(("validation_suite",))], env, parallel=1)[0].ok:
        return 1

    print(f"\n3. Ingest, validate and featurize the history ({history[0]}-{history[-1]}, {len(history)} batches)")
    run_steps(name, [Step(("raw_batch", "validated_batch", "features"), b) for b in history], env, parallel=parallel)

    print("\n4. Train, evaluate and decide the first champion")
    if not run_steps(name, [Step(("training_dataset", "model", "evaluation", "promotion"))], env, parallel=1)[0].ok:
        return 1

    results: list[StepResult] = []
    if later:
        print(f"\n5. Score the production batches ({later[0]}-{later[-1]}) and check their drift")
        chain = ("raw_batch", "validated_batch", "features", "predictions", "drift_report")
        results = run_steps(name, [Step(chain, b) for b in later], env, parallel=parallel)

    print()
    print_summary(spec, settings, later, {r.step.partition: r for r in results})
    print(f"\nDone in {time.monotonic() - started:.0f}s. Where to look next:")
    print("  make ui         Dagster UI at http://127.0.0.1:3000 (lineage, checks, metadata, runs)")
    print("  make mlflow-ui  MLflow UI at http://127.0.0.1:5000 (runs, registered model, aliases)")
    print(f"  drift reports   {settings.home / 'lake' / name / 'drift_report'}/<batch>.html")
    return 0 if all(r.ok for r in results) else 1


def _registered_batches(name: str, env: dict[str, str]) -> list[str]:
    import dagster as dg

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        return list(instance.get_dynamic_partitions(f"{name}_batches"))


def print_summary(spec: PipelineSpec, settings: Settings, batches: list[str], results: dict) -> None:
    lake = settings.home / "lake" / spec.name
    promotion = _read_json(lake / "promotion" / "latest.json")
    if promotion:
        state = "promoted" if promotion["promote"] else "not promoted"
        print(f"Candidate version {promotion['candidate_version']} {state}: {'; '.join(promotion['reasons'])}")
    header = f"{'batch':>6} {'rows':>6} {'model':>5} {'drift share':>11} {'drift':>5} {'pred. pos.':>10} {'roc_auc':>7} {'parity gap':>10}"
    print(header)
    print("-" * len(header))
    for batch in batches:
        result = results.get(batch)
        if result is not None and not result.ok:
            print(f"{batch:>6}  not scored: {result.error[:110]}")
            continue
        drift = _read_json(lake / "drift_report" / f"{batch}.json") or {}
        quality = _read_json(lake / "production_evaluation" / f"{batch}.json") or {}
        metrics = quality.get("metrics", {})
        gaps = [f["demographic_parity_difference"] for f in quality.get("fairness", [])]
        print(
            f"{batch:>6} {quality.get('rows', 0):>6} {drift.get('model_version', '-'):>5} "
            f"{_fmt(drift.get('drifted_share')):>11} {('yes' if drift.get('dataset_drift') else 'no'):>5} "
            f"{_fmt(quality.get('predicted_positive_rate')):>10} {_fmt(metrics.get('roc_auc')):>7} "
            f"{_fmt(max(gaps) if gaps else None):>10}"
        )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run the whole lifecycle of a model through the Dagster CLI")
    demo_parser.add_argument("--model", help="spec name (default: the first spec)")
    demo_parser.add_argument("--parallel", type=int, default=2, help="concurrent dagster processes (default 2)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    specs = load_specs(settings.pipelines)
    spec = next((s for s in specs if s.name == args.model), None) if args.model else specs[0]
    if spec is None:
        parser.error(f"--model: no spec named {args.model!r} (have: {', '.join(s.name for s in specs)})")
    return demo(spec, settings, parallel=args.parallel)


if __name__ == "__main__":
    raise SystemExit(main())
