"""Evidently 0.7's drift methods: their names, thresholds and verdict rules, the policy, and which method a column gets.

The selection follows Evidently's ``_get_default_stattest``
(``evidently/legacy/calculations/stattests/registry.py``); docs/drift.md has the table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

ColumnKind = Literal["num", "cat"]

# Evidently's _get_default_stattest switches families at this many reference rows (<= is "small").
SMALL_REFERENCE_ROWS = 1000
# Evidently's _get_default_stattest: at most this many distinct values selects the categorical test.
FEW_VALUES = 5
# Evidently's get_binned_data: a numerical reference with more distinct values than this is binned.
BINNED_ABOVE_VALUES = 20
# scipy.stats.ks_2samp(method="auto") is exact when max(n1, n2) is at most this (scipy's MAX_AUTO_N).
KS_EXACT_MAX_N = 10_000
# Evidently's wasserstein_distance_norm: the std used as the norm is at least this.
WASSERSTEIN_MIN_NORM = 0.001


@dataclass(frozen=True)
class Method:
    """One Evidently stattest: its name in a policy, its display label, default threshold and verdict rule."""

    name: str
    label: str
    default_threshold: float
    kinds: frozenset[str]
    score: Literal["p_value", "p_value_inclusive", "distance"]

    def drifted(self, score: float, threshold: float) -> bool:
        # Comparison operators copied from each Evidently stattest module; NaN never drifts there.
        if self.score == "p_value":
            return bool(score < threshold)
        if self.score == "p_value_inclusive":
            return bool(score <= threshold)
        return bool(score >= threshold)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("wasserstein", "Wasserstein distance (normed)", 0.1, frozenset({"num"}), "distance"),
        Method("ks", "K-S p_value", 0.05, frozenset({"num"}), "p_value_inclusive"),
        Method("jensenshannon", "Jensen-Shannon distance", 0.1, frozenset({"num", "cat"}), "distance"),
        Method("psi", "PSI", 0.1, frozenset({"num", "cat"}), "distance"),
        Method("kl_div", "Kullback-Leibler divergence", 0.1, frozenset({"num", "cat"}), "distance"),
        Method("chisquare", "chi-square p_value", 0.05, frozenset({"cat"}), "p_value"),
        Method("z", "Z-test p_value", 0.05, frozenset({"cat"}), "p_value"),
    )
}
SUPPORTED_METHODS: tuple[str, ...] = tuple(METHODS)
METHOD_BY_LABEL: dict[str, Method] = {m.label: m for m in METHODS.values()}


def method(name: str) -> Method:
    """The method called ``name``; raises ``ValueError`` listing the supported ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"drift method {name!r} is not reproduced by this engine; supported: {', '.join(SUPPORTED_METHODS)}"
        ) from None


def method_label(name: str) -> str:
    """Evidently's display name of a stattest (``"ks"`` -> ``"K-S p_value"``)."""
    return method(name).label


@dataclass(frozen=True)
class DriftPolicy:
    """Which Evidently stattest and threshold to use per column kind, and the dataset drift share.

    ``None`` means Evidently's automatic choice (method) or the method's Evidently default
    (threshold). A pinned method must be valid for the kind, as Evidently requires
    (e.g. ``"chisquare"`` and ``"z"`` are categorical-only, ``"wasserstein"`` and ``"ks"``
    numerical-only).
    """

    num_method: str | None = None
    cat_method: str | None = None
    num_threshold: float | None = None
    cat_threshold: float | None = None
    drift_share: float = 0.5

    def __post_init__(self) -> None:
        for kind, name in (("num", self.num_method), ("cat", self.cat_method)):
            if name is not None and kind not in method(name).kinds:
                label = "numerical" if kind == "num" else "categorical"
                raise ValueError(f"drift method {name!r} does not apply to {label} columns (as in Evidently)")
        for name, value in (("num_threshold", self.num_threshold), ("cat_threshold", self.cat_threshold)):
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        if not 0.0 <= self.drift_share <= 1.0:
            raise ValueError(f"drift_share must lie in [0, 1], got {self.drift_share!r}")


def resolve(kind: ColumnKind, policy: DriftPolicy, n_ref: int, n_values: Callable[[], int]) -> tuple[Method, float]:
    """The method and threshold for one column, as Evidently picks them.

    ``n_ref`` is the reference's count of usable values; ``n_values`` gives the distinct values of
    reference and batch together, and is called only when the choice depends on it (it may cost a
    pass over the batch).
    """
    pinned = policy.num_method if kind == "num" else policy.cat_method
    if pinned is not None:
        chosen = method(pinned)
    elif n_ref > SMALL_REFERENCE_ROWS:
        if kind == "cat":
            chosen = METHODS["jensenshannon"]
        else:
            chosen = METHODS["jensenshannon" if n_values() <= FEW_VALUES else "wasserstein"]
    elif kind == "num" and n_values() > FEW_VALUES:
        chosen = METHODS["ks"]
    else:
        chosen = METHODS["chisquare" if n_values() > 2 else "z"]
    threshold = policy.num_threshold if kind == "num" else policy.cat_threshold
    return chosen, chosen.default_threshold if threshold is None else float(threshold)
