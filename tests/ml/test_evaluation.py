"""Metrics and fairness against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops_assets.ml.evaluation import calibration_error, evaluate


def test_perfectly_calibrated_scores_have_no_calibration_error() -> None:
    y = np.array([0, 1, 0, 1] * 25)
    proba = np.full(100, 0.5)
    assert calibration_error(y, proba) == pytest.approx(0.0)
    assert calibration_error(y, np.full(100, 0.9)) == pytest.approx(0.4)


def test_metrics_and_group_gaps() -> None:
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    proba = np.array([0.9, 0.8, 0.7, 0.1, 0.9, 0.2, 0.1, 0.1])
    groups = pd.DataFrame({"gender": ["m", "m", "m", "m", "f", "f", "f", "f"]})
    result = evaluate(y, proba, groups)
    assert result.metrics["accuracy"] == pytest.approx(6 / 8)
    # 15 of the 16 (positive, negative) pairs are ranked right: only 0.2 < 0.7 is not
    assert result.metrics["roc_auc"] == pytest.approx(15 / 16)
    (gender,) = result.fairness
    # selection rates: m 3/4, f 1/4
    assert gender.demographic_parity_difference == pytest.approx(0.5)
    # TPR m 1.0 vs f 0.5; FPR m 0.5 vs f 0.0 -> worst 0.5
    assert gender.equalized_odds_difference == pytest.approx(0.5)
    assert gender.by_group["f"]["count"] == 4


def test_auc_is_none_not_a_sentinel_on_one_class() -> None:
    result = evaluate(np.ones(5), np.linspace(0.1, 0.9, 5), pd.DataFrame({"g": list("aabbb")}))
    assert result.metrics["roc_auc"] is None
    assert "single class" in result.notes[0]


def test_empty_input_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs labelled rows"):
        evaluate(np.array([]), np.array([]), pd.DataFrame({"g": []}))


def test_a_row_stays_on_its_side_of_the_holdout_as_the_window_grows() -> None:
    from mlops_assets.ml.data import holdout_mask

    first = pd.DataFrame({"batch": ["1990"] * 5000, "row": range(5000)})
    grown = pd.concat([first, pd.DataFrame({"batch": ["1991"] * 3000, "row": range(3000)})], ignore_index=True)
    before = holdout_mask(first["batch"], first["row"], fraction=0.2, seed=42)
    after = holdout_mask(grown["batch"], grown["row"], fraction=0.2, seed=42)
    assert (after[:5000] == before).all()
    assert 0.18 < after.mean() < 0.22
    assert not (holdout_mask(first["batch"], first["row"], fraction=0.2, seed=7) == before).all()


def _three_row_group(gender_of_few: object) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """200 rows of m/f predicted positive 5% of the time, and three rows of another gender all
    predicted positive: counted, that group alone makes the parity gap 0.95."""
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.integers(0, 2, 200), [1, 0, 1]])
    predicted_positive = np.r_[np.arange(100) < 5, np.arange(100) < 5, [True] * 3]
    proba = np.where(predicted_positive, 0.9, 0.1)
    gender = pd.Series(["m"] * 100 + ["f"] * 100 + [gender_of_few] * 3, name="gender")
    return y, proba, pd.DataFrame({"gender": gender})


@pytest.mark.parametrize("gender_of_few", [None, "new"])
def test_a_group_under_the_minimum_is_left_out_of_the_gaps_and_reported(gender_of_few: object) -> None:
    y, proba, groups = _three_row_group(gender_of_few)
    counted = evaluate(y, proba, groups)
    assert counted.fairness[0].demographic_parity_difference == pytest.approx(0.95)

    result = evaluate(y, proba, groups, min_group_size=30)
    (gender,) = result.fairness
    assert gender.demographic_parity_difference == pytest.approx(0.0)
    few = "missing" if gender_of_few is None else "new"
    assert gender.too_small == {few: 3}
    assert result.too_small() == [{"feature": "gender", "group": few, "rows": 3}]
    assert f"gender={few} (3)" in result.too_small_note()
    assert gender.by_group[few]["count"] == 3  # still shown by group


def test_a_group_at_the_minimum_counts() -> None:
    y, proba, groups = _three_row_group("new")
    result = evaluate(y, proba, groups, min_group_size=3)
    assert result.fairness[0].demographic_parity_difference == pytest.approx(0.95)
    assert result.fairness[0].too_small == {}
    assert result.too_small_note() == ""


def test_one_group_large_enough_leaves_the_gaps_undefined() -> None:
    y, proba, groups = _three_row_group("new")
    result = evaluate(y, proba, groups, min_group_size=101)
    assert result.fairness[0].demographic_parity_difference is None
    assert result.worst("demographic_parity_difference") is None
    assert sorted(result.fairness[0].too_small) == ["f", "m", "new"]
