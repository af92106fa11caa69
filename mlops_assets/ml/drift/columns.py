"""A frame's columns as the drift statistics read them, and the errors for input they cannot read.

NaN, None, ``pd.NA`` and +/-inf are dropped per column, as Evidently's ``ValueDrift`` does;
booleans in a numerical column are 0/1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd


class DriftInputError(ValueError):
    """The batch (or the reference) cannot be checked as given; the message names the columns."""


def require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DriftInputError(f"the {what} is missing profiled column(s): {missing}")


def is_bool(series: pd.Series) -> bool:
    return pd.api.types.is_bool_dtype(series.dtype)


def is_integer_dtype(series: pd.Series) -> bool:
    return pd.api.types.is_integer_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)


def finite_numeric(series: pd.Series, name: str, what: str) -> tuple[np.ndarray, bool]:
    """The finite values of a numerical column as float64 (NaN, None, pd.NA and +/-inf dropped).

    The flag says whether the array is a private copy (safe to sort in place) rather than a view
    of the caller's data.
    """
    dtype = series.dtype
    if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
        raise DriftInputError(f"numerical column {name!r} in the {what} has non-numeric dtype {dtype}")
    owned = True
    if isinstance(dtype, np.dtype) and dtype == np.float64:
        values = series.to_numpy()
        owned = False
    elif isinstance(dtype, np.dtype):
        values = series.to_numpy().astype(np.float64)
    else:
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(values)
    if not finite.all():
        values, owned = values[finite], True
    return values, owned


def cleaned_series(series: pd.Series) -> pd.Series:
    """The column as Evidently tests it: +/-inf replaced by NaN, then NaN dropped (dtype kept)."""
    return series.replace([-np.inf, np.inf], np.nan).dropna().reset_index(drop=True)


def unique_sorted(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and counts of a sorted array (one pass, no second sort)."""
    if sorted_values.size == 0:
        return sorted_values, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], sorted_values[1:] != sorted_values[:-1])))
    counts = np.diff(np.append(starts, sorted_values.size)).astype(np.int64)
    return sorted_values[starts], counts


def category_counts(series: pd.Series) -> tuple[list[Any], np.ndarray]:
    """Distinct non-null values (Python scalars) and their counts; NaN, None and +/-inf are dropped."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy()
        categories = series.cat.categories
        counts = np.bincount(codes.astype(np.int64) + 1, minlength=len(categories) + 1)[1:]
        present = counts > 0
        keys = categories[present].tolist()
        counts = counts[present]
    else:
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        counts = np.bincount(codes.astype(np.int64) + 1, minlength=len(uniques) + 1)[1:]
        keys = uniques.tolist() if hasattr(uniques, "tolist") else list(uniques)
    keep = [not (isinstance(k, float) and math.isinf(k)) for k in keys]
    if not all(keep):
        keys = [k for k, ok in zip(keys, keep, strict=True) if ok]
        counts = counts[np.array(keep)]
    return keys, counts.astype(np.int64)


def check_category_value(column: str, value: Any) -> None:
    if isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value)):
        return
    raise DriftInputError(
        f"categorical column {column!r} has a value of type {type(value).__name__} ({value!r}); "
        "profiles store str, int, float and bool categories"
    )


def infer_column_kinds(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Evidently 0.7's automatic column typing (``infer_column_type``): (numerical, categorical).

    float -> numerical; int -> categorical if at most 10 distinct values, else numerical;
    bool and category -> categorical; str/object -> categorical unless more than half the values
    are distinct (then Evidently calls it text and the drift preset tests it differently, so it is
    left out here, as are datetimes and anything else).
    """
    numerical: list[str] = []
    categorical: list[str] = []
    for name in frame.columns:
        col = frame[name]
        dtype = col.dtype.name
        if dtype.startswith("float"):
            numerical.append(name)
        elif dtype.startswith("int"):
            (categorical if col.nunique() <= 10 else numerical).append(name)
        elif dtype in ("string", "str"):
            if col.nunique() <= col.count() * 0.5:
                categorical.append(name)
        elif dtype == "object":
            values = col.dropna()
            strings = values.size > 0 and isinstance(values.iloc[0], str) and isinstance(values.iloc[-1], str)
            if strings and col.nunique() <= col.count() * 0.5:
                categorical.append(name)
        elif dtype in ("bool", "category"):
            categorical.append(name)
    return numerical, categorical
