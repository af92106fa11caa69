"""Batch validation with Great Expectations 1.x expectations.

The suite has two parts: expectations inferred from the first training data (columns present,
numeric types, null shares, value ranges, known categories, a non-empty batch) and the spec's own.
Every expectation carries a stable check name derived from the spec alone, so the Dagster asset
can declare one asset check per expectation before any data is read (``planned_checks``), and the
values the suite learns from data (bounds, category sets, null shares) are filled in later
(``infer_suite``). Every expectation is a GE 1.x class name with its kwargs, so the suite can be
handed to GE as it is.

``validate`` evaluates the types the product generates with ``mlops_assets.ml.expectations``
(GE's own results, without importing GE) and runs anything else through GE itself, imported only
then; ``validate_with_great_expectations`` runs everything through GE (docs/validation.md).

The suite is plain JSON (``Suite.to_json``) so it is stored beside the lake and diffable.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mlops_assets.ml.data import ResolvedColumns
from mlops_assets.spec import PipelineSpec
from mlops_assets.untrusted import shown

if TYPE_CHECKING:
    import pandas as pd

    from mlops_assets.ml.expectations import ExpectationResult

Severity = Literal["error", "warn"]

NUMERIC_TYPES = [
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "Float32",
    "Float64",
]


@dataclass(frozen=True)
class Expectation:
    """One GE expectation, named for the property it asserts (the asset check's name)."""

    check: str
    type: str
    kwargs: dict[str, Any]
    severity: Severity = "error"
    column: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Suite:
    expectations: list[Expectation] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps([asdict(e) for e in self.expectations], indent=1, default=str)

    @classmethod
    def from_json(cls, text: str) -> Suite:
        return cls([Expectation(**e) for e in json.loads(text)])


@dataclass(frozen=True)
class Outcome:
    """The result of one expectation on one batch; ``result`` is GE's SUMMARY result (empty if it could not run)."""

    expectation: Expectation
    success: bool
    unexpected_count: int | None
    element_count: int | None
    observed: Any
    message: str
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def blocking_failure(self) -> bool:
        return not self.success and self.expectation.severity == "error"


def planned_checks(spec: PipelineSpec, columns: ResolvedColumns) -> list[tuple[str, str, Severity]]:
    """(check name, description, severity) of every expectation the suite will hold."""
    return [(e.check, e.description, e.severity) for e in _skeleton(spec, columns)]


def _skeleton(spec: PipelineSpec, columns: ResolvedColumns) -> list[Expectation]:
    """The suite with placeholder kwargs: names, types and columns only."""
    out = [
        Expectation(
            "batch_not_empty",
            "ExpectTableRowCountToBeBetween",
            {"min_value": 1},
            description="The batch has at least one row.",
        )
    ]
    categorical = [*columns.categorical, *spec.sensitive_features]
    for column in [*columns.numeric, *categorical]:
        out.append(
            Expectation(
                f"{column}_present",
                "ExpectColumnToExist",
                {"column": column},
                column=column,
                description=f"Column {column} is in the batch.",
            )
        )
    for column in columns.numeric:
        out += [
            Expectation(
                f"{column}_numeric",
                "ExpectColumnValuesToBeInTypeList",
                {"column": column, "type_list": NUMERIC_TYPES},
                column=column,
                description=f"Column {column} holds numbers.",
            ),
            Expectation(
                f"{column}_not_null",
                "ExpectColumnValuesToNotBeNull",
                {"column": column},
                column=column,
                description=f"Column {column} is no more often null than in training (plus a margin).",
            ),
            Expectation(
                f"{column}_in_range",
                "ExpectColumnValuesToBeBetween",
                {"column": column},
                column=column,
                description=f"Column {column} stays within the training range (widened by a margin).",
            ),
        ]
    for column in categorical:
        out += [
            Expectation(
                f"{column}_not_null",
                "ExpectColumnValuesToNotBeNull",
                {"column": column},
                column=column,
                description=f"Column {column} is no more often null than in training (plus a margin).",
            ),
            Expectation(
                f"{column}_known_categories",
                "ExpectColumnValuesToBeInSet",
                {"column": column},
                column=column,
                description=f"Column {column} holds categories seen in training.",
            ),
        ]
    for own in spec.validation.expectations:
        out.append(
            Expectation(
                own.name,
                own.type,
                dict(own.kwargs),
                own.severity,
                own.kwargs.get("column"),
                description=f"From the spec: {own.type}.",
            )
        )
    return out


def infer_suite(spec: PipelineSpec, columns: ResolvedColumns, reference: pd.DataFrame) -> Suite:
    """Fills the skeleton's bounds, category sets and null shares from the first training data."""
    policy = spec.validation
    filled: list[Expectation] = []
    for e in _skeleton(spec, columns):
        kwargs = dict(e.kwargs)
        column = e.column
        if e.check.endswith("_not_null") and column is not None:
            null_share = float(reference[column].isna().mean())
            kwargs["mostly"] = round(max(0.0, 1.0 - null_share - policy.null_margin), 6)
        elif e.check.endswith("_in_range") and column is not None:
            values = reference[column].dropna()
            low, high = float(values.min()), float(values.max())
            margin = (high - low) * policy.range_margin
            kwargs.update(min_value=low - margin, max_value=high + margin, mostly=1.0 - policy.out_of_range_tolerance)
        elif e.check.endswith("_known_categories") and column is not None:
            kwargs.update(
                value_set=sorted(reference[column].dropna().astype(str).unique().tolist()),
                mostly=1.0 - policy.unseen_category_tolerance,
            )
        filled.append(Expectation(e.check, e.type, kwargs, e.severity, column, e.description))
    return Suite(filled)


def validate(frame: pd.DataFrame, suite: Suite, *, batch: str) -> list[Outcome]:
    """Runs the suite on one batch; one outcome per expectation, in the suite's order.

    The types the product generates are evaluated without Great Expectations, with GE's results;
    any other type (or kwargs or data the fast path does not reproduce) runs through GE in one
    ephemeral context. Categorical columns are compared as strings, as the suite learned them.
    """
    # pandas and the fast path are imported here, not with the module: the code location imports
    # this module for planned_checks and must stay light.
    from mlops_assets.ml.expectations import NotReproduced, evaluate, frame_reproducible, reproducible

    frame = _as_validated_types(frame, suite)
    runnable, skipped = _runnable(frame, suite, batch)
    results: dict[str, ExpectationResult] = {}
    by_great_expectations: list[Expectation] = []
    fast_frame = frame_reproducible(frame)
    for e in runnable:
        if fast_frame and reproducible(e.type, e.kwargs):
            try:
                results[e.check] = evaluate(frame, e.type, e.kwargs)
                continue
            except NotReproduced:
                pass
        by_great_expectations.append(e)
    if by_great_expectations:
        results.update(great_expectations_results(frame, by_great_expectations))
    return _outcomes(suite, results, skipped, batch)


def validate_with_great_expectations(frame: pd.DataFrame, suite: Suite, *, batch: str) -> list[Outcome]:
    """``validate`` with every expectation run by Great Expectations itself: the reference for the fast path."""
    frame = _as_validated_types(frame, suite)
    runnable, skipped = _runnable(frame, suite, batch)
    return _outcomes(suite, great_expectations_results(frame, runnable), skipped, batch)


def great_expectations_results(frame: pd.DataFrame, expectations: list[Expectation]) -> dict[str, ExpectationResult]:
    """Each expectation's GE result (``result_format="SUMMARY"``) on ``frame``, keyed by check name."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    from mlops_assets.ml.expectations import ExpectationResult

    context = gx.get_context(mode="ephemeral")
    # Progress bars would flood the Dagster run log with one line per metric.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = (
        context.data_sources.add_pandas(name="batches")
        .add_dataframe_asset(name="batch")
        .add_batch_definition_whole_dataframe("whole")
    )
    gx_suite = gx.ExpectationSuite(name="suite")
    for e in expectations:
        gx_suite.add_expectation(_gx_expectation(e))
    result = batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(gx_suite, result_format="SUMMARY")
    return {
        r.expectation_config.meta["check"]: ExpectationResult(
            success=bool(r.success),
            result=dict(r.result or {}),
            exception_message=_exception_message(r.exception_info),
        )
        for r in result.results
    }


def _gx_expectation(e: Expectation) -> Any:
    import great_expectations.expectations as gxe

    try:
        cls = getattr(gxe, e.type)
    except AttributeError as err:
        raise ValueError(f"expectation {e.check!r}: unknown Great Expectations type {e.type!r}") from err
    return cls(**e.kwargs, meta={"check": e.check})


def _exception_message(info: Any) -> str | None:
    """The error GE caught: ``exception_info`` is flat for the expectation, or keyed by the failed metrics."""
    if not info:
        return None
    if info.get("raised_exception"):
        return info.get("exception_message")
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return value.get("exception_message")
    return None


def _runnable(frame: pd.DataFrame, suite: Suite, batch: str) -> tuple[list[Expectation], list[Outcome]]:
    """The expectations that can run on ``frame``, and the outcomes of those whose column is missing."""
    present = set(frame.columns)
    runnable: list[Expectation] = []
    skipped: list[Outcome] = []
    for e in suite.expectations:
        if e.column is not None and e.column not in present and e.type != "ExpectColumnToExist":
            message = f"batch {batch}, column {e.column!r}: {e.check} could not run: the column is missing"
            skipped.append(Outcome(e, False, None, len(frame), None, message))
        else:
            runnable.append(e)
    return runnable, skipped


def _outcomes(suite: Suite, results: dict[str, ExpectationResult], skipped: list[Outcome], batch: str) -> list[Outcome]:
    outcomes = list(skipped)
    for e in suite.expectations:
        r = results.get(e.check)
        if r is None:
            continue
        outcomes.append(
            Outcome(
                expectation=e,
                success=r.success,
                unexpected_count=r.result.get("unexpected_count"),
                element_count=r.result.get("element_count"),
                observed=_observed(r.result),
                message=_message(e, r.success, r.result, batch, r.exception_message),
                result=r.result,
            )
        )
    order = {e.check: i for i, e in enumerate(suite.expectations)}
    return sorted(outcomes, key=lambda o: order[o.expectation.check])


def _as_validated_types(frame: pd.DataFrame, suite: Suite) -> pd.DataFrame:
    in_set = {e.column for e in suite.expectations if e.type == "ExpectColumnValuesToBeInSet"}
    converted = frame.copy(deep=False)
    for column in in_set & set(frame.columns):
        values = frame[column]
        converted[column] = values.astype(str).where(values.notna(), None)
    return converted


def _observed(res: dict[str, Any]) -> Any:
    if "observed_value" in res:
        return res["observed_value"]
    if "partial_unexpected_list" in res:
        return res["partial_unexpected_list"][:5]
    return None


def _message(e: Expectation, success: bool, res: dict[str, Any], batch: str, error: str | None) -> str:
    where = f"batch {batch}" + (f", column {e.column!r}" if e.column else "")
    if success:
        return f"{where}: {e.check} passed"
    if error is not None:
        return f"{where}: {e.check} could not run: {error}"
    count, total = res.get("unexpected_count"), res.get("element_count")
    if count is not None and total:
        share = count / total if total else math.nan
        examples = ", ".join(shown(v, 80) for v in res.get("partial_unexpected_list", [])[:3])
        return f"{where}: {e.check} failed: {count} of {total} rows ({share:.1%}) unexpected" + (
            f", e.g. [{examples}]" if examples else ""
        )
    return f"{where}: {e.check} failed (observed {shown(res.get('observed_value'))})"
