"""Batch validation: the fast path against Great Expectations 1.24.1, the same suite on the same batch.

The suite is the one the product learns (``infer_suite``) from a 200k-row training frame: per
numeric column present, numeric, not null and in range; per categorical column present, not null
and known categories; a non-empty batch. The batch has ``--rows`` rows and ``--cols`` columns
(default 1M x 50): 60% float64 (1% NaN), 20% int64, 20% string categoricals (object dtype, 2%
None, 5-34 levels), with damage so that some expectations fail and every kind of result carries
values: out-of-range floats and ints, +/-inf, unseen categories, a column mostly null.

Both engines run in this one process on the same frame, through the product's own entry points:
``validate`` (the fast path; GE is never imported by it here) and
``validate_with_great_expectations`` (every expectation through GE's ephemeral context). GE's
import is timed apart and left out of the speedup. Results are identical when every outcome
agrees in success, counts, observed values, message and GE's whole SUMMARY result dict (NaN
equal to NaN, Python types equal).

Usage: python benchmarks/bench_validate.py [--quick] [--rows N] [--cols C]
(``--quick``: 20k x 10.) The last line is
``validate: <x>x faster than great_expectations, results identical: <yes|no>``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlops_assets.ml.data import ResolvedColumns
from mlops_assets.ml.validation import Outcome, Suite, infer_suite, validate, validate_with_great_expectations
from mlops_assets.spec import parse_spec

_LEVELS = np.array([f"level_{i:02d}" for i in range(40)], dtype=object)


def column_kinds(cols: int) -> tuple[list[str], list[str], list[str]]:
    """(float, int, categorical) column names: per ten columns six float, two int, two categorical."""
    floats = [f"c{j:02d}" for j in range(cols) if j % 10 < 6]
    ints = [f"c{j:02d}" for j in range(cols) if 6 <= j % 10 < 8]
    categorical = [f"c{j:02d}" for j in range(cols) if j % 10 >= 8]
    return floats, ints, categorical


def synthetic(rows: int, cols: int, *, batch: bool) -> pd.DataFrame:
    """Deterministic mixed frame; ``batch`` adds the damage described in the module docstring."""
    rng = np.random.default_rng(2 if batch else 1)
    floats, ints, categorical = column_kinds(cols)
    data: dict[str, Any] = {}
    for i, name in enumerate(floats):
        values = rng.normal(10.0 * i, 1.0 + i, rows)
        values[rng.random(rows) < 0.01] = np.nan
        if batch and i % 3 == 0:
            values[rng.random(rows) < 0.003 * (i + 1)] = 1e6
        if batch and i == 1:
            values[rng.random(rows) < 0.001] = np.inf
            values[rng.random(rows) < 0.001] = -np.inf
        data[name] = values
    for i, name in enumerate(ints):
        values = rng.poisson(3 + i, rows).astype(np.int64)
        if batch and i == 0:
            values[rng.random(rows) < 0.02] = 10_000
        data[name] = values
    for i, name in enumerate(categorical):
        levels = _LEVELS[: 5 + 3 * i]
        values = rng.choice(levels, rows)
        values[rng.random(rows) < 0.02] = None
        if batch and i % 2 == 0:
            values[rng.random(rows) < 0.005 * (i + 1)] = "level_unseen"
        if batch and i == 1:
            values[rng.random(rows) < 0.6] = None
        data[name] = values
    return pd.DataFrame(data)


def suite_for(cols: int) -> Suite:
    floats, ints, categorical = column_kinds(cols)
    spec = parse_spec(
        {
            "name": "bench",
            "source": {"uri": "unused.parquet"},
            "label": {"column": "label", "threshold": 0},
            "features": {"numeric": floats + ints, "categorical": categorical},
        },
        origin="bench_validate",
    )
    return infer_suite(spec, ResolvedColumns(floats + ints, categorical), synthetic(200_000, cols, batch=False))


def same(a: Any, b: Any) -> bool:
    """Equal values of equal Python types, NaN equal to NaN, through dicts and lists."""
    if a is b:
        return True
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def identical(a: Outcome, b: Outcome) -> bool:
    return (
        a.expectation == b.expectation
        and (a.success, a.unexpected_count, a.element_count, a.message)
        == (b.success, b.unexpected_count, b.element_count, b.message)
        and same(a.observed, b.observed)
        and same(a.result, b.result)
    )


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="20k rows x 10 columns")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.cols = 20_000, 10
    warnings.simplefilter("ignore")

    print(f"building the suite from 200,000 training rows and a {args.rows:,} x {args.cols} batch ...", flush=True)
    suite = suite_for(args.cols)
    batch = synthetic(args.rows, args.cols, batch=True)
    kinds = Counter(e.type for e in suite.expectations)

    print("fast path ...", flush=True)
    start = time.perf_counter()
    fast = validate(batch, suite, batch="bench")
    fast_s = time.perf_counter() - start
    fast_imported_ge = "great_expectations" in sys.modules

    print("Great Expectations (minutes at 1M x 50) ...", flush=True)
    start = time.perf_counter()
    # Timed on its own and left out of the comparison: a long-lived process imports it once.
    import great_expectations

    import_s = time.perf_counter() - start
    start = time.perf_counter()
    reference = validate_with_great_expectations(batch, suite, batch="bench")
    ge_s = time.perf_counter() - start

    agree = sum(identical(a, b) for a, b in zip(fast, reference, strict=True))
    all_same = agree == len(suite.expectations) == len(fast) == len(reference) and not fast_imported_ge
    failed = sum(not o.success for o in fast)
    rows = [
        ["fast path (mlops_assets.ml.expectations)", "-", f"{fast_s:.2f}", str(len(fast)), str(failed)],
        [
            f"great_expectations {great_expectations.__version__}",
            f"{import_s:.2f}",
            f"{ge_s:.2f}",
            str(len(reference)),
            str(sum(not o.success for o in reference)),
        ],
    ]
    print()
    print(
        f"validate {args.rows:,} rows x {args.cols} columns, {len(suite.expectations)} expectations: "
        + ", ".join(f"{n} {t}" for t, n in sorted(kinds.items()))
    )
    print(table(rows, ["engine", "import s", "validate s", "outcomes", "failed"]))
    print(
        f"outcomes identical (success, counts, observed, message, whole SUMMARY result): {agree} of "
        f"{len(suite.expectations)}; the fast path imported great_expectations: {'yes' if fast_imported_ge else 'no'}"
    )
    print()
    verdict = "yes" if all_same else "no"
    print(f"validate: {ge_s / fast_s:.1f}x faster than great_expectations, results identical: {verdict}")


if __name__ == "__main__":
    main()
