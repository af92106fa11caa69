"""Per-batch data drift with Evidently 0.7's statistics, from a reference profile saved at training time.

``detect_drift(profile, batch, policy)`` returns, for every column of the profile, the same score,
method, threshold and verdict that Evidently 0.7.23's ``Report([DataDriftPreset(...)])`` gives on
the full reference and the full batch, and the same dataset verdict; only the profile is read,
never the training data again, and Evidently is never imported. ``render_evidently_report`` (or
``render_evidently_html``) renders Evidently's own HTML report from the same profile and batch,
apart from the check and only when asked. docs/drift.md has the method table, how the
statistics are exact and fast, the behaviour where Evidently has none, and the report's sample
size.

Modules, one job each: ``methods`` (Evidently's methods, the policy and the method choice),
``columns`` (reading a column; input errors), ``stats`` (the statistics kernels), ``profile`` (the
reference profile and its file format), ``sampling`` (the report's deterministic samples),
``check`` (``detect_drift``), ``result`` (what a check returns) and ``report`` (Evidently's HTML
and parsing its snapshot).
"""

from mlops_assets.ml.drift.check import detect_drift
from mlops_assets.ml.drift.columns import DriftInputError, infer_column_kinds
from mlops_assets.ml.drift.methods import (
    BINNED_ABOVE_VALUES,
    FEW_VALUES,
    KS_EXACT_MAX_N,
    SMALL_REFERENCE_ROWS,
    SUPPORTED_METHODS,
    WASSERSTEIN_MIN_NORM,
    ColumnKind,
    DriftPolicy,
    method_label,
)
from mlops_assets.ml.drift.profile import ReferenceProfile
from mlops_assets.ml.drift.report import parse_evidently_snapshot, render_evidently_html, render_evidently_report
from mlops_assets.ml.drift.result import ColumnDrift, DriftResult, verdict_mismatches
from mlops_assets.ml.drift.sampling import DEFAULT_SAMPLE_SIZE, sample_batch

__all__ = [
    "BINNED_ABOVE_VALUES",
    "DEFAULT_SAMPLE_SIZE",
    "FEW_VALUES",
    "KS_EXACT_MAX_N",
    "SMALL_REFERENCE_ROWS",
    "SUPPORTED_METHODS",
    "WASSERSTEIN_MIN_NORM",
    "ColumnDrift",
    "ColumnKind",
    "DriftInputError",
    "DriftPolicy",
    "DriftResult",
    "ReferenceProfile",
    "detect_drift",
    "infer_column_kinds",
    "method_label",
    "parse_evidently_snapshot",
    "render_evidently_html",
    "render_evidently_report",
    "sample_batch",
    "verdict_mismatches",
]
