"""Explanations of each model family through the public API: fit_baseline at training time, then
build_explainer(...).explain(rows) at scoring time, on real GSS rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops_assets.ml.attribution import AttributionBaseline, build_explainer, fit_baseline
from mlops_assets.ml.trainers import build_estimator, prepare_inputs
from tests.conftest import GSS_FEATURES, gss

NUMERIC, CATEGORICAL = GSS_FEATURES["numeric"], GSS_FEATURES["categorical"]
COLUMNS = [*NUMERIC, *CATEGORICAL]


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """GSS 1974-1980 to train on; 400 rows of 2010 to explain, with NaN and unseen values planted."""
    frame = gss()
    frame = frame[frame["realrinc"].notna()]
    train = frame[frame["year"] <= 1980]
    later = prepare_inputs(frame[frame["year"] == 2010].head(400), NUMERIC, CATEGORICAL).reset_index(drop=True)
    later.loc[0:9, "age"] = np.nan
    later.loc[10:19, "occrecode"] = "Astronaut"
    later.loc[20:29, "educcat"] = np.nan
    y = (train["realrinc"] >= 25000).astype(int).to_numpy()
    return prepare_inputs(train, NUMERIC, CATEGORICAL), y, later


def fitted(family: str, frames: tuple, **params: object):  # noqa: ANN201
    X, y, _ = frames
    return build_estimator(family, numeric=NUMERIC, categorical=CATEGORICAL, params=params, seed=7).fit(X, y)


def explain(family: str, model: object, frames: tuple, **kwargs: object):  # noqa: ANN201
    baseline = fit_baseline(family, model, frames[0], numeric=NUMERIC, categorical=CATEGORICAL, **kwargs)
    explainer = build_explainer(family, model, numeric=NUMERIC, categorical=CATEGORICAL, baseline=baseline)
    return baseline, explainer.explain(frames[2])


def test_hgb_pipeline_explains_in_spec_columns_and_adds_up(frames: tuple) -> None:
    model = fitted("sklearn_hgb", frames, max_iter=60)
    baseline, attributions = explain("sklearn_hgb", model, frames)

    assert attributions.columns == tuple(COLUMNS)
    own = model.named_steps["model"].decision_function(model.named_steps["preprocess"].transform(frames[2]))
    assert np.array_equal(attributions.raw_output, own)
    assert np.abs(attributions.base_value + attributions.values.sum(axis=1) - own).max() <= 1e-9
    assert attributions.max_abs_residual <= 1e-9
    assert baseline.rows == len(frames[0]) and set(baseline.importance) == set(COLUMNS)
    assert all(v > 0 for v in baseline.importance.values())


def test_logreg_contributions_are_shaps_linear_values_summed_per_column(frames: tuple) -> None:
    import shap  # dev dependency: the independent reference

    model = fitted("sklearn_logreg", frames)
    baseline, attributions = explain("sklearn_logreg", model, frames)
    preprocess, linear = model.named_steps["preprocess"], model.named_steps["model"]
    design_train = preprocess.transform(frames[0])
    design_later = preprocess.transform(frames[2])
    background = np.asarray(design_train.todense())
    # max_samples: shap subsamples the background to 100 rows by default; the training means need all.
    reference = shap.LinearExplainer(linear, shap.maskers.Independent(background, max_samples=len(background)))
    per_design_column = reference.shap_values(np.asarray(design_later.todense()))
    names = list(preprocess.get_feature_names_out())
    summed = np.column_stack(
        [
            per_design_column[:, [k for k, name in enumerate(names) if name == c or name.startswith(f"{c}_")]].sum(
                axis=1
            )
            for c in COLUMNS
        ]
    )

    assert np.abs(attributions.values - summed).max() <= 1e-9
    assert attributions.base_value == pytest.approx(float(reference.expected_value), abs=1e-9)
    assert (
        np.abs(attributions.base_value + attributions.values.sum(axis=1) - model.decision_function(frames[2])).max()
        <= 1e-9
    )


def test_logreg_unseen_category_still_gets_its_contribution(frames: tuple) -> None:
    model = fitted("sklearn_logreg", frames)
    baseline, attributions = explain("sklearn_logreg", model, frames)
    linear = model.named_steps["model"]
    names = list(model.named_steps["preprocess"].get_feature_names_out())
    occupation = [k for k, name in enumerate(names) if name.startswith("occrecode_")]
    expected = -float(np.dot(linear.coef_[0][occupation], np.asarray(baseline.expectations)[occupation]))

    unseen = attributions.values[10:20, COLUMNS.index("occrecode")]
    assert np.allclose(unseen, expected, atol=1e-12)
    assert expected != 0.0


def test_logreg_refuses_expectations_of_another_design(frames: tuple) -> None:
    model = fitted("sklearn_logreg", frames)
    baseline = fit_baseline("sklearn_logreg", model, frames[0], numeric=NUMERIC, categorical=CATEGORICAL)
    shorter = AttributionBaseline(
        **{
            **baseline.__dict__,
            "design_columns": baseline.design_columns[:-1],
            "expectations": baseline.expectations[:-1],
        }
    )
    explainer = build_explainer("sklearn_logreg", model, numeric=NUMERIC, categorical=CATEGORICAL, baseline=shorter)
    with pytest.raises(ValueError, match="expectations: stored for 34 design columns, the model makes 35"):
        explainer.explain(frames[2])
    with pytest.raises(ValueError, match="needs the training-time AttributionBaseline"):
        build_explainer("sklearn_logreg", model, numeric=NUMERIC, categorical=CATEGORICAL)


def test_torch_linear_network_is_explained_exactly(frames: tuple) -> None:
    """With no hidden layer the logit is linear in the network's input, so integrated gradients is
    exact: the completeness error must be float rounding."""
    model = fitted("torch_mlp", frames, hidden_sizes=(), epochs=3)
    _, attributions = explain("torch_mlp", model, frames, integration_steps=4)
    assert attributions.method == "integrated_gradients"
    assert attributions.max_abs_residual <= 1e-9


def test_torch_completeness_error_is_reported_per_row_and_shrinks_with_steps(frames: tuple) -> None:
    model = fitted("torch_mlp", frames, hidden_sizes=(32, 16), epochs=4)
    _, coarse = explain("torch_mlp", model, frames, integration_steps=2)
    _, fine = explain("torch_mlp", model, frames, integration_steps=128)

    probability = model.predict_proba(frames[2])[:, 1]
    assert np.abs(fine.raw_output - np.log(probability / (1 - probability))).max() <= 1e-4
    assert fine.residual.shape == (len(frames[2]),)
    assert np.abs(fine.residual).mean() < np.abs(coarse.residual).mean()
    assert fine.max_abs_residual < 0.05
    assert coarse.max_abs_residual > 1e-6, "two steps cannot integrate a ReLU network exactly"


def test_torch_explaining_leaves_the_model_as_it_was(frames: tuple) -> None:
    model = fitted("torch_mlp", frames, epochs=2)
    before = model.predict_proba(frames[2])
    explain("torch_mlp", model, frames)
    after = model.predict_proba(frames[2])
    assert np.array_equal(before, after)
    assert next(model.network.parameters()).dtype.is_floating_point
    assert str(next(model.network.parameters()).dtype) == "torch.float32"


def test_baseline_round_trips_as_json_and_refuses_another_schema(frames: tuple) -> None:
    model = fitted("sklearn_logreg", frames)
    baseline = fit_baseline("sklearn_logreg", model, frames[0], numeric=NUMERIC, categorical=CATEGORICAL)
    assert AttributionBaseline.from_json(baseline.to_json()) == baseline
    with pytest.raises(ValueError, match="schema_version 2"):
        AttributionBaseline.from_json(baseline.to_json().replace('"schema_version": 1', '"schema_version": 2'))


@pytest.mark.parametrize(
    ("family", "columns", "message"),
    [
        ("xgboost", COLUMNS, "no explanation method for model family 'xgboost'"),
        ("sklearn_hgb", ["age", *CATEGORICAL], "the model's preprocessing emits"),
    ],
)
def test_bad_arguments_name_the_field(frames: tuple, family: str, columns: list[str], message: str) -> None:
    model = fitted("sklearn_hgb", frames, max_iter=5)
    numeric = [c for c in columns if c in NUMERIC]
    with pytest.raises(ValueError, match=message):
        build_explainer(family, model, numeric=numeric, categorical=CATEGORICAL)


def test_explaining_rows_without_a_column_names_it(frames: tuple) -> None:
    model = fitted("sklearn_hgb", frames, max_iter=5)
    explainer = build_explainer("sklearn_hgb", model, numeric=NUMERIC, categorical=CATEGORICAL)
    with pytest.raises(ValueError, match=r"missing columns \['wrkstat'\]"):
        explainer.explain(frames[2].drop(columns=["wrkstat"]))
