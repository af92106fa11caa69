"""The lifecycle through ``dg.materialize`` with real resources: a lake on disk, MLflow on SQLite.

One history (three GSS years and a champion) is built per module; the tests then score, damage
and retrain against it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_assets.contract import DRIFT_CHECK, Meta, TrainingFile
from resources.registry import CHALLENGER, CHAMPION
from tests.assets.pipeline_harness import Harness
from tests.conftest import WriteSpec, gss, gss_spec

NAME = "gss_slice"


@pytest.fixture
def harness(scored_pipeline: Harness) -> Harness:
    return scored_pipeline


def registry(h: Harness):  # noqa: ANN201
    return h.resources["registry"]


def lake(h: Harness):  # noqa: ANN201
    return h.resources["lake"]


def test_history_produces_a_registered_champion(harness: Harness) -> None:
    promotion = harness.metadata("promotion")
    assert promotion["decision"] == "promoted"
    assert promotion["champion_before"] == "(none)"
    champion = registry(harness).by_alias(NAME, CHAMPION)
    assert champion is not None and champion.version == promotion["candidate_version"]
    tags = champion.tags
    assert tags["mlops.training_batches"] == "1974,1975,1976"
    assert tags["mlops.dagster_run_id"] and tags["mlops.code_version"]
    # The product's default max_iter, not in the spec, is recorded with the run all the same.
    params = registry(harness).client().get_run(champion.run_id).data.params
    assert (params["family"], params["max_iter"], params["C"]) == ("sklearn_logreg", "1000", "1.0"), params
    model = harness.metadata("model")
    assert model["reused_existing_version"] is False
    dataset = harness.metadata("training_dataset")
    assert dataset["train_rows"] + dataset["holdout_rows"] == sum(
        harness.metadata("features", b)["labelled_rows"] for b in ("1974", "1975", "1976")
    )


def test_rows_without_label_are_kept_for_scoring_and_counted(harness: Harness) -> None:
    raw = gss()
    raw_1974 = raw[raw["year"] == 1974]
    meta = harness.metadata("features", "1974")
    assert meta["rows_without_label"] == int(raw_1974["realrinc"].isna().sum()) > 0
    assert meta["labelled_rows"] == int(raw_1974["realrinc"].notna().sum())
    assert meta["dagster/row_count"] == len(raw_1974)


def test_a_production_batch_is_scored_by_the_champion_and_drift_checked(harness: Harness) -> None:
    result = harness.materialize(["predictions", "drift_report"], "2010")
    assert result.success, harness.failure_message(result)
    champion = registry(harness).by_alias(NAME, CHAMPION)
    predictions = lake(harness).read_frame(NAME, "predictions", "2010")
    assert set(predictions["model_version"]) == {champion.version}
    meta = harness.metadata("predictions", "2010")
    assert meta["model_version"] == champion.version
    assert 0.6 < meta["roc_auc"] < 1.0
    assert "demographic_parity_difference" in meta
    checks = harness.check_results(result)
    # Thirty-six years after the training data, most of the population has moved.
    assert checks["drift_within_tolerance"] is False
    assert checks["age_no_drift"] is False
    drift = harness.metadata("drift_report", "2010")
    assert drift["dataset_drift"] is True
    # The HTML report is a run of its own (tests/assets/test_drift_report.py), not the scoring run's.
    assert "report" not in drift


def test_retraining_unchanged_data_reuses_the_version(harness: Harness) -> None:
    client = registry(harness).client()
    before = len(client.search_model_versions(f"name = '{NAME}'"))
    result = harness.materialize(["training_dataset", "model", "evaluation", "promotion"])
    assert result.success, harness.failure_message(result)
    assert len(client.search_model_versions(f"name = '{NAME}'")) == before
    assert harness.metadata("model")["reused_existing_version"] is True
    promotion = harness.metadata("promotion")
    assert promotion["decision"] == "rejected"
    assert "already champion" in promotion["reasons"]


def _wrong_type(f: pd.DataFrame) -> pd.DataFrame:
    return f.assign(age=f["age"].astype(str))


def _out_of_range(f: pd.DataFrame) -> pd.DataFrame:
    f = f.copy()
    f.loc[:99, "prestg10"] = 900.0
    return f


def _unseen(f: pd.DataFrame) -> pd.DataFrame:
    f = f.copy()
    f.loc[:149, "educcat"] = "Doctorate abroad"
    return f


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (_wrong_type, "column 'age': age_numeric failed: 2044 of 2044 rows"),
        (lambda f: f.drop(columns=["childs"]), "column 'childs': childs_present failed"),
        (_out_of_range, "column 'prestg10': prestg10_in_range failed: 100 of 2044 rows"),
        (_unseen, "column 'educcat': educcat_known_categories failed: 150 of 2044 rows"),
        (lambda f: f.iloc[:0], "batch_not_empty failed"),
    ],
)
def test_a_bad_batch_is_stopped_and_loses_nothing(harness: Harness, damage, fragment: str) -> None:  # noqa: ANN001
    batch = "2010"
    store = lake(harness)
    good = harness.materialize(["raw_batch", "validated_batch", "features", "predictions"], batch)
    assert good.success, harness.failure_message(good)
    kept = {a: store.read_bytes(NAME, a, batch, "parquet") for a in ("validated_batch", "features", "predictions")}
    champion = registry(harness).by_alias(NAME, CHAMPION)

    original = harness.raw_frame(batch)
    harness.store_raw(batch, damage(original))
    try:
        result = harness.materialize(["validated_batch", "features", "predictions"], batch)
    finally:
        harness.store_raw(batch, original)

    assert not result.success
    message = harness.failure_message(result)
    assert f"batch {batch} (the test, content version " in message
    assert "failed validation; nothing was written; downstream keeps content version " in message
    assert fragment in message
    assert not [e for e in result.get_asset_materialization_events()]
    for asset, data in kept.items():
        assert store.read_bytes(NAME, asset, batch, "parquet") == data, f"{asset} was overwritten"
    assert registry(harness).by_alias(NAME, CHAMPION).version == champion.version


def test_a_candidate_below_the_floor_never_becomes_champion(
    tmp_path: Path, gss_slice: Path, write_spec: WriteSpec
) -> None:
    strict = gss_spec(gss_slice, gates={"min_metrics": {"roc_auc": 0.99}})
    write_spec(strict)
    h = Harness(tmp_path / "home", tmp_path / "pipelines", NAME)
    assert h.materialize(["source_batches", "validation_suite"]).success
    for b in ("1974", "1975", "1976"):
        assert h.materialize(["raw_batch", "validated_batch", "features"], b).success
    assert h.materialize(["training_dataset", "model", "evaluation", "promotion"]).success
    promotion = h.metadata("promotion")
    assert promotion["decision"] == "rejected"
    assert "gate min_roc_auc failed: roc_auc" in promotion["reasons"]
    assert "misses >= 0.9900" in promotion["reasons"]
    reg = h.resources["registry"]
    assert reg.by_alias(NAME, CHAMPION) is None
    assert reg.by_alias(NAME, CHALLENGER) is not None
    assert h.materialize(["raw_batch", "validated_batch", "features"], "2010").success
    # Scoring and the drift check in one run, as the score job runs them: scoring fails, the
    # drift check runs all the same, against the newest version's training data.
    scored = h.materialize(["predictions", "drift_report"], "2010")
    assert not scored.success
    assert "no version is champion yet, so batch 2010 cannot be scored" in h.failure_message(scored)
    drift_checks = [e for e in scored.get_asset_check_evaluations() if e.asset_key == h.key("drift_report")]
    assert [e.check_name for e in drift_checks].count(DRIFT_CHECK) == 1
    (verdict,) = [e for e in drift_checks if e.check_name == DRIFT_CHECK]
    assert verdict.passed is False, "2010 drifts from the 1970s"
    newest = reg.by_alias(NAME, CHALLENGER).version
    drift = h.metadata("drift_report", "2010")
    assert drift[Meta.MODEL_VERSION] == newest
    assert drift[Meta.DRIFT_REFERENCE].startswith(f"no version is champion yet: drift against version {newest}'s")
    assert not h.resources["lake"].exists(NAME, "predictions", "2010", "parquet")


def test_registered_model_loads_only_through_the_allow_list(harness: Harness) -> None:
    champion = registry(harness).by_alias(NAME, CHAMPION)
    model = registry(harness).load_model(champion)
    holdout = harness.training_data(TrainingFile.HOLDOUT)
    from mlops_assets.ml.trainers import prepare_inputs
    from tests.conftest import GSS_FEATURES

    scores = model.predict_proba(prepare_inputs(holdout, GSS_FEATURES["numeric"], GSS_FEATURES["categorical"]))[:, 1]
    assert np.all((scores >= 0) & (scores <= 1))
