"""The per-batch drift check: Evidently's DataDriftPreset verdicts from a stored profile, without Evidently."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from mlops_assets.ml.drift.columns import (
    DriftInputError,
    category_counts,
    finite_numeric,
    is_integer_dtype,
    require_columns,
    unique_sorted,
)
from mlops_assets.ml.drift.methods import BINNED_ABOVE_VALUES, FEW_VALUES, WASSERSTEIN_MIN_NORM, DriftPolicy, resolve
from mlops_assets.ml.drift.profile import NumericReference, ReferenceProfile
from mlops_assets.ml.drift.result import ALL_NULL_NOTE, ColumnDrift, DriftResult, column_verdict, dataset_result
from mlops_assets.ml.drift.stats import (
    binned_score,
    count_score,
    ks_p_value,
    sturges_binned,
    wasserstein_distance,
)

# Below this many rows a batch is checked on the calling thread: with short numpy calls the GIL
# hand-offs between column threads cost more than the second core gives.
_PARALLEL_MIN_ROWS = 200_000
# Frozen, so one shared default is safe: Evidently's defaults.
_DEFAULT_POLICY = DriftPolicy()


def detect_drift(
    profile: ReferenceProfile,
    current: pd.DataFrame,
    policy: DriftPolicy = _DEFAULT_POLICY,
    *,
    max_workers: int | None = None,
) -> DriftResult:
    """Evidently's DataDriftPreset verdicts for ``current`` against ``profile``, without Evidently.

    Columns are checked in a thread pool of ``max_workers`` (default: the CPUs this process may
    use) when the batch has at least 200k rows. Raises
    ``DriftInputError`` for an empty batch, a missing profiled column (named) or a numerical column
    of non-numeric dtype.
    """
    require_columns(current, profile.columns, "batch")
    if len(current) == 0:
        raise DriftInputError("the batch has no rows")
    known = set(profile.columns)
    ignored = [str(c) for c in current.columns if c not in known]
    jobs: list[Callable[[], ColumnDrift]] = [
        (lambda name=name: _numerical_drift(name, profile.numeric_column(name), current[name], policy))
        for name in profile.numerical
    ] + [(lambda name=name: _categorical_drift(name, profile, current[name], policy)) for name in profile.categorical]
    workers = max_workers if max_workers is not None else _available_cpus()
    if workers > 1 and len(jobs) > 1 and len(current) >= _PARALLEL_MIN_ROWS:
        with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            columns = list(pool.map(lambda job: job(), jobs))
    else:
        columns = [job() for job in jobs]
    return dataset_result(columns, policy.drift_share, len(current), ignored)


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _numerical_drift(name: str, ref: NumericReference, series: pd.Series, policy: DriftPolicy) -> ColumnDrift:
    values, owned = finite_numeric(series, name, "batch")
    if values.size == 0:
        method, threshold = resolve("num", policy, ref.n, lambda: ref.values.size)
        return column_verdict(name, "num", method, threshold, math.nan, ALL_NULL_NOTE)
    if owned:
        values.sort()
    else:
        values = np.sort(values)
    distinct: list[tuple[np.ndarray, np.ndarray]] = []

    def current_distinct() -> tuple[np.ndarray, np.ndarray]:
        if not distinct:
            distinct.append(unique_sorted(values))
        return distinct[0]

    def n_values() -> int:
        if ref.values.size > FEW_VALUES:
            return ref.values.size
        cur_values, _ = current_distinct()
        return int(np.union1d(ref.values, cur_values).size)

    method, threshold = resolve("num", policy, ref.n, n_values)
    if method.name == "wasserstein":
        score = wasserstein_distance(ref, values) / max(ref.std, WASSERSTEIN_MIN_NORM)
    elif method.name == "ks":
        score = ks_p_value(ref, values)
    elif ref.values.size > BINNED_ABOVE_VALUES:
        ref_pct, cur_pct = sturges_binned(ref, values, is_integer_dtype(series))
        score = binned_score(method.name, ref_pct, cur_pct)
    else:
        cur_values, cur_counts = current_distinct()
        keys = np.union1d(ref.values, cur_values)
        ref_aligned = np.zeros(keys.size, dtype=np.int64)
        ref_aligned[np.searchsorted(keys, ref.values)] = ref.counts_or_ones()
        cur_aligned = np.zeros(keys.size, dtype=np.int64)
        cur_aligned[np.searchsorted(keys, cur_values)] = cur_counts
        score = count_score(method.name, ref_aligned, cur_aligned, first=0)
    return column_verdict(name, "num", method, threshold, score)


def _categorical_drift(name: str, profile: ReferenceProfile, series: pd.Series, policy: DriftPolicy) -> ColumnDrift:
    ref = profile.categorical_column(name)
    keys, counts = category_counts(series)
    if not keys:
        method, threshold = resolve("cat", policy, ref.n, lambda: len(ref.categories))
        return column_verdict(name, "cat", method, threshold, math.nan, ALL_NULL_NOTE)
    index = profile.category_positions(name)
    positions = np.fromiter((index.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
    unseen = positions < 0
    n_unseen = int(unseen.sum())
    k = len(ref.categories)
    positions[unseen] = np.arange(k, k + n_unseen)
    ref_aligned = np.concatenate([ref.counts, np.zeros(n_unseen, dtype=np.int64)])
    cur_aligned = np.zeros(k + n_unseen, dtype=np.int64)
    cur_aligned[positions] = counts
    method, threshold = resolve("cat", policy, ref.n, lambda: k + n_unseen)
    first = 0
    if method.name == "z":
        all_keys = list(ref.categories) + [key for key, u in zip(keys, unseen, strict=True) if u]
        # An unorderable mix makes Evidently raise; the two-sided p-value does not depend on the choice.
        with contextlib.suppress(TypeError):
            first = all_keys.index(min(all_keys))
    score = count_score(method.name, ref_aligned, cur_aligned, first=first)
    note = f"{n_unseen} categor{'y' if n_unseen == 1 else 'ies'} unseen in the reference" if n_unseen else None
    return column_verdict(name, "cat", method, threshold, score, note)
