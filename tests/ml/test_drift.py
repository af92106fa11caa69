"""The fast drift engine (mlops_assets.ml.drift) against Evidently 0.7's DataDriftPreset itself.

Each comparison runs one real Evidently report on a small frame whose columns cover one row of
the method-selection table each, and asserts the engine's score within 1e-9 and the identical
method, threshold and verdict per column, plus the dataset verdict. Evidently's results are read
here independently of the module's own snapshot parser.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mlops_assets.ml.drift import (
    DriftInputError,
    DriftPolicy,
    DriftResult,
    ReferenceProfile,
    detect_drift,
    infer_column_kinds,
    render_evidently_report,
    sample_batch,
    verdict_mismatches,
)
from mlops_assets.ml.drift.profile import NumericReference
from mlops_assets.ml.drift.sampling import sample_positions
from mlops_assets.ml.drift.stats import ks_p_value, quantile_l1, sturges_binned, wasserstein_distance
from tests.conftest import gss

TOL = 1e-9

# Column -> expected method for a reference of > 1000 rows ("large") and <= 1000 rows ("small").
METHOD_TABLE: dict[str, dict[str, str]] = {
    "num_many": {"large": "wasserstein", "small": "ks"},
    "num_int_many": {"large": "wasserstein", "small": "ks"},
    "num_few": {"large": "jensenshannon", "small": "chisquare"},
    "num_binary": {"large": "jensenshannon", "small": "z"},
    "cat_many": {"large": "jensenshannon", "small": "chisquare"},
    "cat_binary": {"large": "jensenshannon", "small": "z"},
    "num_nan_inf": {"large": "wasserstein", "small": "ks"},
    "num_const": {"large": "jensenshannon", "small": "z"},
    "num_const_moved": {"large": "jensenshannon", "small": "z"},
    "cat_unseen": {"large": "jensenshannon", "small": "chisquare"},
}
NUMERICAL = ["num_many", "num_int_many", "num_few", "num_binary", "num_nan_inf", "num_const", "num_const_moved"]
CATEGORICAL = ["cat_many", "cat_binary", "cat_unseen"]


def _frame(n: int, shift: float, seed: int, *, current: bool) -> pd.DataFrame:
    """One column per row of METHOD_TABLE; ``shift`` moves half of them so both verdicts occur."""
    rng = np.random.default_rng(seed)
    nan_inf = rng.normal(0.0, 1.0, n)
    nan_inf[rng.random(n) < 0.05] = np.nan
    nan_inf[rng.random(n) < 0.02] = np.inf
    nan_inf[rng.random(n) < 0.02] = -np.inf
    p_many = np.array([0.3, 0.2, 0.2, 0.1, 0.1, 0.1]) if not current else np.array([0.15, 0.2, 0.2, 0.15, 0.15, 0.15])
    unseen = ["a", "b", "c", "d"] + (["new1", "new2"] if current else [])
    return pd.DataFrame(
        {
            "num_many": rng.normal(shift, 1.0, n),
            # Integer dtype with > 20 values: pinned JS/PSI/K-L bin it (Sturges edges over both samples).
            "num_int_many": rng.integers(0, 30, n) + (3 if current else 0),
            "num_few": rng.choice([0.0, 1.0, 2.0], n, p=[0.5, 0.3, 0.2]),
            "num_binary": rng.integers(0, 2, n),
            "num_nan_inf": nan_inf,
            "num_const": np.full(n, 3.0),
            "num_const_moved": np.full(n, 4.0 if current else 3.0),
            "cat_many": rng.choice(np.array(list("uvwxyz"), dtype=object), n, p=p_many),
            "cat_binary": pd.Series(rng.choice(["yes", "no", None], n, p=[0.6, 0.35, 0.05]), dtype=object),
            "cat_unseen": rng.choice(np.array(unseen, dtype=object), n),
        }
    )


@functools.cache
def _data(size: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_ref, n_cur = (3000, 2000) if size == "large" else (600, 500)
    return _frame(n_ref, 0.0, 1, current=False), _frame(n_cur, 0.3, 2, current=True)


def _evidently(
    reference: pd.DataFrame, current: pd.DataFrame, numerical: list[str], categorical: list[str], policy: DriftPolicy
) -> tuple[dict[str, dict[str, Any]], float]:
    """Evidently's per-column (method label, threshold, score, drifted) and its drifted share."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    preset = DataDriftPreset(
        columns=numerical + categorical,
        num_method=policy.num_method,
        cat_method=policy.cat_method,
        num_threshold=policy.num_threshold,
        cat_threshold=policy.cat_threshold,
        drift_share=policy.drift_share,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([preset], include_tests=True).run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
    raw = snapshot.dict()
    status = {
        t["metric_config"]["params"]["column"]: t["status"]
        for t in raw["tests"]
        if t["metric_config"]["params"]["type"].endswith(":ValueDrift")
    }
    columns: dict[str, dict[str, Any]] = {}
    share = math.nan
    for metric in raw["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            columns[config["column"]] = {
                "method": config["method"],
                "threshold": config["threshold"],
                "score": metric["value"],
                "drifted": status[config["column"]] == "FAIL",
            }
        elif config["type"].endswith(":DriftedColumnsCount"):
            share = metric["value"]["share"]
    return columns, share


@functools.cache
def _compared(size: str, policy: DriftPolicy) -> tuple[DriftResult, dict[str, dict[str, Any]], float]:
    reference, current = _data(size)
    profile = ReferenceProfile.build(reference, numerical=NUMERICAL, categorical=CATEGORICAL)
    return detect_drift(profile, current, policy), *_evidently(reference, current, NUMERICAL, CATEGORICAL, policy)


def _assert_same(result: DriftResult, evidently: dict[str, dict[str, Any]], share: float, columns: list[str]) -> None:
    for name in columns:
        ours, theirs = result.column(name), evidently[name]
        # Evidently reports the display label when it chose the method and the name when pinned.
        assert theirs["method"] in (ours.method_label, ours.method), name
        assert ours.threshold == pytest.approx(theirs["threshold"], abs=0), name
        if math.isnan(theirs["score"]):
            assert math.isnan(ours.score), name
        else:
            assert abs(ours.score - theirs["score"]) <= TOL, (name, ours.score, theirs["score"])
        assert ours.drifted == theirs["drifted"], name
    assert result.drifted_share == pytest.approx(share, abs=1e-12)


@pytest.mark.parametrize("size", ["large", "small"])
@pytest.mark.parametrize("column", list(METHOD_TABLE))
def test_default_methods_match_evidently(size: str, column: str) -> None:
    result, evidently, share = _compared(size, DriftPolicy())
    assert result.column(column).method == METHOD_TABLE[column][size]
    _assert_same(result, evidently, share, [column])


@pytest.mark.parametrize("size", ["large", "small"])
def test_dataset_verdict_matches_evidently(size: str) -> None:
    result, _, share = _compared(size, DriftPolicy())
    assert 0 < result.drifted_share < 1
    assert result.dataset_drift == (share >= 0.5)
    tighter = DriftPolicy(drift_share=result.drifted_share)
    assert detect_drift(
        ReferenceProfile.build(_data(size)[0], numerical=NUMERICAL, categorical=CATEGORICAL), _data(size)[1], tighter
    ).dataset_drift


PINNED = [
    DriftPolicy(num_method="ks", cat_method="chisquare"),
    DriftPolicy(num_method="psi", cat_method="psi", num_threshold=0.05, cat_threshold=0.2),
    DriftPolicy(num_method="kl_div", cat_method="kl_div", drift_share=0.3),
    DriftPolicy(num_method="jensenshannon", cat_method="jensenshannon", num_threshold=0.05),
    DriftPolicy(num_method="wasserstein", num_threshold=0.2, cat_threshold=0.01),
]


@pytest.mark.parametrize("policy", PINNED, ids=lambda p: f"{p.num_method}-{p.cat_method}")
def test_pinned_methods_and_thresholds_match_evidently(policy: DriftPolicy) -> None:
    result, evidently, share = _compared("large", policy)
    _assert_same(result, evidently, share, NUMERICAL + CATEGORICAL)
    assert result.dataset_drift == (share >= policy.drift_share)


def test_one_row_batch_matches_evidently() -> None:
    reference, current = _data("large")
    complete = np.isfinite(current[NUMERICAL]).all(axis=1) & current[CATEGORICAL].notna().all(axis=1)
    one = current[complete].iloc[[0]].reset_index(drop=True)
    profile = ReferenceProfile.build(reference, numerical=NUMERICAL, categorical=CATEGORICAL)
    result = detect_drift(profile, one)
    assert result.n_rows == 1
    evidently, share = _evidently(reference, one, NUMERICAL, CATEGORICAL, DriftPolicy())
    _assert_same(result, evidently, share, NUMERICAL + CATEGORICAL)


def test_scores_equal_scipy_on_random_samples() -> None:
    """Wasserstein and K-S (exact and asymptotic regimes) against the scipy calls Evidently makes."""
    rng = np.random.default_rng(11)
    for trial in range(400):
        m, n = int(rng.integers(1, 80)), int(rng.integers(1, 80))
        if trial % 3 == 0:
            ref_raw, cur_raw = rng.normal(size=m), rng.normal(rng.normal(), 1, size=n)
        else:
            ref_raw = rng.integers(0, 7, size=m).astype(float)
            cur_raw = rng.integers(0, 9, size=n).astype(float)
        ref = _ref(ref_raw)
        cur = np.sort(cur_raw)
        assert abs(wasserstein_distance(ref, cur) - stats.wasserstein_distance(ref_raw, cur_raw)) <= 1e-12
        assert abs(ks_p_value(ref, cur) - stats.ks_2samp(ref_raw, cur_raw).pvalue) <= 1e-12
        values, counts = np.unique(cur, return_counts=True)
        compressed = quantile_l1(ref.values, ref.counts, values, counts)
        assert abs(compressed - stats.wasserstein_distance(ref_raw, cur_raw)) <= 1e-12
    ref_raw, cur_raw = rng.normal(size=900), rng.normal(0.05, 1, size=30_000)
    assert abs(ks_p_value(_ref(ref_raw), np.sort(cur_raw)) - stats.ks_2samp(ref_raw, cur_raw).pvalue) <= 1e-12


def test_gss_wages_years_match_evidently() -> None:
    """Real data with NaNs: GSS wages, reference = years <= 1990, batch = one later year."""
    frame = gss()
    frame = frame[frame["realrinc"].notna()]
    numerical, categorical = ["age", "prestg10", "childs"], ["occrecode", "wrkstat", "educcat", "maritalcat", "gender"]
    reference = frame[frame["year"] <= 1990][numerical + categorical].reset_index(drop=True)
    profile = ReferenceProfile.build(reference, numerical=numerical, categorical=categorical)
    batch = frame[frame["year"] == 2018][numerical + categorical].reset_index(drop=True)
    result = detect_drift(profile, batch)
    evidently, share = _evidently(reference, batch, numerical, categorical, DriftPolicy())
    _assert_same(result, evidently, share, numerical + categorical)
    assert result.column("age").method == "wasserstein" and result.column("gender").method == "jensenshannon"


@pytest.mark.parametrize("integer", [False, True])
def test_binning_equals_evidently_get_binned_data(integer: bool) -> None:
    """Sturges bins as Evidently computes them, including numpy's width >= 1 rule for integers
    (which only bites above ~500k rows, too many for a report in a unit test)."""
    from evidently.legacy.calculations.stattests.utils import get_binned_data
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(4)
    if integer:
        # 21 values over 700k rows: Sturges width 20 / (log2(700k) + 1) < 1, so numpy widens it to 1.
        ref_raw, cur_raw = rng.integers(0, 21, 400_000), rng.integers(1, 21, 300_000)
    else:
        ref_raw, cur_raw = rng.normal(size=5000), rng.normal(0.3, 1, size=3000)
    ref = _ref(ref_raw.astype(float))
    ref = NumericReference(values=ref.values, counts=ref.counts, std=ref.std, integer=integer)
    ours = sturges_binned(ref, np.sort(cur_raw.astype(float)), integer)
    theirs = get_binned_data(pd.Series(ref_raw), pd.Series(cur_raw), ColumnType.Numerical, 30, False)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


def _ref(raw: np.ndarray) -> NumericReference:
    values, counts = np.unique(raw, return_counts=True)
    return NumericReference(
        values=values, counts=None if (counts == 1).all() else counts, std=float(np.std(raw)), integer=False
    )


# ---- defined behaviour at the edges ---------------------------------------------------------


def _profile() -> tuple[ReferenceProfile, pd.DataFrame]:
    reference, current = _data("large")
    return ReferenceProfile.build(reference, numerical=NUMERICAL, categorical=CATEGORICAL), current


def test_all_null_column_is_drifted_with_a_note_where_evidently_raises() -> None:
    profile, current = _profile()
    batch = current.copy()
    batch["num_many"] = np.nan
    batch["cat_many"] = None
    result = detect_drift(profile, batch)
    for name, method in (("num_many", "wasserstein"), ("cat_many", "jensenshannon")):
        col = result.column(name)
        assert math.isnan(col.score) and col.drifted and col.method == method
        assert col.note is not None and "all values null" in col.note
    with pytest.raises(ValueError, match="empty column"):
        _evidently(_data("large")[0], batch, ["num_many"], [], DriftPolicy())


def test_only_inf_counts_as_all_null() -> None:
    profile, current = _profile()
    batch = current.assign(num_many=np.where(np.arange(len(current)) % 2, np.inf, -np.inf))
    assert detect_drift(profile, batch).column("num_many").note is not None


def test_constant_columns() -> None:
    result, _, _ = _compared("small", DriftPolicy())
    assert result.column("num_const").score == 1.0 and not result.column("num_const").drifted
    assert result.column("num_const_moved").drifted
    result, _, _ = _compared("large", DriftPolicy())
    assert result.column("num_const").score == 0.0


def test_unseen_categories_are_noted() -> None:
    result, _, _ = _compared("large", DriftPolicy())
    assert result.column("cat_unseen").note == "2 categories unseen in the reference"
    small, _, _ = _compared("small", DriftPolicy())
    assert small.column("cat_unseen").score == 0.0 and small.column("cat_unseen").drifted  # chi-square, as Evidently


def test_missing_column_is_an_error_naming_it() -> None:
    profile, current = _profile()
    with pytest.raises(DriftInputError, match=r"\['num_few', 'cat_unseen'\]"):
        detect_drift(profile, current.drop(columns=["num_few", "cat_unseen"]))


def test_extra_columns_are_ignored_and_reported() -> None:
    profile, current = _profile()
    result = detect_drift(profile, current.assign(extra=1.0, other="x"))
    assert result.ignored_columns == ["extra", "other"]
    assert [c.column for c in result.columns] == NUMERICAL + CATEGORICAL


def test_empty_batch_and_wrong_dtype_are_errors() -> None:
    profile, current = _profile()
    with pytest.raises(DriftInputError, match="no rows"):
        detect_drift(profile, current.iloc[:0])
    with pytest.raises(DriftInputError, match="num_many"):
        detect_drift(profile, current.assign(num_many="text"))


def test_reference_validation() -> None:
    reference, _ = _data("small")
    with pytest.raises(DriftInputError, match="num_many"):
        ReferenceProfile.build(reference.assign(num_many=np.nan), numerical=["num_many"], categorical=[])
    with pytest.raises(DriftInputError, match="missing"):
        ReferenceProfile.build(reference, numerical=["nope"], categorical=[])
    with pytest.raises(DriftInputError, match="both"):
        ReferenceProfile.build(reference, numerical=["num_few"], categorical=["num_few"])


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="not reproduced"):
        DriftPolicy(num_method="anderson")
    with pytest.raises(ValueError, match="numerical"):
        DriftPolicy(num_method="chisquare")
    with pytest.raises(ValueError, match="categorical"):
        DriftPolicy(cat_method="wasserstein")


def test_nullable_and_category_dtypes_match_plain_ones() -> None:
    profile, current = _profile()
    batch = current.astype({"num_binary": "Int64", "cat_many": "category"})
    batch.loc[:3, "num_binary"] = pd.NA
    plain = current.copy()
    plain.loc[:3, "num_binary"] = np.nan
    assert detect_drift(profile, batch) == detect_drift(profile, plain)


def test_threads_do_not_change_results() -> None:
    profile, current = _profile()
    big = pd.concat([current] * 100, ignore_index=True)
    assert detect_drift(profile, big, max_workers=1) == detect_drift(profile, big, max_workers=4)


# ---- profile storage and the Evidently report ---------------------------------------------------


def test_profile_round_trip_without_pickle() -> None:
    profile, current = _profile()
    data = profile.to_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in zf.namelist():
            if name.endswith(".npy"):
                np.lib.format.read_array(zf.open(name), allow_pickle=False)
    loaded = ReferenceProfile.from_bytes(data)
    assert loaded == profile
    assert loaded.numerical == NUMERICAL and loaded.categorical == CATEGORICAL and loaded.n_rows == 3000
    assert detect_drift(loaded, current) == detect_drift(profile, current)
    pd.testing.assert_frame_equal(loaded.sample(), profile.sample())
    with pytest.raises(ValueError):
        ReferenceProfile.from_bytes(b"not a profile")


def test_sample_keeps_method_selection() -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    frame = pd.DataFrame(
        {
            "mostly_null": np.where(rng.random(n) < 0.93, np.nan, rng.normal(size=n)),
            "rare_sixth": np.where(np.arange(n) == 17, 9.0, rng.integers(0, 5, n).astype(float)),
            "sparse": np.where(rng.random(n) < 0.99, np.nan, 1.0),
        }
    )
    positions = sample_positions(frame, list(frame.columns), [], 2000, seed=0)
    sample = frame.iloc[positions]
    assert sample["mostly_null"].notna().sum() > 1000 < frame["mostly_null"].notna().sum()
    assert sample["rare_sixth"].nunique() == 6
    assert sample["sparse"].notna().sum() == frame["sparse"].notna().sum()
    assert np.array_equal(positions, sample_positions(frame, list(frame.columns), [], 2000, seed=0))


def test_evidently_report_agrees_with_the_check(tmp_path: Path) -> None:
    profile, current = _profile()
    html = tmp_path / "drift.html"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = render_evidently_report(profile, current.assign(extra=1), DriftPolicy(), str(html))
    assert html.stat().st_size > 10_000 and "<html" in html.read_text()[:2000].lower()
    check = detect_drift(profile, current)
    assert verdict_mismatches(check, report) == []
    assert report.ignored_columns == ["extra"]
    for ours, theirs in zip(check.columns, report.columns, strict=True):
        assert abs(ours.score - theirs.score) <= TOL


def test_sampled_report_keeps_methods(tmp_path: Path) -> None:
    reference, current = _data("large")
    profile = ReferenceProfile.build(reference, numerical=NUMERICAL, categorical=CATEGORICAL, sample_size=1200)
    assert 1000 < len(profile.sample()) < len(reference)
    assert len(sample_batch(profile, current, 1500)) < len(current)
    batch = current.assign(num_few=np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = render_evidently_report(profile, batch, DriftPolicy(), str(tmp_path / "r.html"), sample_size=1500)
    check = detect_drift(profile, batch)
    assert [c.method for c in report.columns] == [c.method for c in check.columns]
    assert report.column("num_few").note is not None and report.column("num_few").drifted
    for name in ("num_many", "num_const", "num_const_moved", "cat_unseen"):
        assert report.column(name).drifted == check.column(name).drifted


def test_infer_column_kinds_follows_evidently() -> None:
    from evidently.core.datasets import infer_column_type
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "f": rng.normal(size=100),
            "i_few": rng.integers(0, 4, 100),
            "i_many": rng.integers(0, 50, 100),
            "s": rng.choice(["a", "b"], 100).astype(object),
            "text": [f"t{i}" for i in range(100)],
            "b": rng.random(100) < 0.5,
            "c": pd.Categorical(rng.choice(["x", "y"], 100)),
        }
    )
    numerical, categorical = infer_column_kinds(frame)
    assert numerical == [c for c in frame if infer_column_type(frame[c]) == ColumnType.Numerical]
    assert categorical == [c for c in frame if infer_column_type(frame[c]) == ColumnType.Categorical]


# ---- the report is safe to open whatever the data holds ------------------------------------------

# A category value that, embedded raw in the report's data <script>, closes it and runs its own
# (no quotes: JSON would escape them with a backslash, a syntax error that keeps it from running).
HOSTILE = "</script><script>document.documentElement.dataset.injected=1</script>"
GSS_NUMERICAL = ["age", "prestg10", "childs"]
GSS_CATEGORICAL = ["occrecode", "wrkstat", "educcat", "maritalcat", "gender"]


class _Scripts(HTMLParser):
    """The script elements of a document as a browser's tokenizer splits them: (attributes, text)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[tuple[list[tuple[str, str | None]], str]] = []
        self.html_attrs: list[tuple[str, str | None]] = []
        self._open: list[tuple[str, str | None]] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "html":
            self.html_attrs = attrs
        if tag == "script":
            self._open, self._text = attrs, []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._open is not None:
            self.scripts.append((self._open, "".join(self._text)))
            self._open = None


def _scripts(html: str) -> _Scripts:
    parser = _Scripts()
    parser.feed(html)
    parser.close()
    return parser


def _embedded_data(script: str) -> list[Any]:
    """The JSON values an Evidently data script assigns (``var metric_<id> = {...};`` twice)."""
    decoder = json.JSONDecoder()
    values = []
    for match in re.finditer(r"var (?:additional_graphs_)?metric_[0-9a-f]{32} = ", script):
        values.append(decoder.raw_decode(script, match.end())[0])
    return values


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _gss_frames(hostile_rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """GSS reference (years <= 1990) and the 2018 batch; ``hostile_rows`` rows of each carry HOSTILE."""
    frame = gss()
    frame = frame[frame["realrinc"].notna()][[*GSS_NUMERICAL, *GSS_CATEGORICAL, "year"]]
    reference = frame[frame["year"] <= 1990].drop(columns="year").reset_index(drop=True)
    batch = frame[frame["year"] == 2018].drop(columns="year").reset_index(drop=True)
    for part in (reference, batch):
        part["wrkstat"] = part["wrkstat"].astype(object)
        part.loc[: hostile_rows - 1, "wrkstat"] = HOSTILE
    return reference, batch


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, DriftResult]:
    """The report on plain GSS data and on GSS data with HOSTILE in a few rows (trained on and scored)."""
    out: dict[str, tuple[str, DriftResult]] = {}
    for name, rows in (("plain", 0), ("hostile", 12)):
        reference, batch = _gss_frames(rows)
        profile = ReferenceProfile.build(reference, numerical=GSS_NUMERICAL, categorical=GSS_CATEGORICAL)
        path = tmp_path_factory.mktemp(name) / "report.html"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = render_evidently_report(profile, batch, DriftPolicy(), str(path))
        out[name] = (path.read_text(encoding="utf-8"), result)
    return out["plain"][0], out["hostile"][0], out["hostile"][1]


def test_a_script_tag_in_the_data_adds_no_script_element(reports: tuple[str, str, DriftResult]) -> None:
    plain, hostile, _ = reports
    plain_scripts, hostile_scripts = _scripts(plain).scripts, _scripts(hostile).scripts
    # Evidently's own: its data, `var global`, its library and the call that draws the dashboard.
    assert len(plain_scripts) == 4
    assert [attrs for attrs, _ in hostile_scripts] == [attrs for attrs, _ in plain_scripts]
    assert _scripts(hostile).html_attrs == _scripts(plain).html_attrs == [("lang", "en")]
    data = hostile_scripts[0][1]
    assert "<" not in data and ">" not in data and "&" not in data


def test_a_script_tag_in_the_data_is_still_shown_as_the_value(reports: tuple[str, str, DriftResult]) -> None:
    _, hostile, result = reports
    values = _embedded_data(_scripts(hostile).scripts[0][1])
    assert len(values) == 2
    assert sum(s == HOSTILE for v in values for s in _strings(v)) >= 2  # reference and batch distributions
    assert result.column("wrkstat").method == "jensenshannon"


def test_escaping_changes_nothing_but_the_characters_it_escapes() -> None:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from mlops_assets.ml.drift.report import escape_embedded_data

    reference, batch = _gss_frames(5)
    definition = DataDefinition(numerical_columns=GSS_NUMERICAL, categorical_columns=GSS_CATEGORICAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([DataDriftPreset()], include_tests=True).run(
            Dataset.from_pandas(batch, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
    raw = snapshot.get_html_str(as_iframe=False)
    safe = escape_embedded_data(raw)
    start = re.search(r"var metric_[0-9a-f]{32} = ", raw).end()
    end = raw.index(";\n</script>", start)
    assert safe[:start] == raw[:start] and safe[len(safe) - (len(raw) - end) :] == raw[end:]
    decoder = json.JSONDecoder()

    def payloads(html: str) -> list[Any]:
        return [decoder.raw_decode(html, m.end())[0] for m in re.finditer(r"var \w*metric_[0-9a-f]{32} = ", html)]

    assert payloads(safe) == payloads(raw)
    assert HOSTILE in raw and HOSTILE not in safe
    assert "\\u003c/script\\u003e\\u003cscript\\u003e" in safe


@pytest.mark.skipif(
    not Path("/usr/bin/chromium").exists(),
    reason="/usr/bin/chromium is not installed: the report is not opened in a browser (apt-get install chromium)",
)
def test_opening_the_report_in_chromium_runs_no_injected_script(
    reports: tuple[str, str, DriftResult], tmp_path: Path
) -> None:
    _, hostile, _ = reports
    dashboard = re.search(r"var (metric_[0-9a-f]{32}) = ", hostile).group(1)
    # A probe appended to a copy of the page counts the value in the data as the browser parsed it.
    encoded = base64.b64encode(HOSTILE.encode()).decode()
    probe = (
        f"<script>document.body.dataset.hostile = "
        f'String(JSON.stringify(window.{dashboard}).split(atob("{encoded}")).length - 1)</script>'
    )
    page = tmp_path / "report.html"
    page.write_text(hostile.replace("</body>", probe + "</body>", 1), encoding="utf-8")
    dom = _chromium_dom(page, tmp_path / "profile")
    # The injected script would have added data-injected="1" to the root element.
    assert "data-injected" not in dict(_scripts(dom).html_attrs)
    # Evidently's own scripts ran: the dashboard was drawn into its root element with the columns.
    assert "wrkstat" in dom.split('id="root_', 1)[1]
    shown = re.search(r'<body[^>]* data-hostile="(\d+)"', dom)
    assert shown is not None
    expected = json.dumps(_embedded_data(_scripts(hostile).scripts[0][1])[0]).count(HOSTILE)
    assert int(shown.group(1)) == expected >= 2


def _chromium_dom(page: Path, profile_dir: Path) -> str:
    """The DOM after the page's scripts ran, from headless Chromium; its process group is always ended."""
    command = [
        "/usr/bin/chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        f"--user-data-dir={profile_dir}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}"
    return out


# ---- the check and the report are separable --------------------------------------------------------

_SEPARATE_PROCESS = """
import json, sys, warnings
import pandas as pd
from mlops_assets.ml.drift import DriftPolicy, ReferenceProfile, detect_drift, render_evidently_report

heavy = ("evidently", "scipy.stats")
before = [m for m in heavy if m in sys.modules]
profile = ReferenceProfile.from_bytes(open(sys.argv[1], "rb").read())
batch = pd.read_parquet(sys.argv[2])
if sys.argv[3] == "check":
    result = detect_drift(profile, batch)
else:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = render_evidently_report(profile, batch, DriftPolicy(), sys.argv[3])
after = [m for m in heavy if m in sys.modules]
print(json.dumps({"before": before, "after": after, "result": result.to_dict()}))
"""


def _in_fresh_process(profile: Path, batch: Path, mode: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _SEPARATE_PROCESS, str(profile), str(batch), mode],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_check_never_imports_evidently_and_the_report_renders_alone(tmp_path: Path) -> None:
    """From a stored profile and a batch file, each in its own process: the check loads neither
    Evidently nor scipy.stats (GSS gets the large-reference defaults), and the report needs no check."""
    reference, batch = _gss_frames(0)
    profile = ReferenceProfile.build(reference, numerical=GSS_NUMERICAL, categorical=GSS_CATEGORICAL)
    (tmp_path / "profile.bin").write_bytes(profile.to_bytes())
    batch.to_parquet(tmp_path / "batch.parquet")
    check = _in_fresh_process(tmp_path / "profile.bin", tmp_path / "batch.parquet", "check")
    assert check["before"] == [] and check["after"] == []
    html = tmp_path / "report.html"
    report = _in_fresh_process(tmp_path / "profile.bin", tmp_path / "batch.parquet", str(html))
    assert report["before"] == [] and "evidently" in report["after"]
    assert _scripts(html.read_text(encoding="utf-8")).scripts[0][1].lstrip().startswith("var metric_")
    expected = detect_drift(profile, batch).to_dict()
    assert check["result"] == json.loads(json.dumps(expected))
    assert [(c["column"], c["method"], c["drifted"]) for c in report["result"]["columns"]] == [
        (c["column"], c["method"], c["drifted"]) for c in expected["columns"]
    ]
