"""The reference profile: what the drift check needs from the training data, and its file format.

The format is a zip of a JSON header (``profile.json``) and ``.npy`` arrays written with
``allow_pickle=False``; loading never unpickles. Stored arrays are read as views of the bytes
(CRC-checked), so a large profile loads at memory speed.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.ml.drift.columns import (
    DriftInputError,
    category_counts,
    check_category_value,
    cleaned_series,
    finite_numeric,
    is_bool,
    is_integer_dtype,
    require_columns,
    unique_sorted,
)
from mlops_assets.ml.drift.sampling import DEFAULT_SAMPLE_SIZE, clean_for_evidently, sample_positions

_FORMAT = "mlops-assets/drift-profile"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class NumericReference:
    """A numerical column of the reference: its distinct finite values with counts, and Evidently's norm."""

    values: np.ndarray  # sorted distinct finite values, float64
    counts: np.ndarray | None  # int64 occurrences of each value; None when each occurs once
    std: float  # np.std of the cleaned reference Series, the norm Evidently divides by
    integer: bool  # integer dtype: numpy's Sturges rule then uses a bin width of at least 1

    @property
    def n(self) -> int:
        return int(self.values.size if self.counts is None else self.counts.sum())

    def cumcounts(self) -> np.ndarray:
        """Number of reference values <= values[i]."""
        if self.counts is None:
            return np.arange(1, self.values.size + 1, dtype=np.int64)
        return np.cumsum(self.counts)

    def counts_or_ones(self) -> np.ndarray:
        return np.ones(self.values.size, dtype=np.int64) if self.counts is None else self.counts


@dataclass(frozen=True)
class CategoricalReference:
    """A categorical column of the reference: its categories and how often each occurs."""

    categories: tuple[Any, ...]  # str, int, float or bool
    counts: np.ndarray  # int64, all > 0

    @property
    def n(self) -> int:
        return int(self.counts.sum())


class ReferenceProfile:
    """What the drift check needs from the training data, exact and without pickle.

    Holds, per numerical column, the sorted distinct finite values with counts and Evidently's norm
    (``np.std``); per categorical column, the category counts; and a deterministic row sample of the
    reference for Evidently's HTML report. Build it once at training time (``build``), store it
    with the model (``to_bytes``), and check every batch against it (``detect_drift``).
    """

    def __init__(
        self,
        *,
        numerical: dict[str, NumericReference],
        categorical: dict[str, CategoricalReference],
        n_rows: int,
        seed: int,
        sample: pd.DataFrame,
    ) -> None:
        self._num = dict(numerical)
        self._cat = dict(categorical)
        self._cat_index = {name: {v: i for i, v in enumerate(ref.categories)} for name, ref in self._cat.items()}
        self.numerical: list[str] = list(self._num)
        self.categorical: list[str] = list(self._cat)
        self.n_rows = int(n_rows)
        self.seed = int(seed)
        self._sample = sample

    @property
    def columns(self) -> list[str]:
        return self.numerical + self.categorical

    def numeric_column(self, name: str) -> NumericReference:
        """The stored reference of numerical column ``name``."""
        return self._num[name]

    def categorical_column(self, name: str) -> CategoricalReference:
        """The stored reference of categorical column ``name``."""
        return self._cat[name]

    def category_positions(self, name: str) -> dict[Any, int]:
        """Each reference category of ``name`` -> its position in ``categorical_column(name).categories``."""
        return self._cat_index[name]

    @classmethod
    def build(
        cls,
        reference: pd.DataFrame,
        *,
        numerical: Sequence[str],
        categorical: Sequence[str],
        seed: int = 0,
        sample_size: int = DEFAULT_SAMPLE_SIZE,
    ) -> ReferenceProfile:
        """Profile ``reference`` for the given numerical and categorical columns.

        Raises ``DriftInputError`` when a column is missing, listed twice, numerical with a
        non-numeric dtype, without any finite/non-null value, or categorical with values other
        than str/int/float/bool.
        """
        numerical, categorical = list(numerical), list(categorical)
        if not numerical and not categorical:
            raise DriftInputError("a reference profile needs at least one column")
        both = sorted(set(numerical) & set(categorical))
        if both:
            raise DriftInputError(f"columns listed as both numerical and categorical: {both}")
        dupes = sorted({c for c in numerical + categorical if (numerical + categorical).count(c) > 1})
        if dupes:
            raise DriftInputError(f"columns listed twice: {dupes}")
        require_columns(reference, numerical + categorical, "reference")
        empty: list[str] = []
        num: dict[str, NumericReference] = {}
        for name in numerical:
            series = reference[name]
            finite, _ = finite_numeric(series, name, "reference")
            if finite.size == 0:
                empty.append(name)
                continue
            # Evidently's norm is np.std of the cleaned Series in row order (summation order matters
            # in the last bits), so it is taken before sorting.
            std = float(np.std(cleaned_series(series.astype(np.float64) if is_bool(series) else series)))
            values, counts = unique_sorted(np.sort(finite))
            num[name] = NumericReference(
                values=values,
                counts=None if bool((counts == 1).all()) else counts,
                std=std,
                integer=is_integer_dtype(series),
            )
        cat: dict[str, CategoricalReference] = {}
        for name in categorical:
            keys, counts = category_counts(reference[name])
            if not keys:
                empty.append(name)
                continue
            for v in keys:
                check_category_value(name, v)
            cat[name] = CategoricalReference(categories=tuple(keys), counts=counts)
        if empty:
            raise DriftInputError(f"reference columns without any non-null, finite value: {empty}")
        positions = sample_positions(reference, numerical, categorical, sample_size, seed)
        sample = clean_for_evidently(reference.iloc[positions][numerical + categorical], numerical)
        # Normalised through the storage encoding so that a loaded profile equals the built one.
        arrays: dict[str, np.ndarray] = {}
        spec = _encode_frame(sample.reset_index(drop=True), "s", arrays)
        sample = _decode_frame(spec, "s", arrays.__getitem__)
        return cls(numerical=num, categorical=cat, n_rows=len(reference), seed=seed, sample=sample)

    def sample(self) -> pd.DataFrame:
        """The deterministic reference sample used for Evidently's HTML report (+/-inf already NaN)."""
        return self._sample.copy()

    def to_bytes(self) -> bytes:
        """A zip of a JSON header and ``.npy`` arrays written with ``allow_pickle=False``."""
        arrays: dict[str, np.ndarray] = {}
        header: dict[str, Any] = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "n_rows": self.n_rows,
            "seed": self.seed,
            "numerical": [],
            "categorical": [],
        }
        for i, (name, ref) in enumerate(self._num.items()):
            arrays[f"num/{i}/values"] = ref.values
            if ref.counts is not None:
                arrays[f"num/{i}/counts"] = ref.counts
            header["numerical"].append(
                {"name": name, "std": ref.std, "integer": ref.integer, "unit_counts": ref.counts is None}
            )
        for i, (name, cref) in enumerate(self._cat.items()):
            arrays[f"cat/{i}/counts"] = cref.counts
            header["categorical"].append({"name": name, "categories": list(cref.categories)})
        header["sample"] = _encode_frame(self._sample, "sample", arrays)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr("profile.json", json.dumps(header, allow_nan=False), compress_type=zipfile.ZIP_DEFLATED)
            for key, arr in arrays.items():
                # Stored, not deflated: the values are mostly incompressible floats, and loading must be fast.
                with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> ReferenceProfile:
        """Inverse of ``to_bytes``; raises ``ValueError`` on anything else.

        Arrays stored uncompressed are read-only views into ``data`` (CRC-checked, not copied), so
        a large profile costs its size in memory once and loads at memory speed.
        """
        # BytesIO shares a bytes object's buffer (copy-on-write) instead of copying it.
        raw = data if isinstance(data, bytes) else bytes(data)
        buf = memoryview(raw)
        try:
            zf = zipfile.ZipFile(io.BytesIO(raw))
        except zipfile.BadZipFile as e:
            raise ValueError("not a drift reference profile (not a zip archive)") from e
        with zf:
            header = json.loads(zf.read("profile.json"))
            if header.get("format") != _FORMAT or header.get("version") != _FORMAT_VERSION:
                raise ValueError(
                    f"unsupported drift profile format {header.get('format')!r} version {header.get('version')!r}"
                )

            def load(key: str) -> np.ndarray:
                info = zf.getinfo(f"{key}.npy")
                if info.compress_type == zipfile.ZIP_STORED:
                    return _npy_view(buf, info)
                with zf.open(info) as f:
                    return np.lib.format.read_array(f, allow_pickle=False)

            num = {
                h["name"]: NumericReference(
                    values=load(f"num/{i}/values"),
                    counts=None if h["unit_counts"] else load(f"num/{i}/counts"),
                    std=float(h["std"]),
                    integer=bool(h["integer"]),
                )
                for i, h in enumerate(header["numerical"])
            }
            cat = {
                h["name"]: CategoricalReference(categories=tuple(h["categories"]), counts=load(f"cat/{i}/counts"))
                for i, h in enumerate(header["categorical"])
            }
            sample = _decode_frame(header["sample"], "sample", load)
        return cls(numerical=num, categorical=cat, n_rows=header["n_rows"], seed=header["seed"], sample=sample)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReferenceProfile):
            return NotImplemented
        if (self.numerical, self.categorical, self.n_rows, self.seed) != (
            other.numerical,
            other.categorical,
            other.n_rows,
            other.seed,
        ):
            return False
        for name, a in self._num.items():
            b = other._num[name]
            if (a.std, a.integer) != (b.std, b.integer) or not np.array_equal(a.values, b.values):
                return False
            if not np.array_equal(a.counts_or_ones(), b.counts_or_ones()):
                return False
        for name, ca in self._cat.items():
            cb = other._cat[name]
            if ca.categories != cb.categories or not np.array_equal(ca.counts, cb.counts):
                return False
        return self._sample.equals(other._sample)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"ReferenceProfile(n_rows={self.n_rows}, numerical={self.numerical}, "
            f"categorical={self.categorical}, sample_rows={len(self._sample)})"
        )


def _npy_view(buf: memoryview, info: zipfile.ZipInfo) -> np.ndarray:
    """A read-only array over a stored (uncompressed) ``.npy`` zip member, without copying it."""
    local = bytes(buf[info.header_offset : info.header_offset + 30])
    if local[:4] != b"PK\x03\x04":
        raise ValueError(f"corrupt drift profile: bad local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    member = buf[start : start + info.file_size]
    if zlib.crc32(member) != info.CRC:
        raise ValueError(f"corrupt drift profile: CRC mismatch in {info.filename}")
    head = io.BytesIO(member[: min(len(member), 65536)])
    version = np.lib.format.read_magic(head)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(head)
    if dtype.hasobject:
        raise ValueError(f"drift profile member {info.filename} holds Python objects; refusing to load it")
    count = math.prod(shape)
    array = np.frombuffer(member, dtype=dtype, count=count, offset=head.tell())
    return array.reshape(shape, order="F" if fortran else "C")


def _encode_frame(frame: pd.DataFrame, prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Columns as plain numeric arrays or as int32 codes into a JSON category list (no pickle)."""
    columns = []
    for i, name in enumerate(frame.columns):
        col = frame[name]
        key = f"{prefix}/{i}"
        if isinstance(col.dtype, np.dtype) and col.dtype.kind in "biuf":
            arrays[key] = col.to_numpy()
            columns.append({"name": name, "encoding": "array", "dtype": col.dtype.str})
            continue
        if pd.api.types.is_numeric_dtype(col.dtype) and not isinstance(col.dtype, pd.CategoricalDtype):
            arrays[key] = col.to_numpy(dtype=np.float64, na_value=np.nan)
            columns.append({"name": name, "encoding": "array", "dtype": "<f8"})
            continue
        codes, uniques = pd.factorize(col, use_na_sentinel=True)
        categories = uniques.tolist() if hasattr(uniques, "tolist") else list(uniques)
        ok = [isinstance(v, bool | int | str) or (isinstance(v, float) and math.isfinite(v)) for v in categories]
        if not all(ok):
            bad = np.flatnonzero(~np.array(ok))
            codes = np.where(np.isin(codes, bad), -1, codes)
        arrays[key] = codes.astype(np.int32)
        columns.append(
            {
                "name": name,
                "encoding": "codes",
                "categories": [v if good else None for v, good in zip(categories, ok, strict=True)],
                "category_dtype": isinstance(col.dtype, pd.CategoricalDtype),
            }
        )
    return {"n_rows": len(frame), "columns": columns}


def _decode_frame(spec: dict[str, Any], prefix: str, load: Callable[[str], np.ndarray]) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for i, col in enumerate(spec["columns"]):
        arr = load(f"{prefix}/{i}")
        if col["encoding"] == "array":
            data[col["name"]] = arr.astype(np.dtype(col["dtype"]), copy=False)
            continue
        categories = np.array(col["categories"] + [None], dtype=object)
        values = categories[np.where(arr < 0, len(categories) - 1, arr)]
        if col["category_dtype"]:
            data[col["name"]] = pd.Categorical(values)
        else:
            values[pd.isna(values)] = np.nan
            data[col["name"]] = values
    return pd.DataFrame(data, index=pd.RangeIndex(spec["n_rows"]))
