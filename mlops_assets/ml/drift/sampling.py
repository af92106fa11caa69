"""Deterministic row samples on which Evidently's report picks the same methods as the full check.

docs/drift.md explains the default size and what sampling can and cannot change in a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlops_assets.ml.drift.columns import require_columns
from mlops_assets.ml.drift.methods import FEW_VALUES, SMALL_REFERENCE_ROWS

if TYPE_CHECKING:
    from mlops_assets.ml.drift.profile import ReferenceProfile

DEFAULT_SAMPLE_SIZE = 50_000


def sample_positions(
    frame: pd.DataFrame, numerical: Sequence[str], categorical: Sequence[str], size: int, seed: int
) -> np.ndarray:
    """Row positions of a deterministic sample on which Evidently selects the full data's methods.

    ``size`` rows uniformly at random (seeded), topped up so that every column keeps (a) more than
    1000 non-null rows if the full frame has more, or all its non-null rows if not, and (b) at
    least ``min(distinct, 6)`` distinct values. The whole frame is used when it has ``<= size`` rows.
    """
    n = len(frame)
    if n <= size:
        return np.arange(n)
    order = np.random.default_rng(seed).permutation(n)
    take = np.zeros(n, dtype=bool)
    take[order[:size]] = True
    for name in list(numerical) + list(categorical):
        col = frame[name]
        if name in numerical and (pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype)):
            valid = np.isfinite(col.to_numpy(dtype=np.float64, na_value=np.nan))
        else:
            valid = col.notna().to_numpy()
        n_valid = int(valid.sum())
        if n_valid <= SMALL_REFERENCE_ROWS:
            take |= valid
        else:
            short = SMALL_REFERENCE_ROWS + 1 - int((valid & take).sum())
            if short > 0:
                candidates = order[valid[order] & ~take[order]]
                take[candidates[:short]] = True
        need = FEW_VALUES + 1
        have = set(pd.unique(col[take & valid].to_numpy()).tolist())
        if len(have) >= need:
            continue
        codes, uniques = pd.factorize(col[valid].to_numpy())
        enough = min(len(uniques), need)
        first_rows = np.flatnonzero(valid)[np.unique(codes, return_index=True)[1]]
        for value, row in zip(uniques.tolist(), first_rows, strict=True):
            if len(have) >= enough:
                break
            if value not in have:
                take[row] = True
                have.add(value)
    return np.flatnonzero(take)


def clean_for_evidently(frame: pd.DataFrame, numerical: Sequence[str]) -> pd.DataFrame:
    out = frame.copy()
    for name in numerical:
        col = out[name]
        if pd.api.types.is_float_dtype(col.dtype) and isinstance(col.dtype, np.dtype):
            values = col.to_numpy(copy=True)
            values[np.isinf(values)] = np.nan
            out[name] = values
    return out


def sample_batch(profile: ReferenceProfile, current: pd.DataFrame, sample_size: int | None = None) -> pd.DataFrame:
    """The deterministic batch sample ``render_evidently_report`` hands to Evidently (profiled columns only)."""
    require_columns(current, profile.columns, "batch")
    size = DEFAULT_SAMPLE_SIZE if sample_size is None else int(sample_size)
    positions = sample_positions(current, profile.numerical, profile.categorical, size, profile.seed)
    sample = clean_for_evidently(current.iloc[positions][profile.columns], profile.numerical)
    return sample.reset_index(drop=True)
