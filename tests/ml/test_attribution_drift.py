"""The attribution-drift decision as a table, the package's import budget, and the spec block."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from mlops_assets.ml.attribution.importance import decide_attribution_drift
from mlops_assets.spec import SpecError, parse_spec

BASELINE = {"wrkstat": 0.40, "age": 0.30, "occrecode": 0.20, "childs": 0.10}


def dcg(weights: list[float]) -> float:
    return sum(w / math.log2(i + 2) for i, w in enumerate(weights))


IDEAL = dcg([0.40, 0.30, 0.20, 0.10])


@pytest.mark.parametrize(
    ("case", "batch", "threshold", "value", "drifted", "reason"),
    [
        (
            "same ranking, other magnitudes",
            {"wrkstat": 9.0, "age": 3.0, "occrecode": 2.0, "childs": 0.5},
            0.9,
            1.0,
            False,
            "nDCG 1.000 >= 0.9: the batch ranks every column as training did (top: wrkstat, age, occrecode)",
        ),
        (
            "two neighbours swap",
            {"wrkstat": 0.4, "age": 0.2, "occrecode": 0.3, "childs": 0.1},
            0.9,
            dcg([0.40, 0.20, 0.30, 0.10]) / IDEAL,
            False,
            f"nDCG {dcg([0.40, 0.20, 0.30, 0.10]) / IDEAL:.3f} >= 0.9, ranking holds: "
            "age fell from rank 2 to 3 (30% of training importance); "
            "occrecode rose from rank 3 to 2 (20% of training importance)",
        ),
        (
            "the top column sinks to the bottom",
            {"wrkstat": 0.01, "age": 0.3, "occrecode": 0.2, "childs": 0.1},
            0.9,
            dcg([0.30, 0.20, 0.10, 0.40]) / IDEAL,
            True,
            f"nDCG {dcg([0.30, 0.20, 0.10, 0.40]) / IDEAL:.3f} < 0.9, "
            "the batch's explanations no longer rank the columns as training did: "
            "wrkstat fell from rank 1 to 4 (40% of training importance); "
            "age rose from rank 2 to 1 (30% of training importance); "
            "occrecode rose from rank 3 to 2 (20% of training importance)",
        ),
        (
            "a stricter threshold flags the swap",
            {"wrkstat": 0.4, "age": 0.2, "occrecode": 0.3, "childs": 0.1},
            0.99,
            dcg([0.40, 0.20, 0.30, 0.10]) / IDEAL,
            True,
            None,
        ),
        (
            "ties in the batch keep the training order",
            {"wrkstat": 0.2, "age": 0.2, "occrecode": 0.2, "childs": 0.2},
            0.9,
            1.0,
            False,
            None,
        ),
        (
            "exactly at the threshold is no drift",
            {"wrkstat": 0.4, "age": 0.3, "occrecode": 0.2, "childs": 0.1},
            1.0,
            1.0,
            False,
            None,
        ),
    ],
)
def test_decision(case: str, batch: dict, threshold: float, value: float, drifted: bool, reason: str | None) -> None:
    decision = decide_attribution_drift(baseline=BASELINE, batch=batch, threshold=threshold)
    assert decision.value == pytest.approx(value, abs=1e-12), case
    assert decision.drifted is drifted, case
    if reason is not None:
        assert decision.reason == reason, case
    assert decision.baseline_ranking == ["wrkstat", "age", "occrecode", "childs"]


def test_moves_list_every_column_that_changed_rank() -> None:
    decision = decide_attribution_drift(
        baseline=BASELINE, batch={"wrkstat": 0.01, "age": 0.3, "occrecode": 0.2, "childs": 0.1}
    )
    assert [(m.column, m.baseline_rank, m.batch_rank) for m in decision.moves] == [
        ("age", 2, 1),
        ("occrecode", 3, 2),
        ("childs", 4, 3),
        ("wrkstat", 1, 4),
    ]
    assert decision.to_dict()["batch_ranking"] == ["age", "occrecode", "childs", "wrkstat"]


@pytest.mark.parametrize(
    ("baseline", "batch", "kwargs", "message"),
    [
        (BASELINE, {"wrkstat": 1.0, "age": 1.0, "occrecode": 1.0, "gender": 1.0}, {}, r"\['gender'\] are not in"),
        ({"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 1.0}, {}, "zero for every column"),
        ({"a": 1.0, "b": -0.1}, {"a": 1.0, "b": 1.0}, {}, r"baseline importance: columns \['b'\]"),
        ({"a": 1.0, "b": 1.0}, {"a": math.nan, "b": 1.0}, {}, r"batch importance: columns \['a'\]"),
        (BASELINE, BASELINE, {"threshold": 0.0}, r"explain.drift_threshold: 0.0 is not in \(0, 1\]"),
        (BASELINE, BASELINE, {"metric": "kendall"}, "explain.drift_metric: unknown metric 'kendall'"),
    ],
)
def test_bad_input_names_the_problem(baseline: dict, batch: dict, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decide_attribution_drift(baseline=baseline, batch=batch, **kwargs)


@pytest.mark.parametrize(
    ("statement", "allowed"),
    [
        ("import mlops_assets.ml.attribution", ()),
        ("from mlops_assets.ml.attribution import decide_attribution_drift", ()),
        ("from mlops_assets.ml.attribution import build_explainer, row_explanation", ("numpy",)),
    ],
)
def test_importing_loads_no_ml_library_until_called(statement: str, allowed: tuple[str, ...]) -> None:
    heavy = ("numpy", "pandas", "pyarrow", "scipy", "sklearn", "torch", "shap")
    probe = f"import sys; {statement}; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert sorted(eval(out.stdout)) == sorted(allowed)


def test_spec_explain_block_defaults_and_errors() -> None:
    minimal = {"name": "m", "source": {"uri": "x.parquet"}, "label": {"column": "y", "threshold": 1}}
    explain = parse_spec(minimal, origin="m.yaml").explain
    assert (explain.top_k, explain.drift_metric, explain.drift_threshold, explain.integration_steps) == (
        5,
        "ndcg",
        0.9,
        64,
    )
    for bad, field in (
        ({"top_k": 0}, "explain.top_k"),
        ({"drift_threshold": 1.5}, "explain.drift_threshold"),
        ({"drift_metric": "spearman"}, "explain.drift_metric"),
        ({"topk": 3}, "explain.topk: unknown key"),
    ):
        with pytest.raises(SpecError, match=f"m.yaml: {field}"):
            parse_spec({**minimal, "explain": bad}, origin="m.yaml")
