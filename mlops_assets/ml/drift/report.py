"""Evidently's own HTML drift report for one batch, and Evidently's verdicts read back from its snapshot.

Separate from the per-batch check (``detect_drift``): rendering needs only a stored profile and
the batch, so it can run when a batch drifts, on demand, or always. Evidently is imported inside
the functions; importing this module costs no more than the check's own imports.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_assets.ml.drift.columns import DriftInputError, finite_numeric
from mlops_assets.ml.drift.methods import METHOD_BY_LABEL, METHODS, ColumnKind, DriftPolicy, resolve
from mlops_assets.ml.drift.profile import ReferenceProfile
from mlops_assets.ml.drift.result import ALL_NULL_NOTE, ColumnDrift, DriftResult, column_verdict, dataset_result
from mlops_assets.ml.drift.sampling import sample_batch

# Evidently 0.7's file template (evidently/legacy/utils/dashboard.py::file_html_template) embeds the
# dashboard as two JavaScript assignments in the first <script> of the page, JSON as json.dumps
# writes it: unescaped, so a value holding "</script>" ends the script and starts the caller's.
_DATA_SCRIPT = re.compile(r"<script>\s*var (metric_[0-9a-f]{32}) = ")
# Inside the JSON these can only occur in string literals, where a \u escape is the same string to
# JSON.parse and to JavaScript: the page shows the same values and no markup can form.
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})
_NO_DATA_HTML = "<html><body><p>No column of this batch has a non-null value; nothing to report.</p></body></html>"


def render_evidently_report(
    profile: ReferenceProfile,
    current: pd.DataFrame,
    policy: DriftPolicy,
    html_path: str,
    *,
    sample_size: int | None = None,
) -> DriftResult:
    """Run Evidently's DataDriftPreset on the reference sample and a batch sample; save its HTML.

    The same as ``render_evidently_html``, written to ``html_path`` (UTF-8).
    """
    html, result = render_evidently_html(profile, current, policy, sample_size=sample_size)
    Path(html_path).write_text(html, encoding="utf-8")
    return result


def render_evidently_html(
    profile: ReferenceProfile,
    current: pd.DataFrame,
    policy: DriftPolicy,
    *,
    sample_size: int | None = None,
) -> tuple[str, DriftResult]:
    """Evidently's DataDriftPreset HTML on the reference sample and a batch sample, and its verdicts.

    Needs only the stored profile and the batch: no drift check has to run first. Returns the page
    (safe to open whatever the data holds: see ``escape_embedded_data``) and Evidently's own
    per-column verdicts, read from the snapshot by metric type and column name (ValueDrift value,
    resolved method and threshold; its drift test's FAIL/SUCCESS status). Batch columns with no
    finite value cannot be tested by Evidently (it raises); they are left out of the report and
    carry the engine's defined verdict, so the share is over all profiled columns.
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
    html = _NO_DATA_HTML
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
        html = escape_embedded_data(snapshot.get_html_str(as_iframe=False))
        evidently_columns = parse_evidently_snapshot(snapshot.dict(), set(numerical))
    columns = [evidently_columns.get(name) or untestable[name] for name in profile.columns]
    return html, dataset_result(columns, policy.drift_share, len(current), ignored)


def escape_embedded_data(html: str) -> str:
    """Evidently's report page with ``<``, ``>``, ``&``, U+2028 and U+2029 in its embedded data as \\u escapes.

    Only the two JSON values of the data script change, and only in those characters, so the page
    shows the same thing; outside them the page is Evidently's byte for byte. Raises
    ``ValueError`` when the page is not laid out as Evidently 0.7 writes it, rather than return a
    page that might run script from the data.
    """
    match = _DATA_SCRIPT.search(html)
    if match is None:
        raise ValueError("Evidently's report has no data script where expected; refusing to write it unescaped")
    dashboard = match.group(1)
    decoder = json.JSONDecoder()
    info_start = match.end()
    try:
        _, info_end = decoder.raw_decode(html, info_start)
        separator = f";\n    var additional_graphs_{dashboard} = "
        if not html.startswith(separator, info_end):
            raise ValueError(f"expected the additional graphs of {dashboard} after its dashboard")
        graphs_start = info_end + len(separator)
        _, graphs_end = decoder.raw_decode(html, graphs_start)
        if not html.startswith(";\n</script>", graphs_end):
            raise ValueError("expected the data script to end after the additional graphs")
    except ValueError as e:
        raise ValueError(f"Evidently's report data is not laid out as expected ({e}); refusing to write it") from e
    return (
        html[:info_start]
        + html[info_start:info_end].translate(_SCRIPT_SAFE)
        + separator
        + html[graphs_start:graphs_end].translate(_SCRIPT_SAFE)
        + html[graphs_end:]
    )


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
