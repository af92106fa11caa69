"""Per-row explanations of a model's scores, their stored form, and attribution drift.

Pure logic: no Dagster. Importing this package imports nothing but the standard library; numpy,
pyarrow, scikit-learn and torch load when a function that needs them is first used (the names
below resolve to their submodules on first access).

- ``core``: :func:`fit_baseline` (training time), :func:`build_explainer` and
  ``Explainer.explain`` (scoring time), :class:`Attributions`, :func:`global_importance`.
- ``tree``: exact path-dependent TreeSHAP for ``sklearn_hgb``, native categorical splits and
  missing values included (:class:`HGBTreeShap`).
- ``linear``: exact contributions for ``sklearn_logreg``.
- ``gradients``: integrated gradients for ``torch_mlp``, with each row's completeness error.
- ``storage``: the Parquet layout beside the predictions, its writer and readers, one row's
  explanation.
- ``importance``: the attribution-drift decision (nDCG of the importance ranking).

Design notes and measurements: docs/attributions.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Attributions": "core",
    "AttributionBaseline": "core",
    "Explainer": "core",
    "build_explainer": "core",
    "fit_baseline": "core",
    "global_importance": "core",
    "HGBTreeShap": "tree",
    "AttributionDrift": "importance",
    "decide_attribution_drift": "importance",
    "FileInfo": "storage",
    "RowExplanation": "storage",
    "read_attributions": "storage",
    "read_info": "storage",
    "row_explanation": "storage",
    "write_attributions": "storage",
}

__all__ = [
    "AttributionBaseline",
    "AttributionDrift",
    "Attributions",
    "Explainer",
    "FileInfo",
    "HGBTreeShap",
    "RowExplanation",
    "build_explainer",
    "decide_attribution_drift",
    "fit_baseline",
    "global_importance",
    "read_attributions",
    "read_info",
    "row_explanation",
    "write_attributions",
]

if TYPE_CHECKING:
    from mlops_assets.ml.attribution.core import (
        AttributionBaseline,
        Attributions,
        Explainer,
        build_explainer,
        fit_baseline,
        global_importance,
    )
    from mlops_assets.ml.attribution.importance import AttributionDrift, decide_attribution_drift
    from mlops_assets.ml.attribution.storage import (
        FileInfo,
        RowExplanation,
        read_attributions,
        read_info,
        row_explanation,
        write_attributions,
    )
    from mlops_assets.ml.attribution.tree import HGBTreeShap


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
