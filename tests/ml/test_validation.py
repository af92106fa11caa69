"""The inferred GE suite on real GSS batches: good batches pass, each kind of bad batch fails
with a message naming the column and the count; and the fast path gives Great Expectations' own
results on every edge case of the shipped expectation types."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_assets.ml.data import ResolvedColumns
from mlops_assets.ml.expectations import evaluate, reproducible
from mlops_assets.ml.validation import (
    NUMERIC_TYPES,
    Expectation,
    Suite,
    great_expectations_results,
    infer_suite,
    planned_checks,
    validate,
    validate_with_great_expectations,
)
from mlops_assets.spec import parse_spec
from tests.conftest import GSS_FEATURES, gss, gss_spec

COLUMNS = ResolvedColumns(GSS_FEATURES["numeric"], GSS_FEATURES["categorical"])


@pytest.fixture(scope="module")
def suite() -> Suite:
    spec = parse_spec(gss_spec("unused.parquet"), origin="test")
    frame = gss()
    return infer_suite(spec, COLUMNS, frame[frame["year"] <= 1976])


def batch(year: int = 2010):  # noqa: ANN201
    frame = gss()
    return frame[frame["year"] == year].reset_index(drop=True)


def failures(frame, suite: Suite) -> dict[str, str]:  # noqa: ANN001
    return {o.expectation.check: o.message for o in validate(frame, suite, batch="b") if not o.success}


def test_check_names_are_known_before_data(suite: Suite) -> None:
    spec = parse_spec(gss_spec("unused.parquet"), origin="test")
    assert [name for name, _, _ in planned_checks(spec, COLUMNS)] == [e.check for e in suite.expectations]
    assert Suite.from_json(suite.to_json()) == suite


def test_a_real_later_batch_passes(suite: Suite) -> None:
    failed = failures(batch(2010), suite)
    # The 2010 incomes outgrew the 1970s range: the label shifted, which warns and never blocks.
    assert list(failed) == ["realrinc_in_range"]
    assert "22 of 2044 rows (1.1%) unexpected" in failed["realrinc_in_range"]
    assert not any(o.blocking_failure for o in validate(batch(2010), suite, batch="b"))


def _wrong_type(f):  # noqa: ANN001, ANN202
    f["age"] = f["age"].astype(str)
    return f


def _out_of_range(f):  # noqa: ANN001, ANN202
    f.loc[:199, "prestg10"] = 900.0
    return f


def _unseen_categories(f):  # noqa: ANN001, ANN202
    f.loc[:99, "wrkstat"] = "Astronaut"
    return f


def _mostly_null(f):  # noqa: ANN001, ANN202
    f.loc[: len(f) // 2, "childs"] = np.nan
    return f


@pytest.mark.parametrize(
    ("damage", "check", "fragment"),
    [
        (_wrong_type, "age_numeric", "column 'age': age_numeric failed: 2044 of 2044 rows"),
        (lambda f: f.drop(columns=["childs"]), "childs_present", "column 'childs'"),
        (_out_of_range, "prestg10_in_range", "column 'prestg10': prestg10_in_range failed: 200 of 2044 rows"),
        (_unseen_categories, "wrkstat_known_categories", "100 of 2044 rows (4.9%) unexpected, e.g. ['Astronaut'"),
        (_mostly_null, "childs_not_null", "column 'childs': childs_not_null failed"),
        (lambda f: f.iloc[:0], "batch_not_empty", "batch_not_empty failed"),
    ],
)
def test_bad_batches_fail_naming_column_and_count(suite: Suite, damage, check: str, fragment: str) -> None:  # noqa: ANN001
    failed = failures(damage(batch(2010)), suite)
    assert check in failed
    assert fragment in failed[check]


def test_few_unseen_categories_are_tolerated(suite: Suite) -> None:
    frame = batch(2010)
    frame.loc[:4, "wrkstat"] = "Astronaut"  # 5 of 2044 rows, under the 1% tolerance
    assert "wrkstat_known_categories" not in failures(frame, suite)


# ---- the fast path gives Great Expectations' own results ---------------------------------------------


def _corpus_frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """One column per dtype and edge case the shipped expectation types meet."""
    rng = np.random.default_rng(seed)
    floats = rng.normal(50, 30, n)
    floats[::7] = np.nan
    floats[3], floats[4] = np.inf, -np.inf

    def cycle(values: list[object]) -> np.ndarray:
        return np.array(values * (n // len(values) + 1), dtype=object)[:n]

    return pd.DataFrame(
        {
            "f_float": floats,
            "f_int": rng.integers(-10, 120, n),
            "f_int32": rng.integers(-10, 120, n).astype("int32"),
            "f_float32": floats.astype("float32"),
            "f_Int64": pd.array(np.where(rng.random(n) < 0.2, None, rng.integers(0, 100, n)), dtype="Int64"),
            "f_Float64": pd.array(np.where(rng.random(n) < 0.2, None, rng.normal(50, 30, n)), dtype="Float64"),
            "f_bool": rng.random(n) < 0.5,
            "f_boolean": pd.array(np.where(rng.random(n) < 0.2, None, rng.random(n) < 0.5), dtype="boolean"),
            "f_obj_num": cycle([1, 2.5, None, 200, -5, np.nan]),
            "f_obj_mixed": cycle(["a", 1, 2.5, None, np.nan, "b", True]),
            "f_numstr": cycle(["1", "2", "3", None, "10"]),
            "f_str": rng.choice(np.array(["x", "y", "z", "new", None], dtype=object), n),
            "f_string": pd.array(rng.choice(np.array(["x", "y", "q", None], dtype=object), n), dtype="string"),
            "f_cat": pd.Categorical(rng.choice(np.array(["x", "y", "w", None], dtype=object), n)),
            "f_dt": pd.Series(pd.date_range("2020-01-01", periods=n, freq="D")).where(rng.random(n) > 0.2),
            "f_dttz": pd.Series(pd.date_range("2020-01-01", periods=n, freq="h", tz="UTC")),
            "f_allnull": np.full(n, np.nan),
            "f_allnone": np.array([None] * n, dtype=object),
            "f_const": np.full(n, 5.0),
        }
    )


def _e(type_: str, **kwargs: object) -> Expectation:
    column = kwargs.get("column")
    return Expectation(
        f"{type_}_{sorted(kwargs.items())}", type_, kwargs, column=column if isinstance(column, str) else None
    )


def _per_column(columns: list[str]) -> list[Expectation]:
    """The four column types the suite generates, as it generates them, on every column."""
    out = []
    for c in columns:
        out += [
            _e("ExpectColumnValuesToNotBeNull", column=c, mostly=0.8),
            _e("ExpectColumnValuesToBeInTypeList", column=c, type_list=NUMERIC_TYPES),
            _e("ExpectColumnValuesToBeBetween", column=c, min_value=0.0, max_value=100.0, mostly=0.7),
            _e("ExpectColumnValuesToBeInSet", column=c, value_set=["x", "y", "1", "2"], mostly=0.5),
        ]
    return out


def _variants() -> list[Expectation]:
    """Bounds, sets, type lists, mostly and table-level kwargs, on the columns where they differ."""
    out = [
        _e("ExpectTableRowCountToBeBetween", min_value=1),
        _e("ExpectTableRowCountToBeBetween", min_value=60, max_value=60),
        _e("ExpectTableRowCountToBeBetween", min_value=60, strict_min=True),
        _e("ExpectTableRowCountToBeBetween", max_value=60, strict_max=True),
        _e("ExpectColumnToExist", column="f_float"),
        _e("ExpectColumnToExist", column="nope"),
        _e("ExpectColumnToExist", column="f_int", column_index=1),
        _e("ExpectColumnToExist", column="f_int", column_index=2),
        _e("ExpectColumnToExist", column="f_int", column_index=99),
        _e("ExpectColumnToExist", column="f_int", column_index=0),
        _e("ExpectColumnValuesToNotBeNull", column="f_float"),
        _e("ExpectColumnValuesToNotBeNull", column="f_allnull", mostly=0.0),
    ]
    for c in ("f_float", "f_int32", "f_Int64", "f_obj_num", "f_bool"):
        out += [
            _e("ExpectColumnValuesToBeBetween", column=c, min_value=0, max_value=100),
            _e(
                "ExpectColumnValuesToBeBetween",
                column=c,
                min_value=0.0,
                max_value=100.0,
                strict_min=True,
                strict_max=True,
            ),
            _e("ExpectColumnValuesToBeBetween", column=c, min_value=5.0, max_value=5.0),
            _e("ExpectColumnValuesToBeBetween", column=c, min_value=1.0, max_value=5.0, strict_min=True),
            _e("ExpectColumnValuesToBeBetween", column=c, max_value=50.0, strict_max=True),
            _e("ExpectColumnValuesToBeBetween", column=c, min_value=50.0),
            _e("ExpectColumnValuesToBeBetween", column=c, min_value=100.0, max_value=0.0),
        ]
    for c in ("f_numstr", "f_int", "f_obj_mixed", "f_bool", "f_cat", "f_string"):
        out += [
            _e("ExpectColumnValuesToBeInSet", column=c, value_set=[1, 2, 2.5, True, "a", "x"]),
            _e("ExpectColumnValuesToBeInSet", column=c, value_set=[]),
        ]
    for c in ("f_obj_mixed", "f_string", "f_cat", "f_dt", "f_boolean", "f_allnone"):
        out += [
            _e("ExpectColumnValuesToBeInTypeList", column=c, type_list=["str", "int"], mostly=0.5),
            _e("ExpectColumnValuesToBeInTypeList", column=c, type_list=["datetime64[ns]", "boolean", "category"]),
            _e("ExpectColumnValuesToBeInTypeList", column=c, type_list=["CategoricalDtype", "StringDtype", "bool"]),
            _e("ExpectColumnValuesToBeInTypeList", column=c, type_list=["nosuchtype"]),
        ]
    return out


def _boundary_frame() -> tuple[pd.DataFrame, list[Expectation]]:
    """Ten rows where each share sits exactly on its ``mostly`` (GE passes at equality)."""
    frame = pd.DataFrame(
        {
            "two_nulls": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0, np.nan, 8.0, 9.0, 10.0],
            "two_of_eight_out": [0.0, 1.0, 2.0, 99.0, np.nan, 3.0, 98.0, np.nan, 4.0, 5.0],
            "one_of_four_unseen": ["a", None, "b", None, "zz", None, "a", None, None, None],
        }
    )
    return frame, [
        _e("ExpectColumnValuesToNotBeNull", column="two_nulls", mostly=0.8),
        _e("ExpectColumnValuesToNotBeNull", column="two_nulls", mostly=0.8000001),
        _e("ExpectColumnValuesToBeBetween", column="two_of_eight_out", min_value=0.0, max_value=10.0, mostly=0.75),
        _e("ExpectColumnValuesToBeBetween", column="two_of_eight_out", min_value=0.0, max_value=10.0, mostly=0.76),
        _e("ExpectColumnValuesToBeInSet", column="one_of_four_unseen", value_set=["a", "b"], mostly=0.75),
        _e("ExpectColumnValuesToBeInSet", column="one_of_four_unseen", value_set=["a", "b"], mostly=0.7500001),
    ]


def _same(a: object, b: object, path: str = "result") -> str | None:
    """Where ``a`` and ``b`` differ in value or Python type (NaN equals NaN), or None."""
    if a is b:  # also the missing-value singletons pd.NA and pd.NaT, which equal nothing
        return None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} {a!r} vs {type(b).__name__} {b!r}"
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return f"{path}: keys {list(a)} vs {list(b)}"
        for key in a:
            if (difference := _same(a[key], b[key], f"{path}.{key}")) is not None:
                return difference
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if (difference := _same(x, y, f"{path}[{i}]")) is not None:
                return difference
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def _differences(frame: pd.DataFrame, expectations: list[Expectation]) -> tuple[int, list[str]]:
    expected = great_expectations_results(frame, expectations)
    assert len(expected) == len(expectations)
    out = []
    for e in expectations:
        ours, theirs = evaluate(frame, e.type, e.kwargs), expected[e.check]
        if (ours.success, ours.exception_message) != (theirs.success, theirs.exception_message):
            out.append(
                f"{e.check}: {ours.success, ours.exception_message} vs {theirs.success, theirs.exception_message}"
            )
        elif (d := _same(ours.result, theirs.result)) is not None:
            out.append(f"{e.check}: {d}")
    return len(expected), out


@pytest.fixture(scope="module")
def corpus_frame() -> pd.DataFrame:
    return _corpus_frame()


def test_fast_path_equals_great_expectations_on_every_edge_case(corpus_frame: pd.DataFrame) -> None:
    expectations = _per_column(list(corpus_frame.columns)) + _variants()
    assert all(reproducible(e.type, e.kwargs) for e in expectations)
    compared, differences = _differences(corpus_frame, expectations)
    assert differences == []
    outcomes = [evaluate(corpus_frame, e.type, e.kwargs) for e in expectations]
    # The corpus reaches every branch: passes, failures, metric errors, lists cut at 20, unorderable values.
    assert compared == len(expectations) > 150
    assert {o.success for o in outcomes} == {True, False}
    errors = {(o.exception_message or "")[:30] for o in outcomes} - {""}
    assert errors == {
        "Column values, min_value, and ",
        "Invalid comparison between dty",
        "No recognized numpy/python typ",
        "min_value cannot be greater th",
    }
    assert any(len(o.result.get("partial_unexpected_list", [])) == 20 for o in outcomes)
    assert any("partial_unexpected_list" in o.result and "partial_unexpected_counts" not in o.result for o in outcomes)


def test_fast_path_equals_great_expectations_on_an_empty_frame(corpus_frame: pd.DataFrame) -> None:
    empty = corpus_frame.iloc[:0]
    compared, differences = _differences(empty, _per_column(list(empty.columns)) + _variants()[:4])
    assert differences == [] and compared > 70


def test_fast_path_reports_the_frames_own_index(corpus_frame: pd.DataFrame) -> None:
    shifted = _corpus_frame(seed=1).set_axis(pd.Index(np.arange(1000, 1060) * 3), axis=0)
    compared, differences = _differences(shifted, _per_column(["f_float", "f_str", "f_obj_mixed", "f_dt"]))
    assert differences == [] and compared == 16
    index = evaluate(
        shifted, "ExpectColumnValuesToBeBetween", {"column": "f_float", "min_value": 0.0, "max_value": 1.0}
    )
    assert index.result["partial_unexpected_index_list"][0] >= 3000


def test_fast_path_equals_great_expectations_exactly_at_mostly() -> None:
    frame, expectations = _boundary_frame()
    compared, differences = _differences(frame, expectations)
    assert differences == [] and compared == 6
    assert [evaluate(frame, e.type, e.kwargs).success for e in expectations] == [True, False] * 3


def _damaged_batches() -> dict[str, pd.DataFrame]:
    good = batch(2010)
    wrong = good.copy()
    wrong["age"] = wrong["age"].astype(str)
    wrong.loc[:199, "prestg10"] = 900.0
    wrong.loc[:99, "wrkstat"] = "Astronaut"
    wrong.loc[: len(wrong) // 2, "childs"] = np.nan
    storm = good.copy()
    storm["prestg10"] = storm["prestg10"].where(np.arange(len(storm)) % 3 != 0, np.inf)
    storm["childs"] = storm["childs"].astype("Int64")
    storm["gender"] = storm["gender"].astype("category")
    storm["occrecode"] = None
    storm["maritalcat"] = storm["maritalcat"].where(np.arange(len(storm)) % 5 != 0, 7)
    storm["realrinc"] = storm["realrinc"].where(np.arange(len(storm)) % 4 != 0, -5.0)
    label_text = good.assign(realrinc=good["realrinc"].astype(str).where(good["realrinc"].notna(), None))
    return {
        "good": good,
        "wrong": wrong,
        "storm": storm,
        "label_text": label_text,
        "unlabelled": good.assign(realrinc=np.nan),
        "no_label_column": good.drop(columns=["realrinc"]),
        "mostly_unlabelled": good.assign(realrinc=good["realrinc"].where(np.arange(len(good)) % 5 == 0)),
        "missing": good.drop(columns=["childs", "educcat"]),
        "empty": good.iloc[:0],
    }


@pytest.mark.parametrize(
    "name",
    ["good", "wrong", "storm", "missing", "empty", "label_text", "unlabelled", "no_label_column", "mostly_unlabelled"],
)
def test_validate_gives_great_expectations_outcomes_on_gss_batches(suite: Suite, name: str) -> None:
    frame = _damaged_batches()[name]
    ours, theirs = validate(frame, suite, batch="b"), validate_with_great_expectations(frame, suite, batch="b")
    assert [o.expectation.check for o in ours] == [e.check for e in suite.expectations]
    assert [o.expectation.check for o in theirs] == [e.check for e in suite.expectations]
    for a, b in zip(ours, theirs, strict=True):
        assert (a.success, a.unexpected_count, a.element_count, a.message) == (
            b.success,
            b.unexpected_count,
            b.element_count,
            b.message,
        ), a.expectation.check
        assert _same(a.observed, b.observed) is None, a.expectation.check
        assert _same(a.result, b.result) is None, a.expectation.check
    if name not in ("good", "unlabelled", "no_label_column"):
        assert not all(o.success for o in ours)


LABEL_CHECKS = ["realrinc_numeric", "realrinc_in_range", "realrinc_not_null"]


def test_the_label_has_learned_expectations_like_a_feature(suite: Suite) -> None:
    learned = {e.check: e for e in suite.expectations if e.column == "realrinc"}
    assert list(learned) == LABEL_CHECKS
    reference = gss()
    reference = reference[reference["year"] <= 1976]["realrinc"]
    span = reference.max() - reference.min()
    assert learned["realrinc_in_range"].kwargs["min_value"] == pytest.approx(reference.min() - 0.1 * span)
    assert learned["realrinc_not_null"].kwargs["mostly"] == pytest.approx(1 - reference.isna().mean() - 0.1, abs=1e-6)
    assert [learned[c].severity for c in LABEL_CHECKS] == ["error", "warn", "warn"]
    batches = _damaged_batches()
    assert "realrinc_numeric" in failures(batches["label_text"], suite)
    assert "realrinc_in_range" in failures(batches["storm"], suite)
    mostly_unlabelled = [o for o in validate(batches["mostly_unlabelled"], suite, batch="b") if not o.success]
    assert [(o.expectation.check, o.blocking_failure) for o in mostly_unlabelled] == [
        ("realrinc_in_range", False),
        ("realrinc_not_null", False),
    ]


@pytest.mark.parametrize("name", ["unlabelled", "no_label_column"])
def test_an_unlabelled_batch_passes_the_label_expectations_saying_why(suite: Suite, name: str) -> None:
    outcomes = {o.expectation.check: o for o in validate(_damaged_batches()[name], suite, batch="b")}
    assert all(o.success for o in outcomes.values())
    for check in LABEL_CHECKS:
        assert outcomes[check].message == (
            f"batch b, column 'realrinc': {check} passed: not checked, no row of the batch has a label "
            "(unlabelled rows are scored, not evaluated)"
        )


def test_a_positive_value_label_gets_its_known_values() -> None:
    label = {"column": "gender", "positive_value": "Female"}
    spec = parse_spec(gss_spec("unused.parquet", label=label, sensitive_features=[]), origin="t")
    columns = ResolvedColumns(GSS_FEATURES["numeric"], ["occrecode", "wrkstat"])
    frame = gss()
    suite = infer_suite(spec, columns, frame[frame["year"] <= 1976])
    learned = {e.check: e for e in suite.expectations if e.column == "gender"}
    assert list(learned) == ["gender_known_values", "gender_not_null"]
    assert learned["gender_known_values"].kwargs["value_set"] == ["Female", "Male"]
    later = batch(2010)
    later.loc[:99, "gender"] = "Unknown"
    failed = failures(later, suite)
    assert "100 of 2044 rows (4.9%) unexpected, e.g. ['Unknown'" in failed["gender_known_values"]
    ours, theirs = validate(later, suite, batch="b"), validate_with_great_expectations(later, suite, batch="b")
    assert [(o.success, o.message) for o in ours] == [(o.success, o.message) for o in theirs]


_VALIDATE_IN_A_FRESH_PROCESS = """
import sys
import pandas as pd
from mlops_assets.ml.validation import Suite, validate
suite = Suite.from_json(open(sys.argv[1]).read())
outcomes = [o for path in sys.argv[2:] for o in validate(pd.read_parquet(path), suite, batch="b")]
print(sum(not o.success for o in outcomes), len(outcomes), "great_expectations" in sys.modules)
"""


def _validate_in_a_fresh_process(tmp_path: Path, suite: Suite, frames: list[pd.DataFrame]) -> list[str]:
    (tmp_path / "suite.json").write_text(suite.to_json())
    paths = []
    for i, frame in enumerate(frames):
        paths.append(str(tmp_path / f"batch{i}.parquet"))
        frame.to_parquet(paths[-1])
    out = subprocess.run(
        [sys.executable, "-c", _VALIDATE_IN_A_FRESH_PROCESS, str(tmp_path / "suite.json"), *paths],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return out.stdout.split()


def test_a_batch_of_the_shipped_suite_does_not_import_great_expectations(suite: Suite, tmp_path: Path) -> None:
    batches = _damaged_batches()
    failed, total, imported = _validate_in_a_fresh_process(tmp_path, suite, [batches["good"], batches["wrong"]])
    assert (int(total), imported) == (2 * len(suite.expectations), "False")
    assert int(failed) >= 4


def test_other_expectation_types_still_run_through_great_expectations(suite: Suite, tmp_path: Path) -> None:
    extra = [
        Expectation("age_unique", "ExpectColumnValuesToBeUnique", {"column": "age"}, column="age"),
        Expectation(
            "young_known",
            "ExpectColumnValuesToNotBeNull",
            {"column": "age", "row_condition": 'col("age") < 30', "condition_parser": "great_expectations"},
            column="age",
        ),
    ]
    with_spec = Suite([*suite.expectations, *extra])
    frame = batch(2010)
    outcomes = {o.expectation.check: o for o in validate(frame, with_spec, batch="b")}
    reference = great_expectations_results(frame, extra)
    assert not outcomes["age_unique"].success and not reference["age_unique"].success
    assert outcomes["age_unique"].unexpected_count == reference["age_unique"].result["unexpected_count"] > 0
    assert outcomes["young_known"].element_count == reference["young_known"].result["element_count"] < len(frame)
    _, total, imported = _validate_in_a_fresh_process(tmp_path, with_spec, [frame])
    assert (int(total), imported) == (len(with_spec.expectations), "True")


@pytest.mark.parametrize(
    ("type_", "kwargs", "fast"),
    [
        ("ExpectTableRowCountToBeBetween", {"min_value": 1}, True),
        ("ExpectColumnToExist", {"column": "age"}, True),
        ("ExpectColumnValuesToBeInTypeList", {"column": "age", "type_list": NUMERIC_TYPES}, True),
        ("ExpectColumnValuesToNotBeNull", {"column": "age", "mostly": 0.9}, True),
        ("ExpectColumnValuesToBeBetween", {"column": "age", "min_value": 18, "max_value": 89.5, "mostly": 1}, True),
        ("ExpectColumnValuesToBeInSet", {"column": "wrkstat", "value_set": ["a", "b"], "mostly": 0.99}, True),
        ("ExpectColumnValuesToBeUnique", {"column": "age"}, False),
        ("ExpectColumnValuesToNotBeNull", {"column": "age", "row_condition": 'col("age")>1'}, False),
        ("ExpectColumnValuesToNotBeNull", {"column": "age", "result_format": "COMPLETE"}, False),
        ("ExpectColumnValuesToNotBeNull", {"column": "age", "mostly": 1.5}, False),
        ("ExpectColumnValuesToNotBeNull", {"column": "age", "mostly": True}, False),
        ("ExpectColumnValuesToNotBeNull", {"mostly": 0.5}, False),
        ("ExpectColumnValuesToBeBetween", {"column": "age", "min_value": "18"}, False),
        ("ExpectColumnValuesToBeBetween", {"column": "age", "min_value": True}, False),
        ("ExpectColumnValuesToBeBetween", {"column": "age", "max_value": 10**400}, False),
        ("ExpectColumnValuesToBeBetween", {"column": "age"}, False),
        ("ExpectColumnValuesToBeBetween", {"column": "age", "min_value": 1, "strict_min": 1}, False),
        ("ExpectTableRowCountToBeBetween", {"min_value": 10, "max_value": 1}, False),
        ("ExpectTableRowCountToBeBetween", {"min_value": 1.5}, False),
        ("ExpectColumnValuesToBeInSet", {"column": "wrkstat"}, False),
        ("ExpectColumnValuesToBeInSet", {"column": "wrkstat", "value_set": [["nested"]]}, False),
        ("ExpectColumnToExist", {"column": ""}, False),
    ],
)
def test_which_expectations_the_fast_path_takes(type_: str, kwargs: dict[str, object], fast: bool) -> None:
    assert reproducible(type_, kwargs) is fast
