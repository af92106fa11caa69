"""Per-batch data drift with Evidently 0.7's statistics, from a reference profile saved at training time.

Contract
--------
``detect_drift(profile, batch, policy)`` returns, for every column of the profile, the same score,
method, threshold and verdict that Evidently 0.7.23's ``Report([DataDriftPreset(...)])`` gives on
the full reference and the full batch (scores agree to ~1e-12; the tests hold them to 1e-9), and the
same dataset verdict. Only the profile is read, never the training data again.

Method choice is Evidently's ``_get_default_stattest``, on the values left after NaN and +/-inf
are dropped, with ``n_values`` = distinct values of reference and batch together (default
thresholds in brackets):

* reference > 1000 rows, numerical: ``n_values <= 5`` Jensen-Shannon (0.1), else normed
  Wasserstein (0.1); categorical: Jensen-Shannon (0.1).
* reference <= 1000 rows, numerical: ``n_values <= 2`` Z-test (0.05), ``3..5`` chi-square (0.05),
  else K-S (0.05); categorical: ``n_values <= 2`` Z-test, else chi-square.

A p-value drifts when ``p < threshold`` (``p <= threshold`` for K-S, exactly as Evidently's
``ks_stattest.py``); a distance drifts when ``score >= threshold``. The dataset drifts when the
share of drifted columns is ``>= drift_share``. ``DriftPolicy`` may pin the method and threshold per
column kind, as ``DataDriftPreset(num_method=..., cat_method=..., num_threshold=...,
cat_threshold=..., drift_share=...)`` does; the pinned methods this engine reproduces exactly are
those in ``SUPPORTED_METHODS``. Which columns are numerical and which categorical is the caller's
choice (``ReferenceProfile.build``); ``infer_column_kinds`` applies Evidently's own inference
(``evidently.core.datasets.infer_column_type``) for callers who want its defaults.

How it is exact and fast
------------------------
A numerical column is stored as its sorted distinct finite values and their counts (counts are
omitted when every value occurs once) plus ``np.std`` of the reference, computed once exactly as
Evidently does. The normed Wasserstein distance is the integral of ``|Q_ref(u) - Q_cur(u)|`` over
quantile levels ``u``; the breakpoints of both quantile functions lie on an integer grid
(``cumcount_ref * n_cur`` and ``j * n_ref``), so the merge of the two is integer division instead of
a search, and one ``np.sort`` of the batch column is the only super-linear step. K-S uses the
same counts with ``searchsorted`` and scipy's own p-value (``kstwo.sf`` in the asymptotic regime,
``ks_2samp`` on a two-valued sample with the same sizes and statistic in the exact regime).
Categorical columns are category counts; Jensen-Shannon, chi-square, Z, PSI and K-L are computed by
the same scipy functions on the same count vectors as Evidently. Batches of 200k rows or more run
their columns in a thread pool: ``np.sort`` and the other kernels release the GIL.

Defined behaviour where Evidently has none
------------------------------------------
Evidently raises on an all-null column (``An empty column ... was provided``). Here a batch column
with no finite value gets ``score = nan``, ``drifted = True`` and a note: a feature that went
entirely missing is a change the drift check must surface, and the dataset share counts it. Its
method is the one the reference alone selects. A reference column with no finite value is
rejected by ``ReferenceProfile.build`` (the time to fix that is training, not every batch).
A batch with no rows, a batch missing a profiled column, or a numerical column of non-numeric
dtype raise ``DriftInputError`` naming the columns. Columns the profile does not know are ignored
and listed in ``DriftResult.ignored_columns``. NaN, None and +/-inf are dropped per column before
testing, as Evidently's ``ValueDrift`` does (Evidently's legacy ``DriftedColumnsCount`` keeps
+/-inf in a column that has no NaN; the sample handed to Evidently replaces +/-inf with NaN so that
its two metrics and this engine agree). Booleans in a numerical column are 0/1.

The HTML report and its sample size
-----------------------------------
``render_evidently_report`` runs Evidently itself on a deterministic row sample of the reference
(stored in the profile) and of the batch. Default: ``DEFAULT_SAMPLE_SIZE = 50_000`` rows a side.
Why that size:

* It keeps every column's reference above 1000 non-null rows whenever the full reference is, so
  Evidently selects the same family of tests as the full check (at <= 1000 rows it would switch to
  K-S / chi-square / Z, which answer a different question). The sampler enforces this per column
  by topping up non-null rows; a column with <= 1000 non-null reference rows gets all of them, so
  its small-reference test is computed on exactly the full check's reference.
* The sampler also keeps at least ``min(distinct, 6)`` distinct values of every column in each
  sample, so the ``n_values <= 5`` switch (Jensen-Shannon vs Wasserstein, chi-square vs K-S)
  falls the same way as on the full data.
* At 50k rows the sampling error of the scores is small against the default thresholds of 0.1:
  between two 50k samples of one distribution the normed Wasserstein distance is ~0.009 (0.018
  at most in 20 draws) and the Jensen-Shannon distance over 30 categories ~0.012, so a verdict
  can differ from the full check only for a column whose full-data score lies within about 0.02
  of its threshold (20k rows would widen that band to ~0.03; 200k would narrow it to ~0.005 at
  4x Evidently's cost). Batches and references of up to 50k rows are used whole, and there the
  report's verdicts are the full check's exactly.
* Evidently's cost is linear in rows (about 17 s per 100k x 20 on two cores), so the report on
  50k x 50 takes tens of seconds instead of ~8 minutes at 1M x 50.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

ColumnKind = Literal["num", "cat"]

DEFAULT_SAMPLE_SIZE = 50_000
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

_FORMAT = "mlops-assets/drift-profile"
_FORMAT_VERSION = 1
# Below this many rows a batch is checked on the calling thread: with short numpy calls the GIL
# hand-offs between column threads cost more than the second core gives.
_PARALLEL_MIN_ROWS = 200_000


class DriftInputError(ValueError):
    """The batch (or the reference) cannot be checked as given; the message names the columns."""


@dataclass(frozen=True)
class _Method:
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


_METHODS: dict[str, _Method] = {
    m.name: m
    for m in (
        _Method("wasserstein", "Wasserstein distance (normed)", 0.1, frozenset({"num"}), "distance"),
        _Method("ks", "K-S p_value", 0.05, frozenset({"num"}), "p_value_inclusive"),
        _Method("jensenshannon", "Jensen-Shannon distance", 0.1, frozenset({"num", "cat"}), "distance"),
        _Method("psi", "PSI", 0.1, frozenset({"num", "cat"}), "distance"),
        _Method("kl_div", "Kullback-Leibler divergence", 0.1, frozenset({"num", "cat"}), "distance"),
        _Method("chisquare", "chi-square p_value", 0.05, frozenset({"cat"}), "p_value"),
        _Method("z", "Z-test p_value", 0.05, frozenset({"cat"}), "p_value"),
    )
}
SUPPORTED_METHODS: tuple[str, ...] = tuple(_METHODS)
_METHOD_BY_LABEL = {m.label: m for m in _METHODS.values()}


def method_label(method: str) -> str:
    """Evidently's display name of a stattest (``"ks"`` -> ``"K-S p_value"``)."""
    return _method(method).label


def _method(name: str) -> _Method:
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(
            f"drift method {name!r} is not reproduced by this engine; supported: {', '.join(SUPPORTED_METHODS)}"
        ) from None


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
            if name is not None and kind not in _method(name).kinds:
                label = "numerical" if kind == "num" else "categorical"
                raise ValueError(f"drift method {name!r} does not apply to {label} columns (as in Evidently)")
        for name, value in (("num_threshold", self.num_threshold), ("cat_threshold", self.cat_threshold)):
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        if not 0.0 <= self.drift_share <= 1.0:
            raise ValueError(f"drift_share must lie in [0, 1], got {self.drift_share!r}")


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift verdict: Evidently's method name and label, threshold, score and decision."""

    column: str
    column_type: ColumnKind
    method: str
    method_label: str
    threshold: float
    score: float
    drifted: bool
    note: str | None = None


@dataclass(frozen=True)
class DriftResult:
    """All columns' verdicts, the share of drifted columns and the dataset verdict for one batch."""

    columns: list[ColumnDrift]
    drifted_share: float
    dataset_drift: bool
    n_rows: int
    ignored_columns: list[str]

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def column(self, name: str) -> ColumnDrift:
        for c in self.columns:
            if c.column == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN scores become ``None``)."""
        out = asdict(self)
        for c in out["columns"]:
            if not math.isfinite(c["score"]):
                c["score"] = None
        return out


def verdict_mismatches(a: DriftResult, b: DriftResult) -> list[str]:
    """Human-readable differences in methods and verdicts between two results (e.g. engine vs report)."""
    out: list[str] = []
    by_name = {c.column: c for c in b.columns}
    for ca in a.columns:
        cb = by_name.get(ca.column)
        if cb is None:
            out.append(f"{ca.column}: missing from the second result")
        elif (ca.method, ca.drifted) != (cb.method, cb.drifted):
            out.append(
                f"{ca.column}: {ca.method} score {ca.score:.4g} drifted={ca.drifted} vs "
                f"{cb.method} score {cb.score:.4g} drifted={cb.drifted}"
            )
    out.extend(f"{name}: missing from the first result" for name in by_name.keys() - {c.column for c in a.columns})
    if a.dataset_drift != b.dataset_drift:
        out.append(f"dataset drift {a.dataset_drift} vs {b.dataset_drift}")
    return out


# --------------------------------------------------------------------------------------------
# Reference profile
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NumRef:
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
class _CatRef:
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
        numerical: dict[str, _NumRef],
        categorical: dict[str, _CatRef],
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
        _require_columns(reference, numerical + categorical, "reference")
        empty: list[str] = []
        num: dict[str, _NumRef] = {}
        for name in numerical:
            series = reference[name]
            finite, _ = _finite_numeric(series, name, "reference")
            if finite.size == 0:
                empty.append(name)
                continue
            # Evidently's norm is np.std of the cleaned Series in row order (summation order matters
            # in the last bits), so it is taken before sorting.
            std = float(np.std(_cleaned_series(series.astype(np.float64) if _is_bool(series) else series)))
            values, counts = _unique_sorted(np.sort(finite))
            num[name] = _NumRef(
                values=values,
                counts=None if bool((counts == 1).all()) else counts,
                std=std,
                integer=_is_integer_dtype(series),
            )
        cat: dict[str, _CatRef] = {}
        for name in categorical:
            keys, counts = _category_counts(reference[name])
            if not keys:
                empty.append(name)
                continue
            for v in keys:
                _check_category_value(name, v)
            cat[name] = _CatRef(categories=tuple(keys), counts=counts)
        if empty:
            raise DriftInputError(f"reference columns without any non-null, finite value: {empty}")
        positions = _sample_positions(reference, numerical, categorical, sample_size, seed)
        sample = _clean_for_evidently(reference.iloc[positions][numerical + categorical], numerical)
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
                h["name"]: _NumRef(
                    values=load(f"num/{i}/values"),
                    counts=None if h["unit_counts"] else load(f"num/{i}/counts"),
                    std=float(h["std"]),
                    integer=bool(h["integer"]),
                )
                for i, h in enumerate(header["numerical"])
            }
            cat = {
                h["name"]: _CatRef(categories=tuple(h["categories"]), counts=load(f"cat/{i}/counts"))
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


# --------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------


def detect_drift(
    profile: ReferenceProfile,
    current: pd.DataFrame,
    policy: DriftPolicy = DriftPolicy(),
    *,
    max_workers: int | None = None,
) -> DriftResult:
    """Evidently's DataDriftPreset verdicts for ``current`` against ``profile``, without Evidently.

    Columns are checked in a thread pool of ``max_workers`` (default: the CPUs this process may
    use) when the batch has at least 200k rows. Raises
    ``DriftInputError`` for an empty batch, a missing profiled column (named) or a numerical column
    of non-numeric dtype.
    """
    _require_columns(current, profile.columns, "batch")
    if len(current) == 0:
        raise DriftInputError("the batch has no rows")
    known = set(profile.columns)
    ignored = [str(c) for c in current.columns if c not in known]
    jobs: list[Callable[[], ColumnDrift]] = [
        (lambda name=name: _numerical_drift(name, profile._num[name], current[name], policy))
        for name in profile.numerical
    ] + [(lambda name=name: _categorical_drift(name, profile, current[name], policy)) for name in profile.categorical]
    workers = max_workers if max_workers is not None else _available_cpus()
    if workers > 1 and len(jobs) > 1 and len(current) >= _PARALLEL_MIN_ROWS:
        with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            columns = list(pool.map(lambda job: job(), jobs))
    else:
        columns = [job() for job in jobs]
    return _result(columns, policy.drift_share, len(current), ignored)


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _result(columns: list[ColumnDrift], drift_share: float, n_rows: int, ignored: list[str]) -> DriftResult:
    share = sum(c.drifted for c in columns) / len(columns)
    return DriftResult(
        columns=columns,
        drifted_share=share,
        dataset_drift=bool(share >= drift_share),
        n_rows=n_rows,
        ignored_columns=ignored,
    )


def _resolve(kind: ColumnKind, policy: DriftPolicy, n_ref: int, n_values: Callable[[], int]) -> tuple[_Method, float]:
    pinned = policy.num_method if kind == "num" else policy.cat_method
    if pinned is not None:
        method = _method(pinned)
    elif n_ref > SMALL_REFERENCE_ROWS:
        if kind == "cat":
            method = _METHODS["jensenshannon"]
        else:
            method = _METHODS["jensenshannon" if n_values() <= FEW_VALUES else "wasserstein"]
    elif kind == "num" and n_values() > FEW_VALUES:
        method = _METHODS["ks"]
    else:
        method = _METHODS["chisquare" if n_values() > 2 else "z"]
    threshold = policy.num_threshold if kind == "num" else policy.cat_threshold
    return method, method.default_threshold if threshold is None else float(threshold)


def _column(
    name: str, kind: ColumnKind, method: _Method, threshold: float, score: float, note: str | None = None
) -> ColumnDrift:
    drifted = True if note is not None and math.isnan(score) else method.drifted(score, threshold)
    return ColumnDrift(name, kind, method.name, method.label, threshold, float(score), drifted, note)


_ALL_NULL_NOTE = "all values null in the batch: not testable, counted as drifted"


def _numerical_drift(name: str, ref: _NumRef, series: pd.Series, policy: DriftPolicy) -> ColumnDrift:
    values, owned = _finite_numeric(series, name, "batch")
    if values.size == 0:
        method, threshold = _resolve("num", policy, ref.n, lambda: ref.values.size)
        return _column(name, "num", method, threshold, math.nan, _ALL_NULL_NOTE)
    if owned:
        values.sort()
    else:
        values = np.sort(values)
    distinct: list[tuple[np.ndarray, np.ndarray]] = []

    def current_distinct() -> tuple[np.ndarray, np.ndarray]:
        if not distinct:
            distinct.append(_unique_sorted(values))
        return distinct[0]

    def n_values() -> int:
        if ref.values.size > FEW_VALUES:
            return ref.values.size
        cur_values, _ = current_distinct()
        return int(np.union1d(ref.values, cur_values).size)

    method, threshold = _resolve("num", policy, ref.n, n_values)
    if method.name == "wasserstein":
        score = _wasserstein_distance(ref, values) / max(ref.std, WASSERSTEIN_MIN_NORM)
    elif method.name == "ks":
        score = _ks_p_value(ref, values)
    elif ref.values.size > BINNED_ABOVE_VALUES:
        ref_pct, cur_pct = _sturges_binned(ref, values, _is_integer_dtype(series))
        score = _binned_score(method.name, ref_pct, cur_pct)
    else:
        cur_values, cur_counts = current_distinct()
        keys = np.union1d(ref.values, cur_values)
        ref_aligned = np.zeros(keys.size, dtype=np.int64)
        ref_aligned[np.searchsorted(keys, ref.values)] = ref.counts_or_ones()
        cur_aligned = np.zeros(keys.size, dtype=np.int64)
        cur_aligned[np.searchsorted(keys, cur_values)] = cur_counts
        score = _count_score(method.name, ref_aligned, cur_aligned, first=0)
    return _column(name, "num", method, threshold, score)


def _categorical_drift(name: str, profile: ReferenceProfile, series: pd.Series, policy: DriftPolicy) -> ColumnDrift:
    ref = profile._cat[name]
    keys, counts = _category_counts(series)
    if not keys:
        method, threshold = _resolve("cat", policy, ref.n, lambda: len(ref.categories))
        return _column(name, "cat", method, threshold, math.nan, _ALL_NULL_NOTE)
    index = profile._cat_index[name]
    positions = np.fromiter((index.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
    unseen = positions < 0
    n_unseen = int(unseen.sum())
    k = len(ref.categories)
    positions[unseen] = np.arange(k, k + n_unseen)
    ref_aligned = np.concatenate([ref.counts, np.zeros(n_unseen, dtype=np.int64)])
    cur_aligned = np.zeros(k + n_unseen, dtype=np.int64)
    cur_aligned[positions] = counts
    method, threshold = _resolve("cat", policy, ref.n, lambda: k + n_unseen)
    first = 0
    if method.name == "z":
        all_keys = list(ref.categories) + [key for key, u in zip(keys, unseen, strict=True) if u]
        # An unorderable mix makes Evidently raise; the two-sided p-value does not depend on the choice.
        with contextlib.suppress(TypeError):
            first = all_keys.index(min(all_keys))
    score = _count_score(method.name, ref_aligned, cur_aligned, first=first)
    note = f"{n_unseen} categor{'y' if n_unseen == 1 else 'ies'} unseen in the reference" if n_unseen else None
    return _column(name, "cat", method, threshold, score, note)


# --------------------------------------------------------------------------------------------
# Statistics (each mirrors one Evidently stattest module, on counts instead of raw rows)
# --------------------------------------------------------------------------------------------


def _wasserstein_distance(ref: _NumRef, cur: np.ndarray) -> float:
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
        values, counts = _unique_sorted(cur)
        return _quantile_l1(ref.values, ref.counts, values, counts)
    return _quantile_l1(ref.values, ref.counts, cur, None)


def _quantile_l1(r: np.ndarray, r_counts: np.ndarray | None, c: np.ndarray, c_counts: np.ndarray | None) -> float:
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


def _ks_p_value(ref: _NumRef, cur: np.ndarray) -> float:
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
        return float(stats.ks_2samp(a, b).pvalue)
    hi, lo = sorted([float(big_n), float(n)], reverse=True)
    en = hi * lo / (hi + lo)
    return float(np.clip(stats.kstwo.sf(d, np.round(en)), 0, 1))


def _count_score(method: str, ref_counts: np.ndarray, cur_counts: np.ndarray, *, first: int) -> float:
    """Evidently's count-based stattests on aligned per-value counts (union of reference and batch values).

    ``first`` is the position of the smallest value, the one Evidently's Z-test tests against.
    """
    big_n, n = int(ref_counts.sum()), int(cur_counts.sum())
    if method == "chisquare":
        f_exp = ref_counts * (n / big_n)
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(stats.chisquare(cur_counts, f_exp)[1])
    if method == "z":
        return _z_p_value(ref_counts, cur_counts, first)
    ref_pct, cur_pct = ref_counts / big_n, cur_counts / n
    return _binned_score(method, ref_pct, cur_pct)


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
    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def _binned_score(method: str, ref_pct: np.ndarray, cur_pct: np.ndarray) -> float:
    if method == "jensenshannon":
        return float(distance.jensenshannon(ref_pct, cur_pct, None))
    ref_pct, cur_pct = _fill_zeroes(ref_pct), _fill_zeroes(cur_pct)
    if method == "psi":
        return float(np.sum((ref_pct - cur_pct) * np.log(ref_pct / cur_pct)))
    if method == "kl_div":
        return float(stats.entropy(ref_pct, cur_pct))
    raise AssertionError(method)


def _fill_zeroes(pct: np.ndarray) -> np.ndarray:
    """Evidently's ``get_binned_data(feel_zeroes=True)`` replacement of empty bins."""
    pct = pct.astype(np.float64, copy=True)
    smallest = min(pct[pct != 0])
    np.place(pct, pct == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001)
    return pct


def _sturges_binned(ref: _NumRef, cur: np.ndarray, cur_integer: bool) -> tuple[np.ndarray, np.ndarray]:
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


# --------------------------------------------------------------------------------------------
# Column access helpers
# --------------------------------------------------------------------------------------------


def _require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DriftInputError(f"the {what} is missing profiled column(s): {missing}")


def _is_bool(series: pd.Series) -> bool:
    return pd.api.types.is_bool_dtype(series.dtype)


def _is_integer_dtype(series: pd.Series) -> bool:
    return pd.api.types.is_integer_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)


def _finite_numeric(series: pd.Series, name: str, what: str) -> tuple[np.ndarray, bool]:
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


def _cleaned_series(series: pd.Series) -> pd.Series:
    """The column as Evidently tests it: +/-inf replaced by NaN, then NaN dropped (dtype kept)."""
    return series.replace([-np.inf, np.inf], np.nan).dropna().reset_index(drop=True)


def _unique_sorted(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and counts of a sorted array (one pass, no second sort)."""
    if sorted_values.size == 0:
        return sorted_values, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], sorted_values[1:] != sorted_values[:-1])))
    counts = np.diff(np.append(starts, sorted_values.size)).astype(np.int64)
    return sorted_values[starts], counts


def _category_counts(series: pd.Series) -> tuple[list[Any], np.ndarray]:
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


def _check_category_value(column: str, value: Any) -> None:
    if isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value)):
        return
    raise DriftInputError(
        f"categorical column {column!r} has a value of type {type(value).__name__} ({value!r}); "
        "profiles store str, int, float and bool categories"
    )


# --------------------------------------------------------------------------------------------
# Deterministic samples for Evidently and their serialisation
# --------------------------------------------------------------------------------------------


def _sample_positions(
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


def _clean_for_evidently(frame: pd.DataFrame, numerical: Sequence[str]) -> pd.DataFrame:
    out = frame.copy()
    for name in numerical:
        col = out[name]
        if pd.api.types.is_float_dtype(col.dtype) and isinstance(col.dtype, np.dtype):
            values = col.to_numpy(copy=True)
            values[np.isinf(values)] = np.nan
            out[name] = values
    return out


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


def sample_batch(profile: ReferenceProfile, current: pd.DataFrame, sample_size: int | None = None) -> pd.DataFrame:
    """The deterministic batch sample ``render_evidently_report`` hands to Evidently (profiled columns only)."""
    _require_columns(current, profile.columns, "batch")
    size = DEFAULT_SAMPLE_SIZE if sample_size is None else int(sample_size)
    positions = _sample_positions(current, profile.numerical, profile.categorical, size, profile.seed)
    sample = _clean_for_evidently(current.iloc[positions][profile.columns], profile.numerical)
    return sample.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Evidently's HTML report
# --------------------------------------------------------------------------------------------


def render_evidently_report(
    profile: ReferenceProfile,
    current: pd.DataFrame,
    policy: DriftPolicy,
    html_path: str,
    *,
    sample_size: int | None = None,
) -> DriftResult:
    """Run Evidently's DataDriftPreset on the reference sample and a batch sample; save its HTML.

    Returns Evidently's own per-column verdicts, read from the snapshot by metric type and column
    name (ValueDrift value, resolved method and threshold; its drift test's FAIL/SUCCESS status).
    Batch columns with no finite value cannot be tested by Evidently (it raises); they are left out
    of the report and carry the engine's defined verdict, so the share is over all profiled columns.
    ``sample_size`` is the batch sample's size (default ``DEFAULT_SAMPLE_SIZE``); the reference
    sample was fixed when the profile was built.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    if len(current) == 0:
        raise DriftInputError("the batch has no rows")
    known = set(profile.columns)
    ignored = [str(c) for c in current.columns if c not in known]
    batch = sample_batch(profile, current, sample_size)
    reference = profile.sample()
    untestable: dict[str, ColumnDrift] = {}
    for name in profile.columns:
        kind: ColumnKind = "num" if name in profile.numerical else "cat"
        valid = (
            _finite_numeric(batch[name], name, "batch")[0].size > 0
            if kind == "num"
            else bool(batch[name].notna().any())
        )
        if not valid:
            n_ref = profile._num[name].n if kind == "num" else profile._cat[name].n
            n_ref_values = profile._num[name].values.size if kind == "num" else len(profile._cat[name].categories)
            method, threshold = _resolve(kind, policy, n_ref, lambda n=n_ref_values: n)
            untestable[name] = _column(
                name, kind, method, threshold, math.nan, _ALL_NULL_NOTE + "; left out of the Evidently report"
            )
    numerical = [c for c in profile.numerical if c not in untestable]
    categorical = [c for c in profile.categorical if c not in untestable]
    tested = numerical + categorical
    evidently_columns: dict[str, ColumnDrift] = {}
    if tested:
        definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
        preset = DataDriftPreset(
            columns=tested,
            num_method=policy.num_method,
            cat_method=policy.cat_method,
            num_threshold=policy.num_threshold,
            cat_threshold=policy.cat_threshold,
            drift_share=policy.drift_share,
        )
        snapshot = Report([preset], include_tests=True).run(
            Dataset.from_pandas(batch[tested], data_definition=definition),
            Dataset.from_pandas(reference[tested], data_definition=definition),
        )
        snapshot.save_html(html_path)
        evidently_columns = parse_evidently_snapshot(snapshot.dict(), set(numerical))
    else:
        with open(html_path, "w", encoding="utf-8") as f:
            f.write("<html><body><p>No column of this batch has a non-null value; nothing to report.</p></body></html>")
    columns = [evidently_columns.get(name) or untestable[name] for name in profile.columns]
    return _result(columns, policy.drift_share, len(current), ignored)


def parse_evidently_snapshot(snapshot: dict[str, Any], numerical: set[str]) -> dict[str, ColumnDrift]:
    """Evidently ValueDrift results from ``snapshot.dict()``, keyed by column (never by position).

    The verdict is the FAIL/SUCCESS status of that metric's drift test, so the report must be run
    with ``include_tests=True``; ``numerical`` names the numerical columns (for ``column_type``).
    """
    status: dict[str, str] = {}
    for test in snapshot.get("tests", []):
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type") == "evidently:metric_v2:ValueDrift":
            status[params["column"]] = test["status"]
    out: dict[str, ColumnDrift] = {}
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if config.get("type") != "evidently:metric_v2:ValueDrift":
            continue
        name = config["column"]
        resolved = config["method"]
        method = _METHOD_BY_LABEL.get(resolved) or _METHODS.get(resolved)
        if method is None:
            raise ValueError(f"Evidently used drift method {resolved!r} for {name!r}, unknown to this module")
        if name not in status:
            raise ValueError(f"Evidently's snapshot has no drift test for column {name!r}")
        out[name] = ColumnDrift(
            column=name,
            column_type="num" if name in numerical else "cat",
            method=method.name,
            method_label=method.label,
            threshold=float(config["threshold"]),
            score=float(metric["value"]),
            drifted=status[name] == "FAIL",
        )
    return out
