"""The stored form of a batch's explanations: one Parquet file beside its predictions.

Layout, schema version 1 (one row per explained row, in row order):

========================  ========  =====================================================
column                    type      meaning
========================  ========  =====================================================
``row``                   int64     the row's position in the batch's predictions
``raw_output``            float64   the model's raw output (logit)
``base_value``            float64   where the contributions start (the same on every row)
``top_<i>_column``        string    the i-th largest contribution's column, i = 1..k
``top_<i>_value``         float64   its contribution
``rest``                  float64   the sum of every other column's contribution
``residual``              float64   raw_output - base_value - top values - rest
========================  ========  =====================================================

``k = min(explain.top_k, number of columns)``; "largest" is by absolute value, ties in column
order. Column names are dictionary-encoded, so a slot costs a few bits per row. The file's
key-value metadata ``mlops.attributions`` (JSON) holds the schema version, the model version
and family, the method, the batch, every column, ``k``, the batch's global importance (mean
absolute contribution per column, over all rows and all columns, not just the stored top-k) and
the largest absolute residual. The full per-column matrix is not kept: top-k plus the residual
sum answer "why this row" and keep the file about ``(2k + 4) * 8`` bytes a row before
compression; importance is computed from the full matrix before it is compacted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import IO, Any

import numpy as np

from mlops_assets.ml.attribution.core import Attributions, global_importance, sigmoid

SCHEMA_VERSION = 1
METADATA_KEY = b"mlops.attributions"
ROW = "row"
RAW_OUTPUT = "raw_output"
BASE_VALUE = "base_value"
REST = "rest"
RESIDUAL = "residual"
# Row groups small enough that one row's lookup reads a sliver of a large batch.
_ROW_GROUP_SIZE = 16_384

Where = str | IO[bytes]


def top_column(i: int) -> str:
    return f"top_{i}_column"


def top_value(i: int) -> str:
    return f"top_{i}_value"


@dataclass(frozen=True)
class FileInfo:
    """The file-level metadata of a stored batch of explanations."""

    schema_version: int
    model_version: str
    model_family: str
    method: str
    batch: str
    columns: list[str]
    top_k: int
    rows: int
    importance: dict[str, float]
    max_abs_residual: float


@dataclass(frozen=True)
class Contribution:
    column: str
    value: float


@dataclass(frozen=True)
class RowExplanation:
    """One row's explanation, as ``mlops explain --batch <b> --row <r>`` shows it."""

    model_version: str
    model_family: str
    method: str
    batch: str
    row: int
    raw_output: float
    probability: float
    base_value: float
    top: list[Contribution]
    rest: float
    other_columns: int
    residual: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compact(attributions: Attributions, *, top_k: int, rows: Sequence[int] | None = None) -> Any:
    """The Parquet table of ``attributions`` (a ``pyarrow.Table``), without file metadata.

    Raises:
        ValueError: ``top_k`` below 1, or ``rows`` of another length than the attributions or
            not unique.
    """
    import pyarrow as pa

    if top_k < 1:
        raise ValueError(f"explain.top_k: must be at least 1, got {top_k}")
    n = len(attributions)
    row_numbers = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if row_numbers.shape != (n,):
        raise ValueError(f"rows: {row_numbers.shape[0]} row numbers for {n} explained rows")
    if np.unique(row_numbers).size != n:
        raise ValueError("rows: row numbers repeat; each explained row needs its own")
    k = min(top_k, len(attributions.columns))
    values = attributions.values
    order = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(values, order, axis=1)
    names = pa.array(list(attributions.columns), type=pa.string())
    arrays: dict[str, Any] = {
        ROW: pa.array(row_numbers),
        RAW_OUTPUT: pa.array(attributions.raw_output),
        BASE_VALUE: pa.array(np.full(n, attributions.base_value)),
    }
    for i in range(k):
        arrays[top_column(i + 1)] = pa.DictionaryArray.from_arrays(pa.array(order[:, i].astype(np.int32)), names)
        arrays[top_value(i + 1)] = pa.array(top[:, i])
    arrays[REST] = pa.array(values.sum(axis=1) - top.sum(axis=1))
    arrays[RESIDUAL] = pa.array(attributions.residual)
    return pa.table(arrays)


def write_attributions(
    where: Where,
    attributions: Attributions,
    *,
    top_k: int,
    model_version: str,
    model_family: str,
    batch: str,
    rows: Sequence[int] | None = None,
) -> FileInfo:
    """Writes the batch's explanations to ``where`` (a path or a writable binary file).

    Returns the file's metadata, e.g. for the asset's materialization metadata.
    """
    import pyarrow.parquet as pq

    table = compact(attributions, top_k=top_k, rows=rows)
    info = FileInfo(
        schema_version=SCHEMA_VERSION,
        model_version=str(model_version),
        model_family=model_family,
        method=attributions.method,
        batch=str(batch),
        columns=list(attributions.columns),
        top_k=min(top_k, len(attributions.columns)),
        rows=len(attributions),
        importance=global_importance(attributions) if len(attributions) else {},
        max_abs_residual=attributions.max_abs_residual,
    )
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(asdict(info), allow_nan=False).encode()})
    pq.write_table(table, where, row_group_size=_ROW_GROUP_SIZE)
    return info


def read_info(where: Where) -> FileInfo:
    """The file-level metadata; reads no rows.

    Raises:
        ValueError: not an attributions file, or of another schema version (names the file).
    """
    import pyarrow.parquet as pq

    return _info(pq.read_schema(where).metadata, where)


def read_attributions(where: Where) -> tuple[FileInfo, Any]:
    """The metadata and every stored row as a pandas frame (top-k columns as strings)."""
    import pyarrow.parquet as pq

    table = pq.read_table(where)
    info = _info(table.schema.metadata, where)
    frame = table.to_pandas()
    for i in range(1, info.top_k + 1):
        frame[top_column(i)] = frame[top_column(i)].astype(object)
    return info, frame


def row_explanation(where: Where, row: int) -> RowExplanation:
    """One row's explanation, read through the row-group statistics (not the whole file).

    Raises:
        KeyError: the batch has no explained row ``row`` (the message says which rows it has).
        ValueError: not an attributions file of this schema version.
    """
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    info = _info(pq.read_schema(where).metadata, where)
    found = pq.read_table(where, filters=ds.field(ROW) == int(row)).to_pylist()
    if not found:
        raise KeyError(f"batch {info.batch}: no explained row {row}; it has {info.rows} rows")
    record = found[0]
    top = [Contribution(record[top_column(i)], record[top_value(i)]) for i in range(1, info.top_k + 1)]
    raw = float(record[RAW_OUTPUT])
    return RowExplanation(
        model_version=info.model_version,
        model_family=info.model_family,
        method=info.method,
        batch=info.batch,
        row=int(record[ROW]),
        raw_output=raw,
        probability=sigmoid(raw),
        base_value=float(record[BASE_VALUE]),
        top=top,
        rest=float(record[REST]),
        other_columns=len(info.columns) - info.top_k,
        residual=float(record[RESIDUAL]),
    )


def _info(metadata: dict[bytes, bytes] | None, where: Where) -> FileInfo:
    name = where if isinstance(where, str) else getattr(where, "name", "<file>")
    if not metadata or METADATA_KEY not in metadata:
        raise ValueError(f"{name}: not an attributions file (no {METADATA_KEY.decode()} metadata)")
    data = json.loads(metadata[METADATA_KEY])
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{name}: attributions schema_version {data.get('schema_version')!r}, this code reads {SCHEMA_VERSION}"
        )
    data["max_abs_residual"] = float(data["max_abs_residual"]) if data["max_abs_residual"] is not None else math.nan
    return FileInfo(**data)
