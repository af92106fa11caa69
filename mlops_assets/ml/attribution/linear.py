"""Exact contributions of the ``sklearn_logreg`` family: a linear model's logit, split by input column.

For a design row ``x`` (the pipeline's ColumnTransformer output: scaled numerics, one-hot
categoricals), weights ``w``, intercept ``b`` and the training expectation ``mu`` of each design
column, the contribution of design column ``k`` is ``w_k (x_k - mu_k)`` and the base value is
``b + w . mu``; they add up to ``w . x + b``, the model's ``decision_function``, exactly (to float
rounding). This is the Shapley value of a linear model with independent features (SHAP's
``LinearExplainer``). A categorical column's contribution is the sum over its one-hot columns,
so a category unseen in training (all zeros under ``handle_unknown="ignore"``) still gets one:
``-sum(w_k mu_k)`` over that column's categories.

``mu`` comes from the training data and must be computed at training time
(:func:`design_expectations`) and stored with the model: scoring-time data cannot stand in for
it without moving the base value with every batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def design_expectations(pipeline: Any, inputs: Any) -> tuple[list[str], list[float]]:
    """The design columns' names and their means over ``inputs`` (the training rows, as
    ``prepare_inputs`` gives them): what the training step stores for :func:`explain_linear`."""
    preprocess = pipeline.named_steps["preprocess"]
    design = preprocess.transform(inputs)
    means = np.asarray(design.mean(axis=0)).ravel()
    return [str(name) for name in preprocess.get_feature_names_out()], [float(m) for m in means]


def explain_linear(
    pipeline: Any,
    inputs: Any,
    *,
    columns: Sequence[str],
    design_columns: Sequence[str],
    expectations: Sequence[float],
) -> tuple[np.ndarray, float, np.ndarray]:
    """Per-row contributions ``(rows, len(columns))``, the base value, and the model's own
    ``decision_function`` on ``inputs``.

    Raises:
        ValueError: the expectations were stored for other design columns than this pipeline
            makes (names the first difference), or a column is not one of ``columns``.
    """
    preprocess = pipeline.named_steps["preprocess"]
    model = pipeline.named_steps["model"]
    names = [str(name) for name in preprocess.get_feature_names_out()]
    if names != list(design_columns):
        first = next((i for i, (a, b) in enumerate(zip(names, design_columns, strict=False)) if a != b), None)
        where = f"first difference at position {first}" if first is not None else "different lengths"
        raise ValueError(
            f"expectations: stored for {len(design_columns)} design columns, the model makes {len(names)} ({where})"
        )
    coef = np.asarray(model.coef_, dtype=np.float64)
    if coef.shape[0] != 1:
        raise ValueError(f"only binary logistic regression is supported; coef_ has {coef.shape[0]} rows")
    weights = coef[0]
    means = np.asarray(expectations, dtype=np.float64)
    owner = _design_owner(preprocess, columns)
    groups = np.zeros((weights.size, len(columns)), dtype=np.float64)
    groups[np.arange(weights.size), owner] = weights
    design = preprocess.transform(inputs)
    # Sparse or dense, design @ groups sums w_k x_k within each input column without densifying.
    contributions = np.asarray(design @ groups) - means @ groups
    base = float(model.intercept_[0] + means @ weights)
    raw = np.asarray(pipeline.decision_function(inputs), dtype=np.float64)
    return contributions, base, raw


def _design_owner(preprocess: Any, columns: Sequence[str]) -> np.ndarray:
    """For each design column, the index in ``columns`` of the input column it comes from."""
    position = {c: i for i, c in enumerate(columns)}
    owner = np.full(sum(s.stop - s.start for s in preprocess.output_indices_.values()), -1, dtype=np.intp)
    for name, transformer, selected in preprocess.transformers_:
        if name == "remainder" or transformer == "drop":
            continue
        out = preprocess.output_indices_[name]
        widths = _output_widths(transformer, list(selected), out.stop - out.start)
        start = out.start
        for column, width in zip(selected, widths, strict=True):
            if column not in position:
                raise ValueError(f"design column from {column!r}, which is not one of the model's columns")
            owner[start : start + width] = position[column]
            start += width
    if (owner < 0).any():
        raise ValueError("the preprocessing makes design columns that no input column accounts for")
    return owner


def _output_widths(transformer: Any, selected: list[str], width: int) -> list[int]:
    if width == len(selected):
        return [1] * len(selected)
    last = transformer.steps[-1][1] if hasattr(transformer, "steps") else transformer
    categories = getattr(last, "categories_", None)
    if categories is None or getattr(last, "drop_idx_", None) is not None:
        raise ValueError(f"cannot tell which of {width} design columns come from {selected}")
    widths = [len(c) for c in categories]
    if sum(widths) != width:
        raise ValueError(f"{selected}: the encoder's categories make {sum(widths)} columns, the output has {width}")
    return widths
