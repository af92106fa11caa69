"""Holdout metrics and fairness by sensitive group.

A metric that is undefined on the data (ROC AUC on a single-class batch) is reported as None with
the reason, never as a sentinel number that a gate could mistake for a score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

DECISION_THRESHOLD = 0.5


@dataclass(frozen=True)
class GroupFairness:
    """Fairness of predictions across the groups of one sensitive feature.

    The gaps are over the groups of at least the minimum size only; ``too_small`` lists the
    others (group -> rows). None when fewer than two groups are large enough to compare.
    """

    feature: str
    demographic_parity_difference: float | None
    equalized_odds_difference: float | None
    by_group: dict[str, dict[str, float | None]]
    too_small: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one model on one labelled data set."""

    metrics: dict[str, float | None]
    rows: int
    positive_rate: float
    predicted_positive_rate: float
    fairness: list[GroupFairness] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def worst(self, gap: str) -> float | None:
        """The largest gap of one kind over all sensitive features (None when none is defined)."""
        values = [getattr(f, gap) for f in self.fairness if getattr(f, gap) is not None]
        return max(values) if values else None

    def too_small(self) -> list[dict[str, Any]]:
        """The groups left out of the gaps, as ``{"feature", "group", "rows"}`` rows."""
        return [
            {"feature": f.feature, "group": group, "rows": rows}
            for f in self.fairness
            for group, rows in f.too_small.items()
        ]

    def too_small_note(self) -> str:
        """``; not counted, under N rows: gender=x (3)``, or empty when every group counted."""
        small = self.too_small()
        if not small:
            return ""
        shown = ", ".join(f"{g['feature']}={g['group']} ({g['rows']})" for g in small[:10])
        more = f" and {len(small) - 10} more" if len(small) > 10 else ""
        return f"; groups too small to count: {shown}{more}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        fairness = [GroupFairness(**f) for f in data.get("fairness", [])]
        return cls(**{**data, "fairness": fairness})


def calibration_bins(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> list[tuple[int, float, float]]:
    """Per equal-width score bin: its rows, mean score and positive rate (both NaN when empty).

    The bins of ``calibration_error`` and of the reliability plot, so the picture shows the
    number the gate reads.
    """
    import numpy as np

    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(proba, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        rows = int(mask.sum())
        out.append((rows, proba[mask].mean(), y[mask].mean()) if rows else (0, float("nan"), float("nan")))
    return out


def calibration_error(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the row-weighted gap between mean score and positive rate
    over equal-width score bins."""
    total = 0.0
    for rows, mean_score, positive_rate in calibration_bins(y, proba, bins):
        if rows:
            total += rows * abs(mean_score - positive_rate)
    return float(total / len(y))


def classification_metrics(y: np.ndarray, proba: np.ndarray) -> tuple[dict[str, float | None], list[str]]:
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    predicted = (proba >= DECISION_THRESHOLD).astype(int)
    notes: list[str] = []
    metrics: dict[str, float | None] = {
        "accuracy": float(accuracy_score(y, predicted)),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "calibration_error": calibration_error(y, proba),
        "brier": float(np.mean((proba - y) ** 2)),
    }
    if len(np.unique(y)) == 2:
        metrics["roc_auc"] = float(roc_auc_score(y, proba))
    else:
        metrics["roc_auc"] = None
        notes.append("roc_auc is undefined: the labels hold a single class")
    return metrics, notes


def group_fairness(
    y: np.ndarray, predicted: np.ndarray, groups: pd.Series, *, min_group_size: int = 1
) -> GroupFairness:
    """fairlearn's MetricFrame by group, with demographic parity and equalized odds differences.

    Every group is in ``by_group``; the gaps compare only groups of at least ``min_group_size``
    rows, since a rate over three rows is noise: a handful of rows with a new or missing value
    would otherwise make the gap about 0.9, fail the fairness checks and block promotion.
    """
    import numpy as np
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score

    groups = groups.astype(str).where(groups.notna(), "missing")
    frame = MetricFrame(
        metrics={
            "count": lambda yt, yp: len(yt),
            "accuracy": accuracy_score,
            "selection_rate": selection_rate,
            "true_positive_rate": true_positive_rate,
            "false_positive_rate": false_positive_rate,
        },
        y_true=y,
        y_pred=predicted,
        sensitive_features=groups,
    )
    by_group = {
        str(group): {k: (None if v is None or np.isnan(v) else float(v)) for k, v in row.items()}
        for group, row in frame.by_group.to_dict(orient="index").items()
    }
    sizes = groups.value_counts()
    too_small = {str(g): int(n) for g, n in sizes.items() if n < min_group_size}
    keep = (~groups.isin(list(too_small))).to_numpy()
    kept_y, kept_pred, kept_groups = y[keep], predicted[keep], groups[keep]
    comparable = kept_groups.nunique() >= 2
    both_classes_everywhere = comparable and all(
        len(np.unique(kept_y[(kept_groups == g).to_numpy()])) == 2 for g in kept_groups.unique()
    )
    return GroupFairness(
        feature=str(groups.name),
        demographic_parity_difference=(
            float(demographic_parity_difference(kept_y, kept_pred, sensitive_features=kept_groups))
            if comparable
            else None
        ),
        equalized_odds_difference=(
            float(equalized_odds_difference(kept_y, kept_pred, sensitive_features=kept_groups))
            if both_classes_everywhere
            else None
        ),
        by_group=by_group,
        too_small=dict(sorted(too_small.items())),
    )


def evaluate(y: np.ndarray, proba: np.ndarray, sensitive: pd.DataFrame, *, min_group_size: int = 1) -> Evaluation:
    """Metrics and per-group fairness of positive-class scores ``proba`` against labels ``y``;
    groups under ``min_group_size`` rows (the spec's ``gates.min_group_size``; 1 counts every
    group) are reported as too small and left out of the gaps.

    Raises:
        ValueError: no rows, or labels and scores of different lengths.
    """
    import numpy as np

    y = np.asarray(y, dtype=int)
    proba = np.asarray(proba, dtype=float)
    if len(y) == 0 or len(y) != len(proba):
        raise ValueError(f"evaluation needs labelled rows: got {len(y)} labels and {len(proba)} scores")
    metrics, notes = classification_metrics(y, proba)
    predicted = (proba >= DECISION_THRESHOLD).astype(int)
    fairness = [
        group_fairness(y, predicted, sensitive[c].reset_index(drop=True), min_group_size=min_group_size)
        for c in sensitive.columns
    ]
    return Evaluation(
        metrics=metrics,
        rows=int(len(y)),
        positive_rate=float(y.mean()),
        predicted_positive_rate=float(predicted.mean()),
        fairness=fairness,
        notes=notes,
    )
