"""What a landed file may cost to read, checked before it is decoded where the format allows.

A file in the landing folder comes from whoever can write there, so its size on disk says little
about what it costs: a 5 kB Parquet file whose string column is dictionary-encoded decodes to one
copy of the value per row (hundreds of MB at a few thousand rows of a long value). Parquet is
checked from its footer (rows, columns, each column chunk's uncompressed size) and, for
dictionary-encoded byte-array columns, from a bounded read of the dictionary and its indices,
which tells the decoded size without building it. CSV has no footer: it is held to its size in
bytes and a sniff of its first bytes for the header. Either way the decoded frame is checked
once more (its memory and its largest cell) before anything is written.

Pure logic: pyarrow and pandas only, no Dagster. The limits are the spec's ``limits`` block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from mlops_assets.spec import LimitsSpec

# How far into a CSV file its header is looked for; a header longer than this is refused.
CSV_SNIFF_BYTES = 1 << 20


class LimitExceeded(ValueError):
    """A landed file over one of the spec's limits; the message names the file, the limit
    (its spec key) and the value found."""

    def __init__(self, path: str, limit: str, value: int, allowed: int, what: str) -> None:
        self.path, self.limit, self.value, self.allowed = path, limit, value, allowed
        super().__init__(
            f"landing file {path}: refused: {what} {value:,} is over limits.{limit} = {allowed:,}; "
            f"nothing was read further (raise limits.{limit} in the spec if the file is genuine)"
        )


@dataclass(frozen=True)
class _Check:
    path: str
    limits: LimitsSpec

    def at_most(self, limit: str, value: int, what: str) -> None:
        allowed = getattr(self.limits, limit)
        if value > allowed:
            raise LimitExceeded(self.path, limit, int(value), int(allowed), what)


def check_file_size(path: str, size: int, limits: LimitsSpec) -> None:
    """Raises LimitExceeded when the file is over ``limits.max_file_bytes``."""
    _Check(path, limits).at_most("max_file_bytes", size, "its size in bytes")


def check_parquet(f: BinaryIO, path: str, limits: LimitsSpec) -> None:
    """Checks a Parquet file against the limits from its footer and, for dictionary-encoded
    byte-array columns, a bounded read of their dictionaries and indices. ``f`` is rewound.

    Raises:
        LimitExceeded: naming the file, the limit and the value.
        ValueError: the footer cannot be read (not Parquet, truncated).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    check = _Check(path, limits)
    try:
        parquet = pq.ParquetFile(f)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"landing file {path}: cannot be read as parquet: {e}") from e
    meta = parquet.metadata
    check.at_most("max_rows", meta.num_rows, "its row count (Parquet footer)")
    check.at_most("max_columns", meta.num_columns, "its column count (Parquet footer)")
    chunks = [meta.row_group(g).column(c) for g in range(meta.num_row_groups) for c in range(meta.num_columns)]
    check.at_most(
        "max_decoded_bytes",
        sum(chunk.total_uncompressed_size for chunk in chunks),
        "its uncompressed size in bytes (Parquet footer)",
    )
    schema = parquet.schema_arrow
    dictionary_columns = sorted(
        {
            chunk.path_in_schema
            for chunk in chunks
            if chunk.has_dictionary_page
            and chunk.physical_type == "BYTE_ARRAY"
            and chunk.path_in_schema in schema.names
        }
    )
    if dictionary_columns:
        # Read as DictionaryArray: the indices and each distinct value once, never a copy per row.
        f.seek(0)
        table = pq.ParquetFile(f, read_dictionary=dictionary_columns).read(columns=dictionary_columns)
        decoded, largest = _decoded_size(table)
        fixed = sum(
            meta.num_rows * (schema.field(n).type.bit_width // 8)
            for n in schema.names
            if n not in dictionary_columns and _fixed_width(schema.field(n).type)
        )
        check.at_most("max_decoded_bytes", decoded + fixed, "its decoded size in bytes (dictionary-encoded columns)")
        check.at_most("max_cell_bytes", largest, "its largest cell in bytes")
    f.seek(0)


def check_csv_head(f: BinaryIO, path: str, limits: LimitsSpec) -> None:
    """Checks a CSV file's header (the first line) within its first ``CSV_SNIFF_BYTES``: present,
    and with no more columns than allowed. ``f`` is rewound.

    Raises:
        LimitExceeded: the header is longer than the sniff or has too many columns.
    """
    import csv
    import io

    head = f.read(CSV_SNIFF_BYTES)
    f.seek(0)
    end = head.find(b"\n")
    if end < 0 and len(head) == CSV_SNIFF_BYTES:
        raise LimitExceeded(path, "max_cell_bytes", CSV_SNIFF_BYTES, limits.max_cell_bytes, "its header line in bytes")
    line = head if end < 0 else head[:end]
    header = next(csv.reader(io.StringIO(line.decode("utf-8", errors="replace"))), [])
    _Check(path, limits).at_most("max_columns", len(header), "its column count (CSV header)")


def check_frame(frame: pd.DataFrame, path: str, limits: LimitsSpec) -> None:
    """The decoded frame's rows, columns, memory and largest cell against the limits.

    Raises:
        LimitExceeded: naming the file, the limit and the value (and the column, for a cell).
    """
    import pandas as pd

    check = _Check(path, limits)
    check.at_most("max_rows", len(frame), "its row count")
    check.at_most("max_columns", frame.shape[1], "its column count")
    check.at_most(
        "max_decoded_bytes", int(frame.memory_usage(deep=True, index=False).sum()), "its decoded size in bytes"
    )
    for column in frame.columns:
        values = frame[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            values = pd.Series(values.cat.categories)
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        largest = max((_cell_bytes(v) for v in values), default=0)
        check.at_most("max_cell_bytes", largest, f"its largest cell (column {str(column)[:80]!r}) in bytes")


def _cell_bytes(value: object) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes):
        return len(value)
    return 0


def _fixed_width(kind: pa.DataType) -> bool:
    try:
        return kind.bit_width > 0
    except ValueError:
        return False


def _decoded_size(table: pa.Table) -> tuple[int, int]:
    """Bytes the dictionary columns of ``table`` take decoded, and their largest value, computed
    from the dictionaries and the indices."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total, largest = 0, 0
    for column in table.columns:
        for chunk in column.chunks:
            if not pa.types.is_dictionary(chunk.type):
                continue
            lengths = pc.binary_length(chunk.dictionary)
            if len(lengths):
                largest = max(largest, int(pc.max(lengths).as_py() or 0))
            used = pc.take(lengths, chunk.indices)
            total += int(pc.sum(used).as_py() or 0) + 8 * len(chunk)
    return total, largest
