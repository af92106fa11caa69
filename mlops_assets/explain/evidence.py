"""What Dagster's event log says about the batches a version was trained on.

``training_batch_evidence`` is the promotion gate ``training_data_validated`` and the validation
column of ``mlops explain``; the rule it applies is in ``docs/lineage.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from mlops_assets.check_results import RunPartitions, check_result_batch
from mlops_assets.contract import Asset, Meta
from mlops_assets.ml.promotion import BatchEvidence

CHECK_HISTORY_LIMIT = 1000
FEATURES_LOOKBACK = 50


@dataclass(frozen=True)
class CheckFailure:
    """A failed error-severity evaluation of a validation check."""

    check: str
    run_id: str
    at: float


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return _dt.datetime.fromtimestamp(timestamp, _dt.UTC).isoformat(timespec="seconds")


def latest_materialization(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None
) -> dg.EventLogRecord | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition is not None else None), limit=1
    ).records
    return records[0] if records else None


def materialization_metadata(record: dg.EventLogRecord) -> dict[str, Any]:
    materialization = record.event_log_entry.asset_materialization
    return {k: v.value for k, v in materialization.metadata.items()} if materialization else {}


def blocking_check_failures(
    instance: dg.DagsterInstance, model: str, checks: Sequence[str]
) -> dict[str, list[CheckFailure]]:
    """Failed error-severity evaluations of ``validated_batch``'s checks, by batch."""
    key = dg.AssetKey([model, Asset.VALIDATED_BATCH])
    failed: list[tuple[str, Any, dg.AssetCheckEvaluation]] = []
    for check in checks:
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(key, check), limit=CHECK_HISTORY_LIMIT
        )
        for record in history:
            evaluation = record.evaluation
            # A record still planned (its run queued or running) holds the planned event instead.
            if (
                not isinstance(evaluation, dg.AssetCheckEvaluation)
                or evaluation.passed
                or evaluation.severity != dg.AssetCheckSeverity.ERROR
            ):
                continue
            failed.append((check, record, evaluation))
    if not failed:
        return {}
    runs = RunPartitions(instance)
    runs.prefetch(record.run_id for _, record, _ in failed)
    by_batch: dict[str, list[CheckFailure]] = {}
    for check, record, evaluation in failed:
        batch = check_result_batch(evaluation, record.run_id, runs=runs)
        if batch is not None:
            at = record.event.timestamp if record.event else record.create_timestamp
            by_batch.setdefault(batch, []).append(CheckFailure(check, record.run_id, at))
    return by_batch


def training_batch_evidence(
    instance: dg.DagsterInstance,
    *,
    model: str,
    fingerprints: Mapping[str, str],
    blocking_checks: Sequence[str],
) -> list[BatchEvidence]:
    """Whether each training batch (with the fingerprint the training manifest recorded) is
    validated data; the rule is in ``docs/lineage.md``."""
    failures = blocking_check_failures(instance, model, blocking_checks)
    return [
        _batch_evidence(instance, model, batch, fingerprint, failures.get(batch, []))
        for batch, fingerprint in fingerprints.items()
    ]


def _batch_evidence(
    instance: dg.DagsterInstance, model: str, batch: str, fingerprint: str, failures: list[CheckFailure]
) -> BatchEvidence:
    validated = latest_materialization(instance, dg.AssetKey([model, Asset.VALIDATED_BATCH]), batch)
    if validated is None:
        return BatchEvidence(batch, False, "never validated in this Dagster instance")
    later = [f for f in failures if f.at > validated.timestamp]
    if later:
        last = max(later, key=lambda f: f.at)
        checks = sorted({f.check for f in later})
        return BatchEvidence(
            batch,
            False,
            f"validation failed at {iso(last.at)} in run {last.run_id[:8]} "
            f"(checks {', '.join(checks)}), after the data it was trained on was validated "
            f"at {iso(validated.timestamp)}",
        )
    features = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey([model, Asset.FEATURES]), asset_partitions=[batch]),
        limit=FEATURES_LOOKBACK,
    ).records
    known = [materialization_metadata(r).get(Meta.FINGERPRINT) for r in features]
    if fingerprint not in known:
        return BatchEvidence(
            batch,
            False,
            f"training data fingerprint {fingerprint} matches no features materialization of the "
            f"batch (latest: {known[0] if known else 'none'}), so it did not come through validation",
        )
    return BatchEvidence(batch, True, f"validated at {iso(validated.timestamp)}, fingerprint matches")


def suite_checks(suite_json: bytes) -> dict[str, str]:
    """Check name -> severity, from a validation suite document."""
    return {e["check"]: e.get("severity", "error") for e in json.loads(suite_json)}


def blocking(checks: Mapping[str, str]) -> list[str]:
    """The checks of a suite whose failure blocks a batch (error severity)."""
    return [c for c, severity in checks.items() if severity == "error"]
