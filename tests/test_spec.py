"""A bad spec fails before any run, naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_assets.preflight import resolve
from mlops_assets.spec import SpecError, load_specs
from tests.conftest import WriteSpec, gss_spec


def test_shipped_spec_loads_and_fits_its_data() -> None:
    (spec,) = load_specs()
    assert spec.name == "gss_wages"
    pipeline = resolve(spec, cache_dir=None)
    assert pipeline.columns.numeric == ["age", "prestg10", "childs"]


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"trainig": {}}, "trainig", "unknown key"),
        ({"training": {"seed": "abc"}}, "training.seed", "valid integer"),
        ({"training": {"model": "xgboost"}}, "training.model", "sklearn_hgb"),
        (
            {"training": {"model": "torch_mlp", "params": {"max_iter": 200}}},
            "training",
            "torch_mlp does not take ['max_iter']",
        ),
        ({"training": {"params": {"random_state": 1}}}, "training", "the seed is training.seed"),
        ({"label": {"column": "realrinc"}}, "label", "exactly one of label.threshold or label.positive_value"),
        ({"gates": {"min_metrics": {"auc": 0.7}}}, "gates", "unknown metric"),
        ({"name": "Bad Name"}, "name", "lower_snake_case"),
        ({"sensitive_features": ["age"]}, "column 'age'", "in both features.numeric and sensitive_features"),
        ({"drift": {"drift_share": 1.5}}, "drift.drift_share", "less than or equal to 1"),
        ({"serving": {"canary": {"share": 1.5}}}, "serving.canary.share", "less than or equal to 1"),
        ({"serving": {"canary": {"key": "zip"}}}, "serving.canary.key", "neither 'request_id' nor an input column"),
        ({"serving": {"shadw": True}}, "serving.shadw", "unknown key"),
        ({"serving": {"request_log": {"max_rows": 0}}}, "serving.request_log.max_rows", "greater than or equal to 1"),
    ],
)
def test_structural_errors_name_file_and_field(
    gss_slice: Path, write_spec: WriteSpec, change: dict, field: str, fragment: str
) -> None:
    path = write_spec(gss_spec(gss_slice, **change))
    with pytest.raises(SpecError) as e:
        load_specs(path)
    assert f"{path}: {field}" in str(e.value)
    assert fragment in str(e.value)


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        (
            {"features": {"numeric": ["age", "salary"], "categorical": []}},
            "features.numeric",
            "'salary' is not in the data",
        ),
        ({"features": {"numeric": ["age", "occrecode"], "categorical": []}}, "features.numeric", "not numeric"),
        ({"label": {"column": "realrinc", "threshold": 10_000_000}}, "label", "yields only class 0"),
        ({"sensitive_features": ["race"]}, "sensitive_features", "'race' is not in the data"),
    ],
)
def test_data_errors_name_file_and_field(
    gss_slice: Path, write_spec: WriteSpec, change: dict, field: str, fragment: str
) -> None:
    path = write_spec(gss_spec(gss_slice, **change))
    (spec,) = load_specs(path)
    with pytest.raises(SpecError) as e:
        resolve(spec, cache_dir=None)
    assert f"{path}: {field}" in str(e.value)
    assert fragment in str(e.value)


def test_features_are_inferred_when_omitted(gss_slice: Path, write_spec: WriteSpec) -> None:
    spec_data = gss_spec(gss_slice)
    del spec_data["features"]
    (spec,) = load_specs(write_spec(spec_data))
    columns = resolve(spec, cache_dir=None).columns
    assert {"age", "prestg10", "childs", "rownames", "occ10"} == set(columns.numeric)
    assert {"occrecode", "wrkstat", "educcat", "maritalcat"} == set(columns.categorical)


def test_resolution_is_cached_per_source_signature(gss_slice: Path, write_spec: WriteSpec, tmp_path: Path) -> None:
    (spec,) = load_specs(write_spec(gss_spec(gss_slice)))
    resolve(spec, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("spec-*.json"))) == 1
    gss_slice.write_bytes(gss_slice.read_bytes())  # same content, new mtime: a new signature
    import os

    os.utime(gss_slice, (1, 1))
    resolve(spec, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("spec-*.json"))) == 2


def test_two_specs_with_one_name_are_rejected(gss_slice: Path, write_spec: WriteSpec) -> None:
    write_spec(gss_spec(gss_slice), "a.yaml")
    second = write_spec(gss_spec(gss_slice), "b.yaml")
    with pytest.raises(SpecError, match=f"{second}: name: 'gss_slice' is already used"):
        load_specs(second.parent)


def test_model_params_match_the_pinned_estimators() -> None:
    """MODEL_PARAMS (read at load, without importing the estimators) against their signatures."""
    import inspect

    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    from mlops_assets.ml.torch_mlp import TorchMLPClassifier
    from mlops_assets.spec import MODEL_PARAMS

    set_by_the_product = {"random_state", "categorical_features"}
    assert MODEL_PARAMS["sklearn_hgb"] == set(HistGradientBoostingClassifier().get_params()) - set_by_the_product
    assert MODEL_PARAMS["sklearn_logreg"] == set(LogisticRegression().get_params()) - set_by_the_product
    torch_args = set(inspect.signature(TorchMLPClassifier.__init__).parameters)
    set_per_run = {"self", "numeric", "categorical", "seed", "device", "checkpoint_dir", "on_epoch"}
    assert MODEL_PARAMS["torch_mlp"] == torch_args - set_per_run


def test_serving_defaults_and_entity_key(gss_slice: Path, write_spec: WriteSpec) -> None:
    (spec,) = load_specs(write_spec(gss_spec(gss_slice)))
    assert (spec.serving.canary.share, spec.serving.canary.key, spec.serving.shadow) == (0.0, "request_id", False)
    assert (spec.serving.max_rows, spec.serving.max_body_bytes, spec.serving.token_env) == (
        1000,
        1_000_000,
        "MLOPS_SERVE_TOKEN",
    )
    assert (spec.serving.request_log.max_rows, spec.serving.request_log.interval_seconds) == (10000, 300.0)
    (spec,) = load_specs(write_spec(gss_spec(gss_slice, serving={"canary": {"share": 0.1, "key": "gender"}})))
    assert (spec.serving.canary.share, spec.serving.canary.key) == (0.1, "gender")
