"""Great Expectations 1.24.1's results for the expectation types the product generates, with pandas alone.

``evaluate`` gives, for one expectation on one pandas frame, what GE's pandas execution engine
reports with ``result_format="SUMMARY"``: the same success, the same result dict (element and
unexpected counts, the percentages, observed values, the partial unexpected list, its counts and
its index list in GE's order) and the same exception message where GE's metric raises. Each
function names the GE source it follows; the arithmetic and the pandas calls are GE's own, so
the values are equal, not merely close. tests/ml/test_validation.py compares the two on a corpus
of every edge case, and docs/validation.md says why this exists (importing GE costs seconds on
every batch; its per-expectation overhead grows with rows).

Only what it reproduces is evaluated here: ``reproducible`` refuses another expectation type, a
keyword GE supports and this does not (``row_condition``, ``result_format``, ...), a value GE's
pydantic models would coerce or reject differently, and a frame with a named or multi-level
index or repeated column names; ``evaluate`` raises ``NotReproduced`` when the data takes a path
it does not follow. The caller hands those to GE.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# GE's parse_result_format("SUMMARY") default (expectation_configuration.py).
PARTIAL_UNEXPECTED_COUNT = 20

_SCALAR = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class ExpectationResult:
    """One expectation's outcome as GE reports it: success, the SUMMARY result dict, and a metric's error."""

    success: bool
    result: dict[str, Any] = field(default_factory=dict)
    exception_message: str | None = None


class NotReproduced(Exception):
    """The data takes a path through GE that this module does not follow; let GE evaluate it."""


def reproducible(type_: str, kwargs: Mapping[str, Any]) -> bool:
    """Whether ``evaluate`` gives GE's result for this expectation type and these kwargs on any frame it accepts."""
    spec = _KWARGS.get(type_)
    if spec is None or not set(kwargs) <= spec.keys() or not _REQUIRED[type_] <= set(kwargs):
        return False
    if not all(check(kwargs[key]) for key, check in spec.items() if key in kwargs):
        return False
    # GE's models reject these when the expectation is built; GE raises its own error for them.
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if type_ == "ExpectTableRowCountToBeBetween":
        return low is None or high is None or low <= high
    if type_ == "ExpectColumnValuesToBeBetween":
        return low is not None or high is not None
    return True


def frame_reproducible(frame: pd.DataFrame) -> bool:
    """Whether GE reports unexpected rows of this frame by plain index values, as ``evaluate`` does."""
    return frame.index.nlevels == 1 and frame.index.name is None and frame.columns.is_unique


def evaluate(frame: pd.DataFrame, type_: str, kwargs: Mapping[str, Any]) -> ExpectationResult:
    """GE 1.24.1's SUMMARY result of one expectation on ``frame``.

    Raises ``NotReproduced`` for what ``reproducible`` and ``frame_reproducible`` refuse and for
    data on which GE would take a path this module does not follow.
    """
    if not reproducible(type_, kwargs) or not frame_reproducible(frame):
        raise NotReproduced(f"{type_} with {sorted(kwargs)} is evaluated by Great Expectations")
    column = kwargs.get("column")
    if column is not None and type_ != "ExpectColumnToExist" and column not in frame.columns:
        raise NotReproduced(f"column {column!r} is missing")
    return _EVALUATORS[type_](frame, kwargs)


# ---- the kwargs each type takes here, checked as GE's pydantic models would accept them unchanged


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_bound(value: Any) -> bool:
    """A number GE's model turns into a float (an int beyond float range fails there)."""
    if not _is_number(value):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _is_mostly(value: Any) -> bool:
    return _is_number(value) and 0.0 <= value <= 1.0


def _is_column(value: Any) -> bool:
    return isinstance(value, str) and len(value) > 0


def _is_optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_type_list(value: Any) -> bool:
    return value is None or (isinstance(value, list | tuple) and all(isinstance(t, str) for t in value))


def _is_value_set(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, _SCALAR) for v in value)


_KWARGS: dict[str, dict[str, Callable[[Any], bool]]] = {
    "ExpectTableRowCountToBeBetween": {
        "min_value": _is_optional(_is_int),
        "max_value": _is_optional(_is_int),
        "strict_min": _is_bool,
        "strict_max": _is_bool,
    },
    "ExpectColumnToExist": {"column": _is_column, "column_index": _is_optional(_is_int)},
    "ExpectColumnValuesToBeInTypeList": {"column": _is_column, "type_list": _is_type_list, "mostly": _is_mostly},
    "ExpectColumnValuesToNotBeNull": {"column": _is_column, "mostly": _is_mostly},
    "ExpectColumnValuesToBeBetween": {
        "column": _is_column,
        "min_value": _is_optional(_is_bound),
        "max_value": _is_optional(_is_bound),
        "strict_min": _is_bool,
        "strict_max": _is_bool,
        "mostly": _is_mostly,
    },
    "ExpectColumnValuesToBeInSet": {"column": _is_column, "value_set": _is_value_set, "mostly": _is_mostly},
}
_REQUIRED: dict[str, set[str]] = {
    "ExpectTableRowCountToBeBetween": set(),
    "ExpectColumnToExist": {"column"},
    "ExpectColumnValuesToBeInTypeList": {"column"},
    "ExpectColumnValuesToNotBeNull": {"column"},
    "ExpectColumnValuesToBeBetween": {"column"},
    "ExpectColumnValuesToBeInSet": {"column", "value_set"},
}
FAST_TYPES: frozenset[str] = frozenset(_KWARGS)


# ---- the expectations


def _row_count(frame: pd.DataFrame, kwargs: Mapping[str, Any]) -> ExpectationResult:
    """BatchExpectation._validate_metric_value_between on ``table.row_count`` (``df.shape[0]``)."""
    value = frame.shape[0]
    min_value, max_value = kwargs.get("min_value"), kwargs.get("max_value")
    strict_min, strict_max = kwargs.get("strict_min", False), kwargs.get("strict_max", False)
    if min_value is not None:
        above_min = value > min_value if strict_min else value >= min_value
    else:
        above_min = True
    if max_value is not None:
        below_max = value < max_value if strict_max else value <= max_value
    else:
        below_max = True
    return ExpectationResult(bool(above_min and below_max), {"observed_value": value})


def _column_to_exist(frame: pd.DataFrame, kwargs: Mapping[str, Any]) -> ExpectationResult:
    """ExpectColumnToExist._validate on ``table.columns``."""
    columns = list(frame.columns)
    name, index = kwargs["column"], kwargs.get("column_index")
    # GE tests the index for truth, so column_index=0 checks presence only.
    if index:
        try:
            success = columns[index] == name
        except IndexError:
            success = False
    else:
        success = name in columns
    return ExpectationResult(bool(success))


def _not_null(frame: pd.DataFrame, kwargs: Mapping[str, Any]) -> ExpectationResult:
    """ExpectColumnValuesToNotBeNull._validate: ``column_values.nonnull`` over every row, nulls not filtered."""
    series = frame[kwargs["column"]]
    total = frame.shape[0]
    unexpected, values, index = _unexpected(series, ~series.isnull())
    mostly = kwargs.get("mostly", 1)
    success = True if total == 0 else (total - unexpected) / total >= mostly
    return _format_map_output(success, total, None, unexpected, values, index)


def _in_type_list(frame: pd.DataFrame, kwargs: Mapping[str, Any]) -> ExpectationResult:
    """ExpectColumnValuesToBeInTypeList._validate: the dtype for typed columns, each value for object columns."""
    column, type_list = kwargs["column"], kwargs.get("type_list")
    dtype = frame.dtypes[column]
    if dtype.type.__name__ == "object_" and type_list is not None:
        return _column_map(frame, kwargs, lambda values: _in_type_list_condition(values, type_list))
    success = True if type_list is None else dtype in _dtype_types(type_list)
    return ExpectationResult(bool(success), {"observed_value": dtype.type.__name__})


def _between(frame: pd.DataFrame, kwargs: Mapping[str, Any]) -> ExpectationResult:
    """ColumnMapExpectation._validate on ``column_values.between`` (column_values_between.py)."""
    # GE's model coerces int bounds to float (Comparable is Union[float, ...], smart union).
    low = None if kwargs.get("min_value") is None else float(kwargs["min_value"])
    high = None if kwargs.get("max_value") is None else float(kwargs["max_value"])
    strict_min, strict_max = kwargs.get("strict_min", False), kwargs.get("strict_max", False)
    return _column_map(frame, kwargs, lambda values: _between_condition(values, low, high, strict_min, strict_max))


def _in_set(frame: pd.DataFrame, kwargs: Mapping[str, Any]) -> ExpectationResult:
    """ColumnMapExpectation._validate on ``column_values.in_set`` (column_values_in_set.py)."""
    value_set = list(kwargs["value_set"])
    return _column_map(frame, kwargs, lambda values: values.isin(value_set))


_EVALUATORS: dict[str, Callable[[pd.DataFrame, Mapping[str, Any]], ExpectationResult]] = {
    "ExpectTableRowCountToBeBetween": _row_count,
    "ExpectColumnToExist": _column_to_exist,
    "ExpectColumnValuesToBeInTypeList": _in_type_list,
    "ExpectColumnValuesToNotBeNull": _not_null,
    "ExpectColumnValuesToBeBetween": _between,
    "ExpectColumnValuesToBeInSet": _in_set,
}


# ---- GE's column-map machinery (expectation.py, map_metric_provider/*) on one column


def _column_map(
    frame: pd.DataFrame, kwargs: Mapping[str, Any], condition: Callable[[pd.Series], Any]
) -> ExpectationResult:
    """ColumnMapExpectation._validate: the condition on the column's non-null values, then _format_map_output.

    A metric that raises in GE makes the expectation fail with that message and an empty result;
    the condition raises the same error here.
    """
    series = frame[kwargs["column"]]
    total = frame.shape[0]
    nulls = series.isnull()
    null_count = int(np.count_nonzero(nulls))
    # GE filters the nulls out; with none the filtered column is the column itself.
    domain = series[~nulls] if null_count else series
    try:
        meets = condition(domain)
        unexpected, values, index = _unexpected(domain, meets)
    except NotReproduced:
        raise
    except Exception as e:
        # GE catches every metric error (catch_exceptions=True) and reports the expectation failed with it.
        return ExpectationResult(False, {}, str(e))
    nonnull = total - null_count
    if total == 0 or nonnull == 0:
        success = True
    else:
        success = (float(nonnull) - float(unexpected)) / float(nonnull) >= kwargs.get("mostly", 1)
    return _format_map_output(success, total, nonnull, unexpected, values, index)


def _unexpected(domain: pd.Series, meets: Any) -> tuple[int, list[Any], list[Any]]:
    """Unexpected count, the first values and their index labels, as GE's pandas map metrics give them.

    ``column_condition_partial`` inverts the condition; the count is ``np.count_nonzero``, the
    values ``list(domain[unexpected == True][:20])`` and the index labels those of the same rows.
    For a boolean mask the first 20 rows are taken by position instead of filtering the whole
    column: the same rows, boxed by the same Series iteration.
    """
    unexpected = ~meets
    if len(domain) == 0:
        # pandas maps an empty column to an empty object column; nothing is unexpected either way.
        return 0, [], []
    mask = np.asarray(unexpected)
    if mask.dtype != np.bool_ or mask.shape != (len(domain),):
        raise NotReproduced("the condition is not one boolean per row")
    count = int(np.count_nonzero(mask))
    first = np.flatnonzero(mask)[:PARTIAL_UNEXPECTED_COUNT]
    return count, list(domain.iloc[first]), list(domain.index[first])


def _format_map_output(
    success: bool,
    element_count: int,
    nonnull_count: int | None,
    unexpected_count: int,
    unexpected_list: list[Any],
    unexpected_index_list: list[Any],
) -> ExpectationResult:
    """expectation.py::_format_map_output for result_format SUMMARY (no unexpected rows, no index columns)."""
    skip_missing = nonnull_count is None
    missing_count = None if nonnull_count is None else element_count - nonnull_count
    missing_percent: float | None = None
    unexpected_percent_total: float | None = None
    unexpected_percent_nonmissing: float | None = None
    if element_count > 0:
        unexpected_percent_total = unexpected_count / element_count * 100
        if not skip_missing and missing_count is not None:
            missing_percent = missing_count / element_count * 100
            if nonnull_count is not None and nonnull_count > 0:
                unexpected_percent_nonmissing = unexpected_count / nonnull_count * 100
        else:
            unexpected_percent_nonmissing = unexpected_percent_total
    result: dict[str, Any] = {
        "element_count": element_count,
        "unexpected_count": unexpected_count,
        "unexpected_percent": unexpected_percent_nonmissing,
        "partial_unexpected_list": unexpected_list[:PARTIAL_UNEXPECTED_COUNT],
    }
    if not skip_missing:
        result["missing_count"] = missing_count
        result["missing_percent"] = missing_percent
        result["unexpected_percent_total"] = unexpected_percent_total
        result["unexpected_percent_nonmissing"] = unexpected_percent_nonmissing
    if unexpected_list and isinstance(unexpected_list[0], dict):
        raise NotReproduced("GE counts multi-column values as tuples")
    try:
        result["partial_unexpected_counts"] = [
            {"value": key, "count": value}
            for key, value in sorted(
                Counter(unexpected_list).most_common(PARTIAL_UNEXPECTED_COUNT), key=lambda x: (-x[1], x[0])
            )
        ]
    except TypeError:
        # GE leaves the counts out when the values cannot be hashed or ordered.
        pass
    result["partial_unexpected_index_list"] = unexpected_index_list[:PARTIAL_UNEXPECTED_COUNT]
    return ExpectationResult(bool(success), result)


# ---- conditions copied from GE's pandas metrics


def _between_condition(
    column: pd.Series, min_value: float | None, max_value: float | None, strict_min: bool, strict_max: bool
) -> Any:
    """ColumnValuesBetween._pandas: vectorised for int/float64 and datetime columns, per value otherwise."""
    if min_value is not None and max_value is not None and min_value > max_value:
        raise ValueError("min_value cannot be greater than max_value")
    if column.dtype in [int, float] or (
        isinstance(column.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_ns_dtype(column.dtype)
    ):
        return _between_vectorized(column, min_value, max_value, strict_min, strict_max)

    def is_between(val: Any) -> Any:
        # Bounds are floats here, so GE's "same type" rule rejects exactly the str values.
        if isinstance(val, str):
            raise TypeError("Column values, min_value, and max_value must either be None or of the same type.")
        if min_value is not None and max_value is not None:
            if strict_min and strict_max:
                return (val > min_value) and (val < max_value)
            if strict_min:
                return (val > min_value) and (val <= max_value)
            if strict_max:
                return (val >= min_value) and (val < max_value)
            return (val >= min_value) and (val <= max_value)
        if max_value is not None:
            return val < max_value if strict_max else val <= max_value
        return val > min_value if strict_min else val >= min_value

    return column.map(is_between)


def _between_vectorized(
    column: pd.Series, min_value: float | None, max_value: float | None, strict_min: bool, strict_max: bool
) -> Any:
    """ColumnValuesBetween._pandas_vectorized."""
    if min_value is None:
        return column < max_value if strict_max else column <= max_value
    if max_value is None:
        return min_value < column if strict_min else min_value <= column
    if strict_min and strict_max:
        return (min_value < column) & (column < max_value)
    if strict_min:
        return (min_value < column) & (column <= max_value)
    if strict_max:
        return (min_value <= column) & (column < max_value)
    return (min_value <= column) & (column <= max_value)


def _native_types(type_: str) -> tuple[type, ...] | None:
    """type_comparison.py::native_type_type_map."""
    name = type_.lower()
    return {
        "none": (type(None),),
        "bool": (bool,),
        "int": (int,),
        "long": (int,),
        "float": (float,),
        "bytes": (bytes,),
        "complex": (complex,),
        "str": (str,),
        "string_types": (str,),
        "list": (list,),
        "dict": (dict,),
    }.get(name)


def _in_type_list_condition(column: pd.Series, type_list: list[str] | tuple[str, ...]) -> Any:
    """ColumnValuesInTypeList._pandas."""
    types = _value_types(type_list)
    return column.map(lambda x: isinstance(x, types))


def _value_types(type_list: list[str] | tuple[str, ...]) -> tuple[type, ...]:
    """ColumnValuesInTypeList._pandas: the Python types each value of an object column may have."""
    types: list[type] = []
    for type_ in type_list:
        try:
            types.append(np.dtype(type_).type)
        except TypeError:
            pd_type = getattr(pd, type_, None)
            if isinstance(pd_type, type):
                types.append(pd_type)
            dtype_type = getattr(pd.core.dtypes.dtypes, type_, None)
            if isinstance(dtype_type, type):
                types.append(dtype_type)
        native = _native_types(type_)
        if native is not None:
            types.extend(native)
    if len(types) < 1:
        raise ValueError(f"No recognized numpy/python type in list: {type_list}")
    return tuple(types)


def _dtype_types(type_list: list[str] | tuple[str, ...]) -> list[Any]:
    """ExpectColumnValuesToBeInTypeList._validate_pandas: what a typed column's dtype is compared with."""
    types: list[Any] = []
    for type_ in type_list:
        try:
            types.append(np.dtype(type_).type)
            types.append(np.dtype(type_))
        except TypeError:
            pd_type = getattr(pd, type_, None)
            if isinstance(pd_type, type):
                types.append(pd_type)
                try:
                    if isinstance(pd_type(), pd.api.extensions.ExtensionDtype):
                        types.append(pd_type())
                except TypeError:
                    pass
            dtype_type = getattr(pd.core.dtypes.dtypes, type_, None)
            if isinstance(dtype_type, type):
                types.append(dtype_type)
        native = _native_types(type_)
        if native is not None:
            types.extend(native)
    return types


__all__ = [
    "FAST_TYPES",
    "PARTIAL_UNEXPECTED_COUNT",
    "ExpectationResult",
    "NotReproduced",
    "evaluate",
    "frame_reproducible",
    "reproducible",
]
