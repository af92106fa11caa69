"""The lineage document of a batch's predictions or of a registered version, from what the
product recorded: the predictions, the registry, the lake and Dagster's event log."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import dagster as dg

from mlops_assets.contract import CHALLENGER, CHAMPION, Artifact, Asset, Meta, MlflowTag, artifact_path, version_record
from mlops_assets.explain.evidence import (
    blocking,
    iso,
    latest_materialization,
    materialization_metadata,
    suite_checks,
    training_batch_evidence,
)
from mlops_assets.records import (
    BatchDrift,
    BatchValidation,
    DriftSummary,
    HistoryEntry,
    Lineage,
    PredictionsSubject,
    PromotionRecord,
    SuiteSize,
    TrainingBatch,
    TrainingLineage,
    TrainingManifest,
    VersionFacts,
    VersionSubject,
)

if TYPE_CHECKING:
    from resources.lake import Lake
    from resources.registry import MlflowRegistry, RegisteredModel


def run_artifact(registry: MlflowRegistry, run_id: str, artifact: str) -> bytes | None:
    """A product artifact of an MLflow run; None when the run never got it (an older version)."""
    from mlflow.exceptions import MlflowException

    try:
        return registry.run_artifact(run_id, artifact_path(artifact))
    except (MlflowException, OSError):
        return None


def training_manifest(registry: MlflowRegistry, version: RegisteredModel) -> TrainingManifest | None:
    """The manifest of the data ``version`` was trained on, as logged with it."""
    data = run_artifact(registry, version.run_id, Artifact.TRAINING_MANIFEST)
    if data is None:
        return None
    return TrainingManifest.from_json(
        data, origin=f"runs:/{version.run_id}/{artifact_path(Artifact.TRAINING_MANIFEST)}"
    )


def decision_record(lake: Lake, registry: MlflowRegistry, version: RegisteredModel) -> PromotionRecord | None:
    """The latest promotion decision about ``version``: from the lake, else from its MLflow run."""
    partition = version_record(version.version)
    if lake.exists(version.name, Asset.PROMOTION, partition, "json"):
        origin = lake.uri(version.name, Asset.PROMOTION, partition, "json")
        return PromotionRecord.from_dict(lake.read_json(version.name, Asset.PROMOTION, partition), origin=origin)
    data = run_artifact(registry, version.run_id, Artifact.DECISION)
    if data is None:
        return None
    return PromotionRecord.from_json(data, origin=f"runs:/{version.run_id}/{artifact_path(Artifact.DECISION)}")


def drift_summary(lake: Lake, model: str, batch: str) -> DriftSummary | None:
    """A batch's drift summary (written by ``drift_report``); None when it was never drift-checked."""
    if not lake.exists(model, Asset.DRIFT_REPORT, batch, "json"):
        return None
    origin = lake.uri(model, Asset.DRIFT_REPORT, batch, "json")
    return DriftSummary.from_dict(lake.read_json(model, Asset.DRIFT_REPORT, batch), origin=origin)


def explain(
    *,
    model: str,
    registry: MlflowRegistry,
    lake: Lake,
    instance: dg.DagsterInstance | None,
    batch: str | None = None,
    version: str | None = None,
) -> Lineage:
    """The lineage of a batch's predictions (``batch``) or of a registered ``version``.

    Raises:
        LookupError: the batch has no predictions, or the version does not exist (names both).
        RecordError: a record the product wrote cannot be read (names the file and the field).
    """
    if (batch is None) == (version is None):
        raise ValueError("explain: give exactly one of batch or version")
    notes: list[str] = []
    subject: PredictionsSubject | VersionSubject
    if batch is not None:
        subject = _predictions_subject(model, batch, lake, instance)
        version = subject.model_version
    else:
        subject = VersionSubject(str(version))
    registered = registry.get(model, str(version))
    champion, challenger = registry.by_alias(model, CHAMPION), registry.by_alias(model, CHALLENGER)
    facts = _version_facts(registry, registered, champion=champion, challenger=challenger)
    training = _training_lineage(model, registered, registry, lake, instance, notes)
    record = decision_record(lake, registry, registered)
    history = registry.champion_history(model)
    entries = tuple(
        HistoryEntry.from_dict({**m.to_record(), "key": m.key})
        for m in history
        if registered.version in (m.to_version, m.from_version)
    )
    if champion is not None and (not history or history[-1].to_version != champion.version):
        notes.append(
            f"champion is version {champion.version} but the last recorded move says "
            f"{history[-1].to_version if history else '(none)'}: it was moved outside mlops"
        )
    batch_drift = None
    if isinstance(subject, PredictionsSubject):
        batch_drift = drift_summary(lake, model, subject.batch)
        if subject.scored_at is not None:
            at_the_time = registry.champion_at(model, subject.scored_at)
            if at_the_time is not None and at_the_time != registered.version:
                notes.append(
                    f"the champion history says version {at_the_time} was champion when batch {subject.batch} "
                    f"was scored, not version {registered.version}"
                )
    return Lineage(
        model=model,
        subject=subject,
        version=facts,
        training_data=training,
        decision=record,
        champion_history=entries,
        champion_now=champion.version if champion else None,
        notes=tuple(notes),
        batch_drift=batch_drift,
    )


def _version_facts(
    registry: MlflowRegistry,
    registered: RegisteredModel,
    *,
    champion: RegisteredModel | None,
    challenger: RegisteredModel | None,
) -> VersionFacts:
    signature = registry.model_signature(registered)
    return VersionFacts(
        version=registered.version,
        uri=registered.uri,
        mlflow_run_id=registered.run_id,
        model_id=registered.model_id,
        family=registered.family,
        registered_at=registered.created_at.isoformat(timespec="seconds") if registered.created_at else None,
        training_dagster_run_id=registered.tags.get(MlflowTag.DAGSTER_RUN_ID),
        code_version=registered.tags.get(MlflowTag.CODE_VERSION),
        training_fingerprint=registered.tags.get(MlflowTag.TRAINING_FINGERPRINT),
        aliases=tuple(
            a for a, m in ((CHAMPION, champion), (CHALLENGER, challenger)) if m and m.version == registered.version
        ),
        signature_inputs=tuple(f"{c.get('name')}:{c.get('type')}" for c in (signature or {}).get("inputs", [])),
    )


def _predictions_subject(model: str, batch: str, lake: Lake, instance: dg.DagsterInstance | None) -> PredictionsSubject:
    import pyarrow.parquet as pq

    if not lake.exists(model, Asset.PREDICTIONS, batch):
        raise LookupError(
            f"{model}: batch {batch} has no predictions; materialize {model}/{Asset.PREDICTIONS} for it first"
        )
    data = io.BytesIO(lake.read_bytes(model, Asset.PREDICTIONS, batch, "parquet"))
    table = pq.read_table(data, columns=[Meta.MODEL_VERSION])
    versions = sorted({str(v) for v in table.column(Meta.MODEL_VERSION).to_pylist()}, key=lambda v: int(v))
    if not versions:
        raise LookupError(f"{model}: batch {batch}'s predictions are empty, so no version made them")
    scored_at = scored_by_run = None
    if instance is not None:
        record = latest_materialization(instance, dg.AssetKey([model, Asset.PREDICTIONS]), batch)
        if record is not None:
            scored_at, scored_by_run = iso(record.timestamp), record.run_id
    return PredictionsSubject(
        batch=batch,
        rows=table.num_rows,
        model_version=versions[-1],
        versions=tuple(versions),
        scored_at=scored_at,
        scored_by_run=scored_by_run,
    )


def _training_lineage(
    model: str,
    registered: RegisteredModel,
    registry: MlflowRegistry,
    lake: Lake,
    instance: dg.DagsterInstance | None,
    notes: list[str],
) -> TrainingLineage:
    manifest = training_manifest(registry, registered)
    if manifest is None:
        notes.append(f"version {registered.version}'s run has no {artifact_path(Artifact.TRAINING_MANIFEST)}")
        return TrainingLineage()
    suite = run_artifact(registry, registered.run_id, Artifact.VALIDATION_SUITE)
    checks = suite_checks(suite) if suite else {}
    blocking_checks = blocking(checks)
    evidence = {}
    if instance is not None:
        found = training_batch_evidence(
            instance, model=model, fingerprints=manifest.fingerprints, blocking_checks=blocking_checks
        )
        evidence = {e.batch: e for e in found}
    else:
        notes.append("no Dagster instance: the validation of the training batches is not shown")
    batches = []
    for batch in manifest.batches:
        validation = None
        if instance is not None:
            validated = latest_materialization(instance, dg.AssetKey([model, Asset.VALIDATED_BATCH]), batch)
            meta: dict[str, Any] = materialization_metadata(validated) if validated else {}
            validation = BatchValidation(
                ok=evidence[batch].validated if batch in evidence else None,
                detail=evidence[batch].detail if batch in evidence else "",
                validated_at=iso(validated.timestamp) if validated else None,
                run_id=validated.run_id if validated else None,
                passed=meta.get(Meta.EXPECTATIONS_PASSED),
                total=meta.get(Meta.EXPECTATIONS_TOTAL),
            )
        drift = drift_summary(lake, model, batch)
        batches.append(
            TrainingBatch(
                batch=batch,
                fingerprint=manifest.fingerprints.get(batch),
                validation=validation,
                drift=None if drift is None else BatchDrift.of(drift),
            )
        )
    return TrainingLineage(
        batches=tuple(batches),
        train_rows=manifest.train_rows,
        holdout_rows=manifest.holdout_rows,
        training_fingerprint=manifest.training_fingerprint,
        suite=SuiteSize(expectations=len(checks), blocking=len(blocking_checks)),
    )
