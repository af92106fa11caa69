"""The flat-array HGB path gives bit-identical probabilities to the pipeline's own predict_proba."""

from __future__ import annotations

import math

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from mlops_assets.ml.trainers import prepare_inputs
from mlops_assets.serving.predictor import Scorer
from tests.conftest import GSS_FEATURES, gss

NUMERIC, CATEGORICAL = GSS_FEATURES["numeric"], GSS_FEATURES["categorical"]


def _fit(family: str, **params: object):  # noqa: ANN202 - sklearn imported lazily
    from mlops_assets.ml.trainers import build_estimator

    frame = gss()
    train = frame[frame["year"].isin([1974, 1975, 1976])]
    model = build_estimator(family, numeric=NUMERIC, categorical=CATEGORICAL, params=dict(params), seed=3)
    model.fit(prepare_inputs(train, NUMERIC, CATEGORICAL), (train["realrinc"] >= 25000).astype(int))
    return model


def _rows() -> list[dict[str, object]]:
    """Every 2010 row, plus rows with missing values and categories never seen in training."""
    frame = gss()
    records = frame[frame["year"] == 2010][NUMERIC + CATEGORICAL].to_dict("records")
    rows = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in records]
    assert sum(None in r.values() for r in rows) > 10  # the real data has missing values
    extra = []
    for column in NUMERIC + CATEGORICAL:
        extra.append({**rows[0], column: None})
    for column in CATEGORICAL:
        extra.append({**rows[1], column: "a category never seen in training"})
        extra.append({**rows[2], column: 7})  # an int where strings were trained
    extra.append({**rows[3], "age": 1e9, "childs": -5.0})
    return rows + extra


@pytest.mark.parametrize("params", [{}, {"max_iter": 300, "max_leaf_nodes": 63}])
def test_flat_hgb_is_bit_identical_to_predict_proba(params: dict) -> None:
    model = _fit("sklearn_hgb", **params)
    scorer = Scorer(model, numeric=NUMERIC, categorical=CATEGORICAL)
    assert scorer.flat is not None, "the pipeline of build_estimator('sklearn_hgb') must take the flat path"
    rows = _rows()
    import pandas as pd

    frame = pd.DataFrame(rows, columns=NUMERIC + CATEGORICAL)
    with threadpool_limits(limits=1):
        expected = model.predict_proba(prepare_inputs(frame, NUMERIC, CATEGORICAL))[:, 1]
        fast = np.array([scorer.flat.positive_proba(r) for r in rows])
    assert len(rows) > 1000
    differing = int(np.sum(fast != expected))
    assert differing == 0, f"{differing} of {len(rows)} rows differ, e.g. {np.flatnonzero(fast != expected)[:5]}"
    # Through the scorer's entry point (one row: flat) and for several rows (the model's own path).
    one = [scorer.score({c: [r[c]] for c in NUMERIC + CATEGORICAL}, 1)[0] for r in rows[:50]]
    assert one == expected[:50].tolist()
    assert scorer.score({c: [r[c] for r in rows[:50]] for c in NUMERIC + CATEGORICAL}, 50) == expected[:50].tolist()


def test_other_families_use_their_own_predict_proba() -> None:
    model = _fit("sklearn_logreg")
    scorer = Scorer(model, numeric=NUMERIC, categorical=CATEGORICAL)
    assert scorer.flat is None
    import pandas as pd

    rows = _rows()[:20]
    expected = model.predict_proba(prepare_inputs(pd.DataFrame(rows), NUMERIC, CATEGORICAL))[:, 1]
    assert [scorer.score({c: [r[c]] for c in NUMERIC + CATEGORICAL}, 1)[0] for r in rows] == expected.tolist()
