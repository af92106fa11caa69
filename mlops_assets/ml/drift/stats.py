"""The statistics kernels: each mirrors one Evidently stattest module, on the profile's counts instead of raw rows.

Every kernel gives the score of the scipy call Evidently makes on the full reference and batch
(the tests hold them to 1e-12 against scipy). scipy is imported inside the kernels that need it:
the default methods on a large reference (normed Wasserstein, Jensen-Shannon) never load
``scipy.stats``, which costs about a second to import.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from mlops_assets.ml.drift.columns import unique_sorted
from mlops_assets.ml.drift.methods import KS_EXACT_MAX_N

if TYPE_CHECKING:
    from mlops_assets.ml.drift.profile import NumericReference


def _scipy_stats() -> ModuleType:
    from scipy import stats

    return stats


def wasserstein_distance(ref: NumericReference, cur: np.ndarray) -> float:
    """``scipy.stats.wasserstein_distance(reference, current)`` from the profile and the sorted batch.

    W1 is the integral over u in (0, 1] of |Q_ref(u) - Q_cur(u)|. In units of 1/(N*n) the
    reference quantile function steps at ``cum_ref * n`` and the batch's at ``cum_cur * N``; every
    interval of the merged partition ends at one of those breakpoints, so the integral is a sum
    over reference breakpoints plus a sum over batch breakpoints, each with the interval's length
    and the two quantile values on it, all found by integer arithmetic on the breakpoints. A batch
    with many repeated values is first reduced to distinct values and counts.
    """
    n = cur.size
    distinct = np.count_nonzero(cur[1:] != cur[:-1]) + 1
    if distinct * 4 <= n:
        values, counts = unique_sorted(cur)
        return quantile_l1(ref.values, ref.counts, values, counts)
    return quantile_l1(ref.values, ref.counts, cur, None)


def quantile_l1(r: np.ndarray, r_counts: np.ndarray | None, c: np.ndarray, c_counts: np.ndarray | None) -> float:
    """Integral of |Q_r - Q_c| for two sorted value arrays with per-value counts.

    ``None`` counts mean one occurrence per element, so a value may then repeat as separate
    elements; both arrays must be sorted.
    """
    m, k = r.size, c.size
    big_n = m if r_counts is None else int(r_counts.sum())
    n = k if c_counts is None else int(c_counts.sum())
    if big_n * n >= 2**62:
        raise ValueError("reference x batch rows too large for exact int64 quantile arithmetic")
    r_break = np.arange(n, (m + 1) * n, n, dtype=np.int64) if r_counts is None else np.cumsum(r_counts) * n
    c_break = None if c_counts is None else np.cumsum(c_counts) * big_n
    # below[i]: batch breakpoints strictly below r_break[i], i.e. the batch segment just below it.
    if c_break is None:
        below = r_break - 1
        below //= big_n
        start = below * big_n
    else:
        below = np.searchsorted(c_break, r_break, side="left")
        start = np.concatenate(([0], c_break))[below]
    # The merged interval ending at r_break[i] starts at the later of the previous breakpoints.
    np.maximum(start[1:], r_break[:-1], out=start[1:])
    np.subtract(r_break, start, out=start)
    gap = c[below]
    np.subtract(r, gap, out=gap)
    np.abs(gap, out=gap)
    # Multiply-and-sum rather than np.dot: BLAS ddot wakes its thread pool, which costs more than
    # the product at these sizes, and numpy's pairwise sum is the more accurate of the two.
    gap *= start
    total = float(gap.sum())
    del gap, start
    # seg[j]: reference breakpoints at or below c_break[j]; the one before is the interval's start
    # (a reference breakpoint equal to c_break[j] leaves an empty interval, whose seg may be m).
    if c_break is None:
        seg = np.bincount(below, minlength=k)[:k]
        np.cumsum(seg, out=seg)
    else:
        seg = np.searchsorted(r_break, c_break, side="right")
    inner = np.concatenate(([0], r_break))[seg]
    if c_break is None:
        # Batch segment j is (j*N, (j+1)*N]; the interval is shortened by (inner - j*N) when positive.
        np.subtract(inner, np.arange(0, k * big_n, big_n, dtype=np.int64), out=inner)
        np.maximum(inner, 0, out=inner)
        shortfall = inner.astype(np.float64)
    else:
        c_start = np.empty_like(c_break)
        c_start[0] = 0
        c_start[1:] = c_break[:-1]
        np.maximum(inner, c_start, out=inner)
        np.subtract(c_break, inner, out=inner)
        shortfall = None
        c_len = inner.astype(np.float64)
    del inner
    np.minimum(seg, m - 1, out=seg)
    gap = r[seg]
    np.subtract(gap, c, out=gap)
    np.abs(gap, out=gap)
    if shortfall is not None:
        total += float(big_n) * float(gap.sum())
        gap *= shortfall
        total -= float(gap.sum())
    else:
        gap *= c_len
        total += float(gap.sum())
    return total / (big_n * n)


def ks_p_value(ref: NumericReference, cur: np.ndarray) -> float:
    """``scipy.stats.ks_2samp(reference, current).pvalue`` (two-sided, method="auto")."""
    r, n = ref.values, cur.size
    cum = ref.cumcounts()
    big_n = int(cum[-1])
    prev = cum - ref.counts_or_ones()
    right = np.searchsorted(cur, r, side="right")
    left = np.searchsorted(cur, r, side="left")
    # F - G just after each reference value; G - F just before it (at the last batch value below).
    up = cum * n - right * big_n
    down = left * big_n - prev * n
    i_up, i_down = int(np.argmax(up)), int(np.argmax(down))
    # Same floating-point expressions as scipy: cdf1 - cdf2 with cdf = count / size.
    max_s = cum[i_up] / big_n - right[i_up] / n
    min_s = float(np.clip(-(prev[i_down] / big_n - left[i_down] / n), 0, 1))
    if min_s > max_s:
        d, i, j = min_s, int(prev[i_down]), int(left[i_down])
    else:
        d, i, j = max_s, int(cum[i_up]), int(right[i_up])
    if max(big_n, n) <= KS_EXACT_MAX_N:
        # The exact p-value depends on (N, n, d) only: a two-valued sample pair with the same sizes
        # and the same statistic lets scipy's public function compute it.
        a = np.repeat(np.array([0.0, 1.0]), [i, big_n - i])
        b = np.repeat(np.array([0.0, 1.0]), [j, n - j])
        return float(_scipy_stats().ks_2samp(a, b).pvalue)
    hi, lo = sorted([float(big_n), float(n)], reverse=True)
    en = hi * lo / (hi + lo)
    return float(np.clip(_scipy_stats().kstwo.sf(d, np.round(en)), 0, 1))


def count_score(method: str, ref_counts: np.ndarray, cur_counts: np.ndarray, *, first: int) -> float:
    """Evidently's count-based stattests on aligned per-value counts (union of reference and batch values).

    ``first`` is the position of the smallest value, the one Evidently's Z-test tests against.
    """
    big_n, n = int(ref_counts.sum()), int(cur_counts.sum())
    if method == "chisquare":
        f_exp = ref_counts * (n / big_n)
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(_scipy_stats().chisquare(cur_counts, f_exp)[1])
    if method == "z":
        return _z_p_value(ref_counts, cur_counts, first)
    ref_pct, cur_pct = ref_counts / big_n, cur_counts / n
    return binned_score(method, ref_pct, cur_pct)


def _z_p_value(ref_counts: np.ndarray, cur_counts: np.ndarray, first: int) -> float:
    """Evidently's ``_z_stat_test``: two-proportion z-test on 'equals the smallest value'."""
    if (
        np.count_nonzero(ref_counts) == 1
        and np.count_nonzero(cur_counts) == 1
        and np.array_equal(ref_counts > 0, cur_counts > 0)
    ):
        return 1.0
    n1, n2 = int(ref_counts.sum()), int(cur_counts.sum())
    p1 = float(n1 - ref_counts[first]) / n1
    p2 = float(n2 - cur_counts[first]) / n2
    p = float(p1 * n1 + p2 * n2) / (n1 + n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p1 - p2) / np.sqrt(p * (1 - p) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - _scipy_stats().norm.cdf(np.abs(z))))


def binned_score(method: str, ref_pct: np.ndarray, cur_pct: np.ndarray) -> float:
    if method == "jensenshannon":
        from scipy.spatial import distance

        return float(distance.jensenshannon(ref_pct, cur_pct, None))
    ref_pct, cur_pct = _fill_zeroes(ref_pct), _fill_zeroes(cur_pct)
    if method == "psi":
        return float(np.sum((ref_pct - cur_pct) * np.log(ref_pct / cur_pct)))
    if method == "kl_div":
        return float(_scipy_stats().entropy(ref_pct, cur_pct))
    raise AssertionError(method)


def _fill_zeroes(pct: np.ndarray) -> np.ndarray:
    """Evidently's ``get_binned_data(feel_zeroes=True)`` replacement of empty bins."""
    pct = pct.astype(np.float64, copy=True)
    smallest = min(pct[pct != 0])
    np.place(pct, pct == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001)
    return pct


def sturges_binned(ref: NumericReference, cur: np.ndarray, cur_integer: bool) -> tuple[np.ndarray, np.ndarray]:
    """Evidently's ``get_binned_data`` for a numerical reference with more than 20 distinct values.

    ``np.histogram_bin_edges(concat(ref, cur), "sturges")`` then ``np.histogram`` with those
    edges, reproduced from the sorted values: same edges (numpy's arithmetic), same bin membership
    (left-closed bins, last bin closed, as numpy's searchsorted path).
    """
    size = ref.n + cur.size
    lo = min(ref.values[0], cur[0])
    hi = max(ref.values[-1], cur[-1])
    integer = ref.integer and cur_integer
    first, last = (lo, hi) if lo != hi else (lo - 0.5, hi + 0.5)
    width = (hi - lo) / (np.log2(size) + 1.0)
    if width:
        if integer and width < 1:
            width = 1
        n_bins = int(np.ceil((last - first) / width))
    else:
        n_bins = 1
    edges = np.linspace(first, last, n_bins + 1, endpoint=True, dtype=np.float64)

    def bin_counts(sorted_values: np.ndarray, cumcounts: np.ndarray | None) -> np.ndarray:
        positions = np.concatenate(
            (np.searchsorted(sorted_values, edges[:-1], "left"), np.searchsorted(sorted_values, edges[-1:], "right"))
        )
        if cumcounts is not None:
            positions = np.concatenate(([0], cumcounts))[positions]
        return np.diff(positions)

    ref_counts = bin_counts(ref.values, None if ref.counts is None else ref.cumcounts())
    cur_counts = bin_counts(cur, None)
    return ref_counts / ref.n, cur_counts / cur.size
