"""What a drift check returns: per-column verdicts and the dataset verdict of one batch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from mlops_assets.ml.drift.methods import ColumnKind, Method

# A batch column with no finite value: Evidently raises there; the check counts it as drifted.
ALL_NULL_NOTE = "all values null in the batch: not testable, counted as drifted"


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


def column_verdict(
    name: str, kind: ColumnKind, method: Method, threshold: float, score: float, note: str | None = None
) -> ColumnDrift:
    """A column's verdict from its score; a NaN score with a note (an untestable column) is drifted."""
    drifted = True if note is not None and math.isnan(score) else method.drifted(score, threshold)
    return ColumnDrift(name, kind, method.name, method.label, threshold, float(score), drifted, note)


def dataset_result(columns: list[ColumnDrift], drift_share: float, n_rows: int, ignored: list[str]) -> DriftResult:
    """The batch's result: the dataset drifts when the drifted share reaches ``drift_share``."""
    share = sum(c.drifted for c in columns) / len(columns)
    return DriftResult(
        columns=columns,
        drifted_share=share,
        dataset_drift=bool(share >= drift_share),
        n_rows=n_rows,
        ignored_columns=ignored,
    )


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
