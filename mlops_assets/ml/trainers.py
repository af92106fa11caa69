"""Model families: estimators whose preprocessing is fitted on training data and saved with them.

Each family returns one object with ``fit(X, y)`` and ``predict_proba(X)``. The preprocessing
(imputation, encoding, scaling) is part of that object, so the registered model applies exactly
the transformations fitted at training time when it scores a batch (no training-serving skew).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_assets.spec import ModelFamily

if TYPE_CHECKING:
    import pandas as pd

MISSING_CATEGORY = "__missing__"

# Every type a registered scikit-learn model may contain. skops refuses to load anything else,
# so a planted artifact cannot make the loader instantiate an arbitrary class.
SKOPS_TRUSTED_TYPES = [
    "numpy.dtype",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.impute._base.SimpleImputer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.preprocessing._encoders.OrdinalEncoder",
    "sklearn.preprocessing._data.StandardScaler",
    # Held inside a fitted HistGradientBoostingClassifier (scikit-learn 1.9); skops used to admit
    # them through its default list of every estimator, which the loader no longer imports. A
    # FunctionTransformer's function is itself loaded through this same allow-list.
    "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "sklearn.preprocessing._label.LabelEncoder",
    "collections.OrderedDict",
    "builtins.slice",
    # HistGradientBoostingClassifier keeps functools.partial(check_array, ...) as a validator;
    # skops loads the partial's function through this same allow-list, so this admits only that.
    "functools.partial",
    "sklearn.utils.validation.check_array",
]


def prepare_inputs(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """The model's input frame: numeric as float64, categorical as strings with NaN for missing.

    Used on training data and on every scored batch, so both see the same dtypes.
    """
    import numpy as np
    import pandas as pd

    out = pd.DataFrame(index=frame.index)
    for column in numeric:
        out[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in categorical:
        values = frame[column]
        out[column] = values.astype(str).where(values.notna(), np.nan).astype(object)
    return out


def build_estimator(
    family: ModelFamily, *, numeric: list[str], categorical: list[str], params: dict[str, Any], seed: int
) -> Any:
    """A fresh, unfitted estimator of ``family`` with the spec's params.

    Raises:
        ValueError: an unknown family or a param the estimator does not take (names the param).
    """
    if family == "torch_mlp":
        from mlops_assets.ml.torch_mlp import TorchMLPClassifier

        return _with_params(TorchMLPClassifier, params, numeric=numeric, categorical=categorical, seed=seed)

    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    fill_missing = SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)
    if family == "sklearn_hgb":
        import numpy as np
        from sklearn.ensemble import HistGradientBoostingClassifier

        encode = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan)
        columns = ColumnTransformer(
            [("num", "passthrough", numeric), ("cat", make_pipeline(fill_missing, encode), categorical)],
            verbose_feature_names_out=False,
        )
        categorical_mask = [False] * len(numeric) + [True] * len(categorical)
        model = _with_params(
            HistGradientBoostingClassifier,
            params,
            categorical_features=categorical_mask,
            random_state=seed,
        )
    elif family == "sklearn_logreg":
        from sklearn.linear_model import LogisticRegression

        columns = ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
                ("cat", make_pipeline(fill_missing, OneHotEncoder(handle_unknown="ignore")), categorical),
            ],
            verbose_feature_names_out=False,
        )
        model = _with_params(LogisticRegression, {"max_iter": 1000, **params}, random_state=seed)
    else:
        raise ValueError(f"training.model: unknown model family {family!r}")
    return Pipeline([("preprocess", columns), ("model", model)])


def effective_params(family: ModelFamily, estimator: Any) -> dict[str, Any]:
    """The hyper-parameters ``estimator`` trains with: the spec's ``training.params`` and every
    default it left alone, so the MLflow run records what was used, not only what was written.
    """
    from mlops_assets.spec import MODEL_PARAMS

    model = estimator if family == "torch_mlp" else estimator.named_steps["model"]
    return {k: v for k, v in sorted(model.get_params(deep=False).items()) if k in MODEL_PARAMS[family]}


def _with_params(cls: type, params: dict[str, Any], **fixed: Any) -> Any:
    try:
        return cls(**{**fixed, **params})
    except TypeError as e:
        raise ValueError(f"training.params: {cls.__name__} does not take these params: {e}") from e
