"""Deployment: batch scoring by the champion, and the drift of each batch against its training data."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dagster as dg

from mlops_assets.assets.common import BatchEvents, BatchRun, ModelPipeline, retry_on_tracking_outage, table
from mlops_assets.contract import (
    CHAMPION,
    DRIFT_CHECK,
    Artifact,
    Asset,
    Fairness,
    Job,
    LakeFolder,
    Meta,
    Sensor,
    artifact_path,
    column_drift_check,
)
from mlops_assets.records import DriftSummary, ProductionEvaluation
from resources.lake import Lake
from resources.registry import MlflowRegistry, RegisteredModel

if TYPE_CHECKING:
    import pandas as pd

    from mlops_assets.ml.drift import DriftResult, ReferenceProfile
    from mlops_assets.ml.evaluation import Evaluation

DRIFT_TABLE_COLUMNS = ["column", "method", "score", "threshold", "drifted", "note"]


def drift_columns(pipeline: ModelPipeline) -> list[str]:
    """The columns whose drift is watched: model inputs and sensitive features."""
    return [*pipeline.columns.numeric, *pipeline.columns.categorical, *pipeline.spec.sensitive_features]


def fairness_checks(pipeline: ModelPipeline) -> dict[str, tuple[str, float]]:
    """The production fairness checks the spec asks for: name -> (gap, limit)."""
    if not pipeline.spec.sensitive_features:
        return {}
    limits = Fairness.limits(pipeline.spec.gates)
    found = {name: (gap, limits[gap]) for name, (gap, _) in Fairness.CHECKS.items()}
    return {name: (gap, limit) for name, (gap, limit) in found.items() if limit is not None}


def build_deployment_assets(pipeline: ModelPipeline) -> list[dg.AssetsDefinition]:
    spec = pipeline.spec
    fairness = fairness_checks(pipeline)

    @dg.asset(
        key=pipeline.key(Asset.PREDICTIONS),
        group_name=pipeline.name,
        partitions_def=pipeline.partitions,
        deps=[pipeline.key(Asset.FEATURES), pipeline.key(Asset.PROMOTION)],
        check_specs=fairness_check_specs(pipeline, fairness),
        kinds={"mlflow", "parquet"},
        description=(
            "A batch scored by the model version that is champion when the run starts; the "
            "version is stored in every row and in the metadata.\n\n"
            "Every row is scored, labelled or not. On the labelled rows the metadata adds ROC AUC "
            "and the fairness of the champion's predictions in production, checked against the "
            "spec's fairness limits; the metadata of a batch without labelled rows (served "
            "traffic) says why they are skipped, and its drift is checked all the same."
        ),
    )
    @retry_on_tracking_outage
    def predictions(context: dg.AssetExecutionContext, lake: Lake, registry: MlflowRegistry) -> BatchEvents:
        yield from predictions_work(pipeline, BatchRun.of(pipeline, context), lake=lake, registry=registry)

    columns = drift_columns(pipeline)

    @dg.asset(
        key=pipeline.key(Asset.DRIFT_REPORT),
        group_name=pipeline.name,
        partitions_def=pipeline.partitions,
        # Not downstream of predictions: a batch is drift-checked also while no version is
        # champion (its scoring fails), against the newest version's training data.
        deps=[pipeline.key(Asset.FEATURES), pipeline.key(Asset.PROMOTION)],
        check_specs=drift_check_specs(pipeline, columns),
        kinds={"evidently"},
        description=(
            "How far a batch drifted from the training data of the champion that scores it in the "
            "same run; before any version is champion, from the newest registered version's "
            "training data (the latest training window), so the loop keeps watching and can "
            "retrain while nothing is scored.\n\n"
            "Per-column drift scores come from the reference profile saved with the model "
            "(Evidently's default methods and thresholds, or the spec's); the drifted share is "
            f"check `{DRIFT_CHECK}`. An Evidently HTML report of the same comparison is rendered by "
            f"job `{Job.drift_report(pipeline.name)}` in a run of its own, stored beside it and linked "
            f"here: launched by sensor `{Sensor.drift_report(pipeline.name)}` when the batch drifted "
            f"(spec `drift.html_report`: {spec.drift.html_report}), or on demand."
        ),
    )
    @retry_on_tracking_outage
    def drift_report(context: dg.AssetExecutionContext, lake: Lake, registry: MlflowRegistry) -> BatchEvents:
        yield from drift_report_work(pipeline, BatchRun.of(pipeline, context), lake=lake, registry=registry)

    return [predictions, drift_report]


def predictions_work(pipeline: ModelPipeline, run: BatchRun, *, lake: Lake, registry: MlflowRegistry) -> BatchEvents:
    """Scores every row with the champion; on labelled rows, evaluates it and checks its fairness."""
    spec, batch = pipeline.spec, run.batch
    champion = current_champion(registry, spec.name, batch)
    frame = lake.read_frame(spec.name, Asset.FEATURES, batch)
    out, result = score_batch(pipeline, frame, registry.load_model(champion), champion.version)
    lake.write_frame(spec.name, Asset.PREDICTIONS, out, batch)
    if result is not None:
        quality = ProductionEvaluation(model_version=champion.version, evaluation=result)
        lake.write_json(spec.name, LakeFolder.PRODUCTION_EVALUATION, quality.to_dict(), batch)
    run.log.info("%s batch %s scored by version %s", spec.name, batch, champion.version)
    yield dg.MaterializeResult(metadata=predictions_metadata(out, champion, result))
    yield from fairness_check_results(fairness_checks(pipeline), result, batch=batch, version=champion.version)


def drift_report_work(pipeline: ModelPipeline, run: BatchRun, *, lake: Lake, registry: MlflowRegistry) -> BatchEvents:
    """The batch's drift against the champion's training data (else the newest version's)."""
    spec, batch = pipeline.spec, run.batch
    reference = drift_reference(registry, spec.name, batch)
    scored_by = reference.version
    current = lake.read_frame(spec.name, Asset.FEATURES, batch)
    profile = reference_profile(registry, spec.name, scored_by)
    result = detect(pipeline, profile, current)
    # The HTML report (seconds of Evidently) is rendered by a run of its own that the drift
    # report sensor launches for the batches wants_html_report picks; it links it here.
    summary = DriftSummary(
        batch=batch,
        model_version=scored_by,
        drifted_share=result.drifted_share,
        dataset_drift=result.dataset_drift,
        columns=tuple(c.__dict__ for c in result.columns),
    )
    lake.write_json(spec.name, Asset.DRIFT_REPORT, summary.to_dict(), batch)
    yield from drift_check_results(pipeline, result, batch=batch, scored_by=scored_by, columns=drift_columns(pipeline))
    metadata = drift_metadata(result, scored_by)
    if not reference.is_champion:
        metadata[Meta.DRIFT_REFERENCE] = (
            f"no version is champion yet: drift against version {scored_by}'s training data, the newest"
        )
    yield dg.MaterializeResult(metadata=metadata)


def wants_html_report(mode: str, *, dataset_drift: bool) -> bool:
    """Whether a scoring run renders the Evidently HTML report (spec ``drift.html_report``)."""
    return mode == "always" or (mode == "on_drift" and dataset_drift)


def build_drift_report_job(pipeline: ModelPipeline) -> dg.JobDefinition:
    """Renders one batch's Evidently HTML report on demand, without re-running its checks.

    The link is recorded as an observation of the batch's drift_report partition, so the
    drift check's verdict (and what the sensors did about it) is left as it was.
    """
    spec = pipeline.spec

    @dg.op(name=f"{pipeline.name}_render_drift_report", description="Renders the Evidently HTML report of a batch.")
    @retry_on_tracking_outage
    def render_drift_report(context: dg.OpExecutionContext, lake: Lake, registry: MlflowRegistry):  # noqa: ANN202 - events
        batch = pipeline.batch(context)
        if not lake.exists(spec.name, Asset.DRIFT_REPORT, batch, "json"):
            raise dg.Failure(f"{spec.name}: batch {batch} has not been drift-checked, so it has no drift to report")
        # The version its drift check compared it with (the champion that scored it, or the newest).
        drift = DriftSummary.from_dict(lake.read_json(spec.name, Asset.DRIFT_REPORT, batch), origin=batch)
        scored_by = drift.model_version
        current = lake.read_frame(spec.name, Asset.FEATURES, batch)
        path = render_report(pipeline, lake, batch, reference_profile(registry, spec.name, scored_by), current)
        context.log.info("%s batch %s: Evidently report at %s", spec.name, batch, path)
        yield dg.AssetObservation(
            asset_key=pipeline.key(Asset.DRIFT_REPORT),
            partition=batch,
            metadata={Meta.MODEL_VERSION: scored_by, Meta.DRIFT_HTML_REPORT: dg.MetadataValue.path(path)},
        )
        yield dg.Output(path)

    @dg.job(
        name=Job.drift_report(pipeline.name),
        partitions_def=pipeline.partitions,
        tags=pipeline.tags,
        description=f"Renders the Evidently HTML drift report of one scored {pipeline.name} batch.",
    )
    def drift_report_job() -> None:
        render_drift_report()

    return drift_report_job


def fairness_check_specs(pipeline: ModelPipeline, fairness: dict[str, tuple[str, float]]) -> list[dg.AssetCheckSpec]:
    sensitive = ", ".join(pipeline.spec.sensitive_features)
    return [
        dg.AssetCheckSpec(
            name,
            asset=pipeline.key(Asset.PREDICTIONS),
            description=f"On labelled batches, the champion's {gap.replace('_', ' ')} across "
            f"{sensitive} stays within {limit:g} (bias drift in production).",
        )
        for name, (gap, limit) in fairness.items()
    ]


def drift_check_specs(pipeline: ModelPipeline, columns: list[str]) -> list[dg.AssetCheckSpec]:
    share = pipeline.spec.drift.drift_share
    return [
        dg.AssetCheckSpec(
            DRIFT_CHECK,
            asset=pipeline.key(Asset.DRIFT_REPORT),
            description=f"Fewer than {share:.0%} of the watched columns drifted (Evidently's dataset drift).",
        ),
        *(
            dg.AssetCheckSpec(
                column_drift_check(column),
                asset=pipeline.key(Asset.DRIFT_REPORT),
                description=f"Column {column} did not drift from the champion's training data.",
            )
            for column in columns
        ),
    ]


def current_champion(registry: MlflowRegistry, name: str, batch: str) -> RegisteredModel:
    champion = registry.by_alias(name, CHAMPION)
    if champion is None:
        raise dg.Failure(
            f"{name}: no version is champion yet, so batch {batch} cannot be scored; "
            "materialize training_dataset, model, evaluation and promotion (see the promotion "
            "asset's reasons if a candidate was rejected)"
        )
    return champion


def score_batch(
    pipeline: ModelPipeline, frame: "pd.DataFrame", model: Any, version: str
) -> "tuple[pd.DataFrame, Evaluation | None]":
    """Every row's score and prediction by ``model``; with labelled rows, their evaluation."""
    import numpy as np
    import pandas as pd

    from mlops_assets.ml.data import LABEL
    from mlops_assets.ml.evaluation import DECISION_THRESHOLD, evaluate
    from mlops_assets.ml.scoring import positive_scores
    from mlops_assets.ml.trainers import prepare_inputs

    sensitive = pipeline.spec.sensitive_features
    scores = positive_scores(model, prepare_inputs(frame, pipeline.columns.numeric, pipeline.columns.categorical))
    out = pd.DataFrame(
        {
            "row": np.arange(len(frame)),
            "score": scores,
            "prediction": (scores >= DECISION_THRESHOLD).astype("int8"),
            "label": frame[LABEL],
            **{c: frame[c] for c in sensitive},
            Meta.MODEL_VERSION: version,
        }
    )
    labelled = out["label"].notna()
    if not labelled.any():
        return out, None
    result = evaluate(
        out.loc[labelled, "label"].to_numpy(),
        scores[labelled.to_numpy()],
        out.loc[labelled, sensitive],
        min_group_size=pipeline.spec.gates.min_group_size,
    )
    return out, result


def predictions_metadata(
    out: "pd.DataFrame", champion: RegisteredModel, result: "Evaluation | None"
) -> dict[str, object]:
    metadata: dict[str, object] = {
        Meta.MODEL_VERSION: champion.version,
        "model_uri": champion.uri,
        "dagster/row_count": len(out),
        "predicted_positive_rate": float(out["prediction"].mean()) if len(out) else 0.0,
    }
    labelled = int(out["label"].notna().sum())
    metadata[Meta.LABELLED_ROWS] = labelled
    if result is None:
        metadata[Meta.EVALUATION_SKIPPED] = (
            f"none of the {len(out)} rows has a label: scored, but performance and fairness are not evaluated"
        )
    else:
        metadata.update({f"{k}": v for k, v in result.metrics.items() if v is not None})
        for gap in Fairness.GAPS:
            if result.worst(gap) is not None:
                metadata[gap] = result.worst(gap)
    return metadata


def fairness_check_results(
    fairness: dict[str, tuple[str, float]], result: "Evaluation | None", *, batch: str, version: str
) -> Iterator[dg.AssetCheckResult]:
    note = result.too_small_note() if result is not None else ""
    for name, (gap, limit) in fairness.items():
        value = result.worst(gap) if result is not None else None
        yield dg.AssetCheckResult(
            check_name=name,
            passed=value is None or value <= limit,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                f"batch {batch}: not evaluated: no labelled rows with both classes, or fewer than two "
                f"groups large enough to compare{note}"
                if value is None
                else f"batch {batch}: {gap} {value:.3f} {'within' if value <= limit else 'exceeds'} "
                f"limit {limit:g} (champion version {version}){note}"
            ),
            metadata={
                Meta.BATCH: batch,
                "gap": value if value is not None else -1.0,
                "limit": limit,
                Meta.MODEL_VERSION: version,
                Meta.TOO_SMALL_GROUPS: dg.MetadataValue.json(result.too_small() if result is not None else []),
            },
        )


@dataclass(frozen=True)
class DriftReference:
    """The version whose training data a batch's drift is measured against."""

    version: str
    is_champion: bool


def drift_reference(registry: MlflowRegistry, name: str, batch: str) -> DriftReference:
    """The champion (which scores the batch in the same run), or before there is one the newest
    registered version: its training data is the latest training window.

    Raises:
        dagster.Failure: no version is registered yet, so there is no training data to compare with.
    """
    champion = registry.by_alias(name, CHAMPION)
    if champion is not None:
        return DriftReference(champion.version, is_champion=True)
    registered = registry.versions(name)
    if not registered:
        raise dg.Failure(
            f"{name}: no version is registered yet, so batch {batch} has no training data to be "
            "drift-checked against; materialize training_dataset and model"
        )
    newest = max(registered, key=lambda v: int(v.version))
    return DriftReference(newest.version, is_champion=False)


def reference_profile(registry: MlflowRegistry, name: str, version: str) -> "ReferenceProfile":
    """The training-data profile saved with ``version``: what its batches' drift is measured against."""
    from mlops_assets.ml.drift import ReferenceProfile

    run_id = registry.get(name, version).run_id
    return ReferenceProfile.from_bytes(registry.run_artifact(run_id, artifact_path(Artifact.REFERENCE_PROFILE)))


def detect(pipeline: ModelPipeline, profile: "ReferenceProfile", current: "pd.DataFrame") -> "DriftResult":
    """Drift of ``current`` against ``profile`` under the spec's policy (milliseconds, no Evidently import)."""
    from mlops_assets.ml.drift import DriftPolicy, detect_drift

    return detect_drift(profile, current, DriftPolicy(**pipeline.spec.drift.policy_fields()))


def render_report(
    pipeline: ModelPipeline, lake: Lake, batch: str, profile: "ReferenceProfile", current: "pd.DataFrame"
) -> str:
    """The Evidently HTML report of the same comparison, written to the lake; its path."""
    import tempfile
    from pathlib import Path

    from mlops_assets.ml.drift import DriftPolicy, render_evidently_report

    spec = pipeline.spec
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "drift.html"
        render_evidently_report(profile, current, DriftPolicy(**spec.drift.policy_fields()), str(html))
        return lake.write_bytes(spec.name, Asset.DRIFT_REPORT, html.read_bytes(), batch, "html")


def drift_rows(result: "DriftResult") -> list[dict[str, object]]:
    return [
        {
            "column": c.column,
            "method": c.method_label,
            "score": c.score,
            "threshold": c.threshold,
            "drifted": c.drifted,
            "note": c.note,
        }
        for c in result.columns
    ]


def drift_check_results(
    pipeline: ModelPipeline, result: "DriftResult", *, batch: str, scored_by: str, columns: list[str]
) -> Iterator[dg.AssetCheckResult]:
    limit = pipeline.spec.drift.drift_share
    yield dg.AssetCheckResult(
        check_name=DRIFT_CHECK,
        passed=not result.dataset_drift,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"batch {batch}: {result.drifted_share:.0%} of columns drifted "
            f"(limit {limit:.0%}) against version {scored_by}'s training data"
        ),
        metadata={
            "drifted_share": result.drifted_share,
            "drift_share_limit": limit,
            "drifted_columns": dg.MetadataValue.json([c.column for c in result.columns if c.drifted]),
            "columns": table(drift_rows(result), DRIFT_TABLE_COLUMNS),
            Meta.BATCH: batch,
        },
    )
    by_column = {c.column: c for c in result.columns}
    for column in columns:
        c = by_column[column]
        yield dg.AssetCheckResult(
            check_name=column_drift_check(column),
            passed=not c.drifted,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{c.method_label} {c.score:.4g} (threshold {c.threshold:g})"
            + (f"; {c.note}" if c.note else ""),
            metadata={Meta.BATCH: batch, "score": c.score, "threshold": c.threshold, "method": c.method},
        )


def drift_metadata(result: "DriftResult", scored_by: str) -> dict[str, object]:
    # No report link: the report run records it (an observation) once the report exists.
    return {
        Meta.MODEL_VERSION: scored_by,
        "drifted_share": result.drifted_share,
        Meta.DATASET_DRIFT: result.dataset_drift,
        "columns": table(drift_rows(result), DRIFT_TABLE_COLUMNS),
    }
