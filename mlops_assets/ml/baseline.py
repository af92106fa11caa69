"""What a model must beat on a table: the best constant and a logistic regression, same holdout.

A floor such as ``roc_auc >= 0.70`` means nothing on its own for someone else's data. Measured on
the first training data's holdout (the rows the candidate is judged on, by the same stable hash),
these two say whether a candidate learned anything and whether the floor is reachable.
``mlops spec init`` sets the starter floors from them and ``mlops demo`` prints them beside a
candidate that missed a floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlops_assets.spec import PipelineSpec

if TYPE_CHECKING:
    import pandas as pd

BEST_CONSTANT = "best constant"
LOGISTIC_REGRESSION = "logistic regression"


@dataclass(frozen=True)
class Baseline:
    """Holdout metrics per baseline model (``BEST_CONSTANT``, ``LOGISTIC_REGRESSION``)."""

    metrics: dict[str, dict[str, float]]
    train_rows: int
    holdout_rows: int
    positive_rate: float

    def describe(self, metric: str) -> str:
        """E.g. ``best constant 0.500, logistic regression 0.731 (holdout of 1044 rows)``."""
        shown = ", ".join(f"{model} {values[metric]:.3f}" for model, values in self.metrics.items() if metric in values)
        return f"{shown} (holdout of {self.holdout_rows} rows)"


def measure_baseline(spec: PipelineSpec, frame: pd.DataFrame) -> Baseline:
    """Fits both baselines on the first training data of ``frame`` (the source's rows).

    Raises:
        ValueError: the training set or the holdout holds a single label class.
    """
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from mlops_assets.ml.data import batch_key, binarize_label, holdout_mask, infer_features, initial_window

    window = initial_window(spec, frame)
    columns = infer_features(spec, window)
    batch_column = spec.source.batch_column
    batches = window[batch_column].map(batch_key) if batch_column else pd.Series("all", index=window.index)
    # The same side per row as split_window: the position of the row within its batch.
    rows = batches.groupby(batches).cumcount()
    label = binarize_label(spec, window)
    labelled = label.notna().to_numpy()
    in_holdout = holdout_mask(
        batches[labelled], rows[labelled], fraction=spec.training.holdout_fraction, seed=spec.training.seed
    )
    data = window[labelled].reset_index(drop=True)
    y = label[labelled].to_numpy(dtype="int64")
    x = data[[*columns.numeric, *columns.categorical]].copy()
    for column in columns.categorical:
        x[column] = x[column].astype("string").fillna("(missing)").astype(object)
    x_train, x_holdout, y_train, y_holdout = x[~in_holdout], x[in_holdout], y[~in_holdout], y[in_holdout]
    for side, values in (("training set", y_train), ("holdout", y_holdout)):
        if len(np.unique(values)) < 2:
            raise ValueError(f"{spec.name}: the {side} of the first training data holds a single label class")
    majority = int(y_train.mean() >= 0.5)
    constant = {"roc_auc": 0.5, "accuracy": float(accuracy_score(y_holdout, np.full(len(y_holdout), majority)))}
    encode = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(), StandardScaler()), columns.numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore", min_frequency=5), columns.categorical),
        ]
    )
    model = make_pipeline(encode, LogisticRegression(max_iter=1000))
    model.fit(x_train, y_train)
    scores = model.predict_proba(x_holdout)[:, 1]
    logistic = {
        "roc_auc": float(roc_auc_score(y_holdout, scores)),
        "accuracy": float(accuracy_score(y_holdout, (scores >= 0.5).astype("int64"))),
    }
    return Baseline(
        metrics={BEST_CONSTANT: constant, LOGISTIC_REGRESSION: logistic},
        train_rows=len(y_train),
        holdout_rows=len(y_holdout),
        positive_rate=float(y.mean()),
    )
