"""Evidently's own HTML drift report for one batch, and Evidently's verdicts read back from its snapshot.

Separate from the per-batch check (``detect_drift``): rendering needs only a stored profile and
the batch, so it can run when a batch drifts, on demand, or always. Evidently is imported inside
the functions; importing this module costs no more than the check's own imports.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from mlops_assets.ml.drift.columns import DriftInputError, finite_numeric
from mlops_assets.ml.drift.methods import METHOD_BY_LABEL, METHODS, ColumnKind, DriftPolicy, resolve
from mlops_assets.ml.drift.profile import ReferenceProfile
from mlops_assets.ml.drift.result import ALL_NULL_NOTE, ColumnDrift, DriftResult, column_verdict, dataset_result
from mlops_assets.ml.drift.sampling import sample_batch


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
            finite_numeric(batch[name], name, "batch")[0].size > 0 if kind == "num" else bool(batch[name].notna().any())
        )
        if not valid:
            if kind == "num":
                num = profile.numeric_column(name)
                n_ref, n_ref_values = num.n, num.values.size
            else:
                cat = profile.categorical_column(name)
                n_ref, n_ref_values = cat.n, len(cat.categories)
            method, threshold = resolve(kind, policy, n_ref, lambda n=n_ref_values: n)
            untestable[name] = column_verdict(
                name, kind, method, threshold, math.nan, ALL_NULL_NOTE + "; left out of the Evidently report"
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
    return dataset_result(columns, policy.drift_share, len(current), ignored)


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
        method = METHOD_BY_LABEL.get(resolved) or METHODS.get(resolved)
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
