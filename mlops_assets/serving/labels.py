"""Labels that arrive after serving, joined to the request log by request id.

A served batch lands without a label. When outcomes become known (``mlops label <model> --file
labels.csv``, a table of ``request_id`` and the spec's label column in its raw form), each
request-log file that holds some of those ids gets the label column and is landed again under
the same batch name. The landing sensor sees the file changed and scores the batch again: its
features keep the labelled rows, so ``predictions`` records realized ROC AUC and fairness for
served traffic, and the fairness checks (and the fairness sensor) act on them. Labels add up: a
second file fills in more rows and keeps the ones already joined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlops_assets.contract import LakeFolder, ServedColumn
from mlops_assets.serving.request_log import land_bytes
from mlops_assets.spec import PipelineSpec
from resources.lake import Lake
from resources.landing import LandingZone

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class LabelReport:
    """What a join did: labelled rows per served batch, and label rows that matched no request."""

    matched: dict[str, int] = field(default_factory=dict)
    unmatched: int = 0


def read_labels(spec: PipelineSpec, path: str) -> pd.DataFrame:
    """A labels file (CSV or Parquet) checked to be ``request_id`` and the label column.

    Raises:
        ValueError: a column is missing, a request id is repeated or empty, or a label is not a
            number where the spec's label has a threshold; the message names the file and column.
    """
    import pandas as pd

    try:
        frame = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path, dtype={"request_id": str})
    except (OSError, ValueError) as e:
        raise ValueError(f"labels file {path}: cannot be read: {e}") from e
    return check_labels(spec, frame, origin=f"labels file {path}")


def check_labels(spec: PipelineSpec, frame: pd.DataFrame, *, origin: str) -> pd.DataFrame:
    import pandas as pd

    label = spec.label.column
    missing = [c for c in (ServedColumn.REQUEST_ID, label) if c not in frame.columns]
    if missing:
        raise ValueError(f"{origin}: column(s) {missing} missing; expected {ServedColumn.REQUEST_ID!r} and {label!r}")
    frame = frame[[ServedColumn.REQUEST_ID, label]].copy()
    ids = frame[ServedColumn.REQUEST_ID]
    if ids.isna().any():
        raise ValueError(f"{origin}: column {ServedColumn.REQUEST_ID!r} is empty in {int(ids.isna().sum())} row(s)")
    frame[ServedColumn.REQUEST_ID] = ids.astype(str)
    repeated = frame[ServedColumn.REQUEST_ID][frame[ServedColumn.REQUEST_ID].duplicated()]
    if len(repeated):
        raise ValueError(f"{origin}: column {ServedColumn.REQUEST_ID!r} repeats {sorted(set(repeated))[:5]}")
    if spec.label.threshold is not None:
        numbers = pd.to_numeric(frame[label], errors="coerce")
        bad = frame[numbers.isna() & frame[label].notna()]
        if len(bad):
            raise ValueError(
                f"{origin}: column {label!r} must hold numbers (the label's threshold is "
                f"{spec.label.threshold:g}); request {bad[ServedColumn.REQUEST_ID].iloc[0]} has {bad[label].iloc[0]!r}"
            )
        frame[label] = numbers
    return frame


def join_labels(spec: PipelineSpec, lake: Lake, landing: LandingZone, labels: pd.DataFrame) -> LabelReport:
    """Adds ``labels`` to the request-log files holding their request ids and lands those again.

    Raises:
        ValueError: ``labels`` is malformed (see ``check_labels``); nothing is written then.
    """
    import io

    labels = check_labels(spec, labels, origin="labels")
    label = spec.label.column
    by_id = labels.set_index(ServedColumn.REQUEST_ID)[label]
    matched: dict[str, int] = {}
    found = 0
    for batch in lake.partitions(spec.name, LakeFolder.REQUEST_LOG):
        log = lake.read_frame(spec.name, LakeFolder.REQUEST_LOG, batch)
        hits = log[ServedColumn.REQUEST_ID].map(by_id)
        if hits.notna().sum() == 0:
            continue
        found += int(log[ServedColumn.REQUEST_ID].isin(by_id.index).sum())
        known = log[label] if label in log.columns else None
        log[label] = hits if known is None else hits.where(hits.notna(), known)
        buffer = io.BytesIO()
        log.to_parquet(buffer, index=False)
        data = buffer.getvalue()
        lake.write_bytes(spec.name, LakeFolder.REQUEST_LOG, data, batch, "parquet")
        land_bytes(landing.root, spec.name, batch, data)
        matched[batch] = int(log[label].notna().sum())
    return LabelReport(matched=matched, unmatched=len(by_id) - found)
