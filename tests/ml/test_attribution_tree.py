"""Path-dependent TreeSHAP for HistGradientBoosting: against shap, against brute force, against the model.

The brute-force reference enumerates every coalition of the path-dependent value function
(Lundberg et al. 2020, Algorithm 1) and weighs them by the Shapley formula. Its routing is
scikit-learn's own: each node is copied into a one-split tree and scored by scikit-learn's
compiled predictor, so categorical bitsets, unknown categories and missing values are routed by
the library itself, not by a second implementation of the code under test.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

from mlops_assets.ml.attribution.tree import HGBTreeShap
from mlops_assets.ml.trainers import build_estimator, prepare_inputs
from tests.conftest import GSS_FEATURES, gss

NUMERIC, CATEGORICAL = GSS_FEATURES["numeric"], GSS_FEATURES["categorical"]
COLUMNS = [*NUMERIC, *CATEGORICAL]


def inner_matrix(estimator: HistGradientBoostingClassifier, X: np.ndarray) -> np.ndarray:
    return estimator._preprocessor.transform(X) if estimator._preprocessor is not None else X


def inner_to_input(estimator: HistGradientBoostingClassifier, X: np.ndarray) -> list[int]:
    """Input column of each inner column, found by shuffling one input column at a time and seeing
    which inner column changes."""
    inner = inner_matrix(estimator, X)
    owner = [-1] * inner.shape[1]
    for j in range(X.shape[1]):
        shuffled = X.copy()
        shuffled[:, j] = np.roll(X[:, j], 1)
        changed = np.flatnonzero(~np.all(np.isclose(inner_matrix(estimator, shuffled), inner, equal_nan=True), axis=0))
        assert changed.size <= 1
        if changed.size:
            owner[int(changed[0])] = j
    unused = [j for j in range(X.shape[1]) if j not in owner]
    return [o if o >= 0 else unused.pop() for o in owner]


def sklearn_goes_left(estimator: HistGradientBoostingClassifier, tree: TreePredictor, node: int, inner: np.ndarray):  # noqa: ANN201
    stump = np.zeros(3, dtype=tree.nodes.dtype)
    stump[0] = tree.nodes[node]
    stump[0]["left"], stump[0]["right"] = 1, 2
    for child, value in ((1, 0.0), (2, 1.0)):
        stump[child]["is_leaf"], stump[child]["value"] = 1, value
    known, f_idx_map = estimator._bin_mapper.make_known_categories_bitsets()
    routed = TreePredictor(stump, tree.binned_left_cat_bitsets, tree.raw_left_cat_bitsets).predict(
        inner, known, f_idx_map, 1
    )
    return routed == 0.0


def brute_force_shap(estimator: HistGradientBoostingClassifier, X: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact Shapley values of the path-dependent value function, and its value for no feature."""
    inner = inner_matrix(estimator, X)
    n_rows, n_features = inner.shape
    trees = [p[0] for p in estimator._predictors]
    left = [
        {i: sklearn_goes_left(estimator, t, i, inner) for i in range(len(t.nodes)) if not t.nodes[i]["is_leaf"]}
        for t in trees
    ]

    def value(tree: TreePredictor, goes_left: dict, node: int, coalition: frozenset) -> np.ndarray:
        n = tree.nodes[node]
        if n["is_leaf"]:
            return np.full(n_rows, float(n["value"]))
        lo = value(tree, goes_left, int(n["left"]), coalition)
        hi = value(tree, goes_left, int(n["right"]), coalition)
        if int(n["feature_idx"]) in coalition:
            return np.where(goes_left[node], lo, hi)
        nodes = tree.nodes
        return (nodes[int(n["left"])]["count"] * lo + nodes[int(n["right"])]["count"] * hi) / n["count"]

    baseline = float(np.ravel(estimator._baseline_prediction)[0])
    v = {
        frozenset(s): baseline + sum(value(t, g, 0, frozenset(s)) for t, g in zip(trees, left, strict=True))
        for r in range(n_features + 1)
        for s in itertools.combinations(range(n_features), r)
    }
    phi_inner = np.zeros((n_rows, n_features))
    for i in range(n_features):
        for s, v_s in v.items():
            if i in s:
                continue
            weight = math.factorial(len(s)) * math.factorial(n_features - len(s) - 1) / math.factorial(n_features)
            phi_inner[:, i] += weight * (v[s | {i}] - v_s)
    phi = np.zeros_like(phi_inner)
    phi[:, inner_to_input(estimator, X)] = phi_inner
    return phi, float(v[frozenset()][0])


@pytest.fixture(scope="module")
def gss_frames() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """GSS 1974-1980 to train on; 2010 to explain, with NaN, missing and never-seen values planted."""
    frame = gss()
    frame = frame[frame["realrinc"].notna()]
    train = frame[frame["year"] <= 1980]
    later = prepare_inputs(frame[frame["year"] == 2010].head(300), NUMERIC, CATEGORICAL).reset_index(drop=True)
    later.loc[0:9, "age"] = np.nan
    later.loc[10:19, "prestg10"] = np.nan
    later.loc[20:29, "occrecode"] = "Astronaut"
    later.loc[30:39, "wrkstat"] = np.nan
    later.loc[40:49, "maritalcat"] = "Never heard of"
    y = (train["realrinc"] >= 25000).astype(int).to_numpy()
    return prepare_inputs(train, NUMERIC, CATEGORICAL), y, later


def gss_pipeline(gss_frames: tuple, **params: object):  # noqa: ANN201
    X, y, _ = gss_frames
    return build_estimator("sklearn_hgb", numeric=NUMERIC, categorical=CATEGORICAL, params=params, seed=42).fit(X, y)


def test_numeric_only_model_equals_shap_within_1e_9() -> None:
    import shap  # a dev dependency (pyproject [dev]): the reference, never used by the product

    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 6))
    X[rng.random(X.shape) < 0.05] = np.nan
    y = np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) * np.nan_to_num(X[:, 2]) + rng.normal(size=3000) > 0
    model = HistGradientBoostingClassifier(max_iter=40, random_state=0, early_stopping=False).fit(X, y.astype(int))
    rows = X[:800]

    explainer = HGBTreeShap.from_estimator(model)
    phi = explainer.explain(rows)
    reference = shap.TreeExplainer(model)

    assert np.isnan(rows).any(axis=1).sum() > 100, "the compared rows must exercise missing-value routing"
    assert np.abs(phi - reference.shap_values(rows)).max() <= 1e-9
    assert explainer.base_value == pytest.approx(float(np.ravel(reference.expected_value)[0]), abs=1e-9)


def test_categorical_model_equals_brute_force_and_its_own_raw_output(gss_frames: tuple) -> None:
    pipeline = gss_pipeline(gss_frames, max_iter=15, max_leaf_nodes=8)
    hgb, preprocess = pipeline.named_steps["model"], pipeline.named_steps["preprocess"]
    later = gss_frames[2]
    design = preprocess.transform(later)
    assert any(p[0].nodes["is_categorical"][~p[0].nodes["is_leaf"].astype(bool)].any() for p in hgb._predictors)

    explainer = HGBTreeShap.from_estimator(hgb)
    phi = explainer.explain(design)
    expected, empty_value = brute_force_shap(hgb, design)

    assert np.abs(phi - expected).max() <= 1e-9
    assert explainer.base_value == pytest.approx(empty_value, abs=1e-12)
    residual = explainer.base_value + phi.sum(axis=1) - hgb.decision_function(design)
    assert np.abs(residual).max() <= 1e-9


def test_additivity_on_every_row_of_a_full_size_model(gss_frames: tuple) -> None:
    """The shipped spec's parameters on the rows with planted NaN, missing and unseen values."""
    pipeline = gss_pipeline(gss_frames, max_iter=200, learning_rate=0.1)
    hgb, preprocess = pipeline.named_steps["model"], pipeline.named_steps["preprocess"]
    design = preprocess.transform(gss_frames[2])
    planted = np.isnan(design).any(axis=1)
    assert planted.sum() >= 40, "NaN numerics and unseen categories (encoded as NaN) must be among the rows"

    explainer = HGBTreeShap.from_estimator(hgb)
    phi = explainer.explain(design)

    residual = explainer.base_value + phi.sum(axis=1) - hgb.decision_function(design)
    assert np.abs(residual).max() <= 1e-9
    assert np.abs(phi[planted]).sum() > 0


@pytest.mark.parametrize(
    ("case", "params", "features"),
    [
        ("stumps", {"max_depth": 1, "max_iter": 12}, [0, 1, 2, 3]),
        ("one numeric feature", {"max_iter": 10, "max_leaf_nodes": 6}, [0]),
        ("one categorical feature", {"max_iter": 10, "max_leaf_nodes": 6}, [3]),
        ("deep trees", {"max_iter": 3, "max_leaf_nodes": 40, "min_samples_leaf": 2}, [0, 1, 2, 3]),
        ("single-leaf trees", {"max_iter": 4, "min_samples_leaf": 10_000}, [0, 1, 2, 3]),
    ],
)
def test_small_models_equal_brute_force(case: str, params: dict, features: list[int]) -> None:
    rng = np.random.default_rng(11)
    n = 2000
    X = np.column_stack(
        [rng.normal(size=n), rng.normal(size=n), rng.integers(0, 4, size=n), rng.integers(0, 9, size=n)]
    ).astype(float)
    X[rng.random(X.shape) < 0.05] = np.nan
    logit = np.nan_to_num(X[:, 0]) + np.isin(X[:, 3], [1, 4, 6]) - 0.5 * (X[:, 2] == 2)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    X = X[:, features]
    categorical = [j in (2, 3) for j in features]
    model = HistGradientBoostingClassifier(
        categorical_features=categorical, random_state=0, early_stopping=False, **params
    ).fit(X, y)
    rows = X[:200].copy()
    if categorical[-1]:
        rows[5:10, -1] = 8.5  # a value the model never saw: scikit-learn routes it as missing

    explainer = HGBTreeShap.from_estimator(model)
    phi = explainer.explain(rows)
    expected, _ = brute_force_shap(model, rows)

    assert np.abs(phi - expected).max() <= 1e-9, case
    assert np.abs(explainer.base_value + phi.sum(axis=1) - model.decision_function(rows)).max() <= 1e-9, case
    if case == "single-leaf trees":
        assert np.all(phi == 0.0)


def test_rows_evaluated_without_tables_give_the_same_values(gss_frames: tuple) -> None:
    """A budget of two cells sends almost every leaf to the per-row formula; no tables at all with
    max_leaf_features=0. Both paths must agree with the tabulated one."""
    pipeline = gss_pipeline(gss_frames, max_iter=30)
    hgb, design = pipeline.named_steps["model"], pipeline.named_steps["preprocess"].transform(gss_frames[2])
    tabulated = HGBTreeShap.from_estimator(hgb)
    per_row = HGBTreeShap.from_estimator(hgb, cell_budget=2)
    no_tables = HGBTreeShap.from_estimator(hgb, max_leaf_features=0)

    assert per_row.stats.direct_leaves > 0 and no_tables.stats.blocks == 0
    reference = tabulated.explain(design)
    assert np.abs(per_row.explain(design) - reference).max() <= 1e-12
    assert np.abs(no_tables.explain(design) - reference).max() <= 1e-12


def test_rows_explained_in_several_chunks_equal_one_by_one(gss_frames: tuple) -> None:
    pipeline = gss_pipeline(gss_frames, max_iter=20)
    design = pipeline.named_steps["preprocess"].transform(pd.concat([gss_frames[2]] * 20, ignore_index=True))
    explainer = HGBTreeShap.from_estimator(pipeline.named_steps["model"])
    together = explainer.explain(design)
    assert design.shape[0] > 4096  # more than one chunk
    singles = np.vstack([explainer.explain(design[i : i + 1]) for i in (0, 4095, 4096, design.shape[0] - 1)])
    assert np.abs(together[[0, 4095, 4096, design.shape[0] - 1]] - singles).max() <= 1e-12


def test_refuses_multiclass_and_unfitted_models() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 2)), rng.integers(0, 3, size=300)
    with pytest.raises(ValueError, match="only binary classifiers"):
        HGBTreeShap.from_estimator(HistGradientBoostingClassifier(max_iter=2).fit(X, y))
    with pytest.raises(ValueError, match="not fitted"):
        HGBTreeShap.from_estimator(HistGradientBoostingClassifier())


def test_refuses_rows_of_the_wrong_width() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 3)), rng.integers(0, 2, size=300)
    explainer = HGBTreeShap.from_estimator(HistGradientBoostingClassifier(max_iter=2).fit(X, y))
    with pytest.raises(ValueError, match="expected 3 columns"):
        explainer.explain(X[:, :2])
