"""One entry point per model family: what the training step stores, and per-row explanations.

``fit_baseline(family, model, train_inputs, ...)`` runs once at training time and returns an
:class:`AttributionBaseline` (JSON, versioned) holding what explaining later needs from the
training data: the design-column expectations (``sklearn_logreg``), the network-input baseline
(``torch_mlp``), and the global importance of every column on the training rows, the reference
of the attribution-drift check. ``build_explainer(family, model, baseline=...)`` compiles an
explainer once per loaded model; ``explainer.explain(inputs)`` gives :class:`Attributions`.

Inputs are frames as ``prepare_inputs(frame, numeric, categorical)`` makes them (the features
asset's frames already are); the columns are the spec's, numeric then categorical, and a
categorical column gets one contribution under its own name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

Method = Literal["tree_shap_path_dependent", "linear_exact", "integrated_gradients"]
METHODS: dict[str, Method] = {
    "sklearn_hgb": "tree_shap_path_dependent",
    "sklearn_logreg": "linear_exact",
    "torch_mlp": "integrated_gradients",
}
BASELINE_SCHEMA_VERSION = 1
DEFAULT_INTEGRATION_STEPS = 64


@dataclass(frozen=True)
class Attributions:
    """Per-row contributions of each input column to the model's raw output (its logit).

    Attributes:
        columns: the spec's input columns, in the order of ``values``' columns.
        values: ``(rows, columns)`` contributions.
        base_value: the raw output the contributions start from (tree: the cover-weighted mean
            prediction; linear: the prediction at the training means; gradients: the logit at
            the baseline input).
        raw_output: the model's raw output of every row.
        method: how the contributions were computed.
        residual: ``raw_output - base_value - values.sum(axis=1)`` per row: float rounding for
            the exact methods, the completeness error for integrated gradients.
    """

    columns: tuple[str, ...]
    values: np.ndarray
    base_value: float
    raw_output: np.ndarray
    method: Method
    residual: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if self.values.shape != (self.raw_output.shape[0], len(self.columns)):
            raise ValueError(
                f"values: shape {self.values.shape} does not fit {self.raw_output.shape[0]} rows "
                f"and {len(self.columns)} columns"
            )
        object.__setattr__(self, "residual", self.raw_output - self.base_value - self.values.sum(axis=1))

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def max_abs_residual(self) -> float:
        return float(np.max(np.abs(self.residual))) if len(self) else 0.0


def global_importance(attributions: Attributions) -> dict[str, float]:
    """Mean absolute contribution per column, the global importance of a version or a batch.

    Raises:
        ValueError: no rows (a mean over nothing is no importance).
    """
    if len(attributions) == 0:
        raise ValueError("global importance needs at least one explained row")
    means = np.abs(attributions.values).mean(axis=0)
    return {column: float(v) for column, v in zip(attributions.columns, means, strict=True)}


@dataclass(frozen=True)
class AttributionBaseline:
    """What explaining needs from the training data, stored with the model version.

    Attributes:
        family: the model family it was computed for.
        columns: the spec's input columns.
        importance: mean absolute contribution per column over the training rows.
        rows: how many training rows ``importance`` is the mean over.
        design_columns, expectations: ``sklearn_logreg`` only: the design columns and their
            training means.
        input_baseline: ``torch_mlp`` only: the mean network input over the training rows.
        integration_steps: ``torch_mlp`` only: the steps of integrated gradients.
    """

    family: str
    columns: list[str]
    importance: dict[str, float]
    rows: int
    design_columns: list[str] | None = None
    expectations: list[float] | None = None
    input_baseline: list[float] | None = None
    integration_steps: int | None = None
    schema_version: int = BASELINE_SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> AttributionBaseline:
        """Raises ValueError on another schema version or a missing field, naming it."""
        data = json.loads(text)
        version = data.get("schema_version")
        if version != BASELINE_SCHEMA_VERSION:
            raise ValueError(
                f"attribution baseline: schema_version {version!r}, this code reads {BASELINE_SCHEMA_VERSION}"
            )
        try:
            return cls(**data)
        except TypeError as e:
            raise ValueError(f"attribution baseline: {e}") from e


class Explainer:
    """A model compiled for explanation; ``explain`` is a pure function of its inputs."""

    def __init__(self, *, family: str, columns: Sequence[str], compute: Any) -> None:
        self.family = family
        self.columns = tuple(columns)
        self.method = METHODS[family]
        self._compute = compute

    def explain(self, inputs: Any) -> Attributions:
        """Attributions of every row of ``inputs`` (a frame holding the explainer's columns).

        Raises:
            ValueError: a column is missing (named), or the model cannot route a value.
        """
        missing = [c for c in self.columns if c not in inputs.columns]
        if missing:
            raise ValueError(f"inputs: missing columns {missing}")
        values, base, raw = self._compute(inputs[list(self.columns)])
        return Attributions(
            columns=self.columns,
            values=np.ascontiguousarray(values, dtype=np.float64),
            base_value=float(base),
            raw_output=np.asarray(raw, dtype=np.float64),
            method=self.method,
        )


def build_explainer(
    family: str,
    model: Any,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    baseline: AttributionBaseline | None = None,
) -> Explainer:
    """The explainer of a fitted model of ``family``.

    Args:
        family: ``sklearn_hgb``, ``sklearn_logreg`` or ``torch_mlp``.
        model: the estimator ``build_estimator`` made and the training step fitted.
        numeric, categorical: the spec's columns the model was trained on.
        baseline: the training-time record; required for ``sklearn_logreg`` and ``torch_mlp``.

    Raises:
        ValueError: an unknown family, a missing or mismatched baseline, or a model of another
            family (each names the field).
    """
    columns = [*numeric, *categorical]
    if family not in METHODS:
        raise ValueError(f"training.model: no explanation method for model family {family!r}")
    if baseline is not None and (baseline.family != family or baseline.columns != columns):
        raise ValueError(f"baseline: computed for {baseline.family} on {baseline.columns}, not {family} on {columns}")
    if family == "sklearn_hgb":
        return Explainer(family=family, columns=columns, compute=_hgb_compute(model, columns))
    if baseline is None:
        raise ValueError(f"baseline: {family} needs the training-time AttributionBaseline")
    if family == "sklearn_logreg":
        from mlops_assets.ml.attribution.linear import explain_linear

        if baseline.design_columns is None or baseline.expectations is None:
            raise ValueError("baseline.expectations: missing; the training step computes them")

        def linear(inputs: Any) -> tuple[np.ndarray, float, np.ndarray]:
            return explain_linear(
                model,
                inputs,
                columns=columns,
                design_columns=baseline.design_columns or [],
                expectations=baseline.expectations or [],
            )

        return Explainer(family=family, columns=columns, compute=linear)
    from mlops_assets.ml.attribution.gradients import explain_integrated_gradients

    if baseline.input_baseline is None:
        raise ValueError("baseline.input_baseline: missing; the training step computes it")
    steps = baseline.integration_steps or DEFAULT_INTEGRATION_STEPS

    def gradients(inputs: Any) -> tuple[np.ndarray, float, np.ndarray]:
        return explain_integrated_gradients(
            model, inputs, columns=columns, baseline=baseline.input_baseline or [], steps=steps
        )

    return Explainer(family=family, columns=columns, compute=gradients)


def fit_baseline(
    family: str,
    model: Any,
    train_inputs: Any,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    integration_steps: int = DEFAULT_INTEGRATION_STEPS,
) -> AttributionBaseline:
    """The training-time record: run right after fitting, on the training rows.

    Raises:
        ValueError: no training rows, or an unknown family.
    """
    columns = [*numeric, *categorical]
    if len(train_inputs) == 0:
        raise ValueError("train_inputs: no rows to compute the attribution baseline from")
    partial = AttributionBaseline(family=family, columns=columns, importance={}, rows=len(train_inputs))
    if family == "sklearn_logreg":
        from mlops_assets.ml.attribution.linear import design_expectations

        names, means = design_expectations(model, train_inputs[columns])
        partial = AttributionBaseline(**{**asdict(partial), "design_columns": names, "expectations": means})
    elif family == "torch_mlp":
        from mlops_assets.ml.attribution.gradients import input_baseline

        partial = AttributionBaseline(
            **{
                **asdict(partial),
                "input_baseline": input_baseline(model, train_inputs[columns]),
                "integration_steps": integration_steps,
            }
        )
    explainer = build_explainer(family, model, numeric=numeric, categorical=categorical, baseline=partial)
    importance = global_importance(explainer.explain(train_inputs))
    return AttributionBaseline(**{**asdict(partial), "importance": importance})


def _hgb_compute(pipeline: Any, columns: list[str]) -> Any:
    from mlops_assets.ml.attribution.tree import HGBTreeShap

    preprocess = pipeline.named_steps["preprocess"]
    names = [str(n) for n in preprocess.get_feature_names_out()]
    if names != columns:
        raise ValueError(f"columns: the model's preprocessing emits {names}, the spec lists {columns}")
    explainer = HGBTreeShap.from_estimator(pipeline.named_steps["model"])

    def compute(inputs: Any) -> tuple[np.ndarray, float, np.ndarray]:
        design = preprocess.transform(inputs)
        raw = pipeline.named_steps["model"].decision_function(design)
        return explainer.explain(design), explainer.base_value, raw

    return compute


def sigmoid(logit: float) -> float:
    """The positive-class probability of a logit, without overflow for large magnitudes."""
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    e = math.exp(logit)
    return e / (1.0 + e)
