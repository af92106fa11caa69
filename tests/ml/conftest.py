"""Fixtures of the pure ML tests: two real models on the GSS holdout, and headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_assets.ml.figures import ScoredModel
from tests.chromium import Chromium, chromium_binary


@dataclass(frozen=True)
class Holdout:
    """The GSS holdout (every labelled year) with the candidate and champion scored on it."""

    y: np.ndarray
    sensitive: pd.DataFrame
    candidate: ScoredModel
    champion: ScoredModel


@pytest.fixture(scope="session")
def gss_holdout() -> Holdout:
    """A champion (logistic regression on the years up to 1990) and a candidate (gradient boosting
    on every year), trained on the rows outside the product's holdout and scored on it (7.6k
    rows), as the evaluation asset does after a retrain."""
    from threadpoolctl import threadpool_limits

    from mlops_assets.ml.data import holdout_mask
    from mlops_assets.ml.evaluation import evaluate
    from mlops_assets.ml.trainers import build_estimator, prepare_inputs
    from tests.conftest import GSS_FEATURES, gss

    frame = gss()
    frame = frame[frame["realrinc"].notna()].reset_index(drop=True)
    in_holdout = holdout_mask(frame["year"], frame.groupby("year").cumcount(), fraction=0.2, seed=42)
    y = (frame["realrinc"] >= 25000).to_numpy(dtype="int64")
    inputs = prepare_inputs(frame, GSS_FEATURES["numeric"], GSS_FEATURES["categorical"])
    early = (~in_holdout) & (frame["year"] <= 1990).to_numpy()
    sensitive = frame.loc[in_holdout, ["gender"]].reset_index(drop=True)
    scored = []
    with threadpool_limits(1):
        for role, version, family, rows in (
            ("candidate", "3", "sklearn_hgb", ~in_holdout),
            ("champion", "2", "sklearn_logreg", early),
        ):
            model = build_estimator(family, params={}, seed=7, **GSS_FEATURES).fit(inputs[rows], y[rows])
            proba = model.predict_proba(inputs[in_holdout])[:, 1]
            scored.append(ScoredModel(role, version, proba, evaluate(y[in_holdout], proba, sensitive)))
    return Holdout(y=y[in_holdout], sensitive=sensitive, candidate=scored[0], champion=scored[1])


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    """Headless Chromium with a fresh profile, driven over the DevTools protocol; installed from
    Debian's package when missing and running as root, else the test is skipped saying why."""
    browser = Chromium.start(chromium_binary(), Path(tmp_path_factory.mktemp("chromium-profile")))
    try:
        yield browser
    finally:
        browser.close()
