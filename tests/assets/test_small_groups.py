"""The production fairness checks leave groups under ``gates.min_group_size`` out and say so."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops_assets.assets.deployment import fairness_check_results
from mlops_assets.contract import Fairness, Meta
from mlops_assets.ml.evaluation import evaluate
from mlops_assets.spec import GatesSpec

CHECKS = {"parity_gap_within_limit": (Fairness.DEMOGRAPHIC_PARITY, 0.2)}


def _batch_with_three_unknown_genders() -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    predicted_positive = np.r_[np.arange(100) < 5, np.arange(100) < 5, [True] * 3]
    y = np.tile([0, 1], 102)[:203]
    gender = pd.DataFrame({"gender": ["m"] * 100 + ["f"] * 100 + [None] * 3})
    return y, np.where(predicted_positive, 0.9, 0.1), gender


def test_three_rows_with_a_null_gender_do_not_fail_the_production_check() -> None:
    y, proba, gender = _batch_with_three_unknown_genders()
    counted = evaluate(y, proba, gender)
    (failing,) = fairness_check_results(CHECKS, counted, batch="2030", version="1")
    assert not failing.passed and failing.metadata["gap"].value > 0.9

    result = evaluate(y, proba, gender, min_group_size=GatesSpec().min_group_size)
    (check,) = fairness_check_results(CHECKS, result, batch="2030", version="1")
    assert check.passed
    assert check.metadata["gap"].value == 0.0
    assert check.metadata[Meta.TOO_SMALL_GROUPS].value == [{"feature": "gender", "group": "missing", "rows": 3}]
    assert "groups too small to count: gender=missing (3)" in check.description
