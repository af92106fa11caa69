"""Attribution drift: does a batch's global importance ranking still match the training baseline?

The metric is SageMaker Clarify's (model-monitor feature-attribution drift): with ``a(f)`` the
baseline importance of column ``f`` (mean absolute contribution on the training rows), the
baseline ranking ``F`` and the batch's ranking ``F'`` (columns by the batch's own importance,
largest first),

    nDCG = sum_i a(F'_i) / log2(i + 1)  /  sum_i a(F_i) / log2(i + 1),   i = 1..n.

It is 1 when the batch ranks the columns as training did and falls as columns that mattered in
training sink in the batch's ranking; the columns' weights come from the baseline, so swapping two
columns of nearly equal importance costs almost nothing. Clarify flags drift below 0.9, the
default threshold here. Ties in the batch's importance keep the baseline's order, so a tie is
never a drift.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

DriftMetric = Literal["ndcg"]
DEFAULT_THRESHOLD = 0.9


@dataclass(frozen=True)
class RankMove:
    """One column whose rank differs between the baseline and the batch (1 = most important)."""

    column: str
    baseline_rank: int
    batch_rank: int


@dataclass(frozen=True)
class AttributionDrift:
    """The attribution-drift decision for one batch, with everything that went into it."""

    metric: DriftMetric
    value: float
    threshold: float
    drifted: bool
    baseline_ranking: list[str]
    batch_ranking: list[str]
    moves: list[RankMove]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ranking(importance: Mapping[str, float], *, order: list[str] | None = None) -> list[str]:
    """Columns by importance, largest first; ties keep ``order`` (default: the mapping's order)."""
    tie_order = {c: i for i, c in enumerate(order if order is not None else list(importance))}
    return sorted(importance, key=lambda c: (-importance[c], tie_order[c]))


def ndcg(baseline: Mapping[str, float], batch_ranking: list[str]) -> float:
    """Clarify's nDCG of ``batch_ranking`` with the baseline importance as relevance."""
    ideal = ranking(baseline)
    ideal_gain = sum(baseline[c] / math.log2(i + 2) for i, c in enumerate(ideal))
    gain = sum(baseline[c] / math.log2(i + 2) for i, c in enumerate(batch_ranking))
    return gain / ideal_gain


def decide_attribution_drift(
    *,
    baseline: Mapping[str, float],
    batch: Mapping[str, float],
    threshold: float = DEFAULT_THRESHOLD,
    metric: DriftMetric = "ndcg",
) -> AttributionDrift:
    """Compares a batch's global importance with the training baseline's.

    Args:
        baseline: mean absolute contribution per column on the training rows.
        batch: the same for the batch, over the same columns.
        threshold: drift when the metric is below this.
        metric: ``ndcg`` (the only one so far).

    Raises:
        ValueError: the column sets differ (names them), an importance is negative or not
            finite, the baseline is zero for every column (nothing to rank against), or an
            unknown metric.
    """
    if metric != "ndcg":
        raise ValueError(f"explain.drift_metric: unknown metric {metric!r}; known: ['ndcg']")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"explain.drift_threshold: {threshold} is not in (0, 1]")
    if set(baseline) != set(batch):
        raise ValueError(
            f"batch importance: columns {sorted(set(batch) - set(baseline))} are not in the baseline and "
            f"{sorted(set(baseline) - set(batch))} are missing from the batch"
        )
    for name, importance in (("baseline", baseline), ("batch", batch)):
        bad = sorted(c for c, v in importance.items() if not math.isfinite(v) or v < 0)
        if bad:
            raise ValueError(f"{name} importance: columns {bad} are negative or not finite")
    if not any(v > 0 for v in baseline.values()):
        raise ValueError("baseline importance: zero for every column, so there is no ranking to compare with")
    base_order = ranking(baseline)
    batch_order = ranking(batch, order=base_order)
    value = ndcg(baseline, batch_order)
    drifted = value < threshold
    base_rank = {c: i + 1 for i, c in enumerate(base_order)}
    moves = [
        RankMove(column=c, baseline_rank=base_rank[c], batch_rank=i + 1)
        for i, c in enumerate(batch_order)
        if base_rank[c] != i + 1
    ]
    return AttributionDrift(
        metric=metric,
        value=value,
        threshold=threshold,
        drifted=drifted,
        baseline_ranking=base_order,
        batch_ranking=batch_order,
        moves=moves,
        reason=_reason(value, threshold, drifted, moves, baseline, base_order),
    )


def _reason(
    value: float,
    threshold: float,
    drifted: bool,
    moves: list[RankMove],
    baseline: Mapping[str, float],
    base_order: list[str],
) -> str:
    head = f"nDCG {value:.3f} {'<' if drifted else '>='} {threshold:g}"
    if not moves:
        return f"{head}: the batch ranks every column as training did (top: {', '.join(base_order[:3])})"
    total = sum(baseline.values())
    # The moves that cost the most gain first: a column that mattered in training and sank.
    worst = sorted(moves, key=lambda m: -baseline[m.column] * abs(m.batch_rank - m.baseline_rank))[:3]
    described = "; ".join(
        f"{m.column} {'fell' if m.batch_rank > m.baseline_rank else 'rose'} from rank {m.baseline_rank} to "
        f"{m.batch_rank} ({baseline[m.column] / total:.0%} of training importance)"
        for m in worst
    )
    verdict = "the batch's explanations no longer rank the columns as training did" if drifted else "ranking holds"
    return f"{head}, {verdict}: {described}"
