"""The inferred GE suite on real GSS batches: good batches pass, each kind of bad batch fails
with a message naming the column and the count."""

from __future__ import annotations

import numpy as np
import pytest

from mlops_assets.ml.data import ResolvedColumns
from mlops_assets.ml.validation import Suite, infer_suite, planned_checks, validate
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
    assert failures(batch(2010), suite) == {}


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
