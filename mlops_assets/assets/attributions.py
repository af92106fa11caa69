"""Why each row got its score: the ``attributions`` asset of every scored batch and its
``attribution_drift`` check.

Its own step after ``predictions`` (in the same score-batch run), so explaining never slows
scoring: it explains the rows with the version that scored them (``model_version`` of the stored
predictions, not whatever is champion now), exactly for trees and linear models (base value plus
contributions is the raw output within float rounding), by integrated gradients for torch with
the completeness error kept per row. The file ``attributions/<batch>.parquet`` lies beside
``predictions/<batch>.parquet``, one row per prediction row with the same ``row`` number, in the
compact layout of ``ml.attribution.storage`` (top ``explain.top_k`` contributions plus the rest).
The check compares the batch's importance ranking with the training baseline the version carries.
"""

import io
from typing import TYPE_CHECKING

import dagster as dg

from mlops_assets.assets.common import BatchEvents, BatchRun, ModelPipeline, retry_on_tracking_outage
from mlops_assets.contract import ATTRIBUTION_DRIFT_CHECK, Artifact, Asset, Meta, artifact_path
from mlops_assets.untrusted import md_code
from resources.lake import Lake
from resources.registry import MlflowRegistry, RegisteredModel

if TYPE_CHECKING:
    from mlops_assets.ml.attribution import AttributionBaseline, FileInfo


def build_attribution_assets(pipeline: ModelPipeline) -> list[dg.AssetsDefinition]:
    spec = pipeline.spec
    explain = spec.explain
    key = pipeline.key(Asset.ATTRIBUTIONS)

    @dg.asset(
        key=key,
        group_name=pipeline.name,
        partitions_def=pipeline.partitions,
        deps=[pipeline.key(Asset.PREDICTIONS), pipeline.key(Asset.FEATURES)],
        check_specs=[
            dg.AssetCheckSpec(
                ATTRIBUTION_DRIFT_CHECK,
                asset=key,
                description=(
                    f"The batch's importance ranking (mean |contribution| per column) against the scoring "
                    f"version's training baseline: {explain.drift_metric} at least {explain.drift_threshold:g} "
                    "(spec explain.drift_metric / explain.drift_threshold)."
                ),
            )
        ],
        kinds={"parquet"},
        description=(
            "Every scored row explained by the version that scored it: the contribution of each input "
            f"column to its raw output (top {explain.top_k} per row and the rest as one sum), beside the "
            "predictions and linked by `row`; `mlops explain <model> --batch <b> --row <r>` prints one."
        ),
    )
    @retry_on_tracking_outage
    def attributions(context: dg.AssetExecutionContext, lake: Lake, registry: MlflowRegistry) -> BatchEvents:
        yield from attributions_work(pipeline, BatchRun.of(pipeline, context), lake=lake, registry=registry)

    return [attributions]


def attributions_work(pipeline: ModelPipeline, run: BatchRun, *, lake: Lake, registry: MlflowRegistry) -> BatchEvents:
    """Explains every scored row with the version that scored it, and checks the batch's importance ranking."""
    from mlops_assets.ml.attribution import build_explainer, decide_attribution_drift, write_attributions
    from mlops_assets.ml.trainers import prepare_inputs

    spec = pipeline.spec
    explain = spec.explain
    key = pipeline.key(Asset.ATTRIBUTIONS)

    batch = run.batch
    predictions = lake.read_frame(spec.name, Asset.PREDICTIONS, batch)
    if predictions.empty:
        raise dg.Failure(f"{spec.name}: batch {batch} has no scored rows to explain")
    version = registry.get(spec.name, str(predictions[Meta.MODEL_VERSION].iloc[0]))
    frame = lake.read_frame(spec.name, Asset.FEATURES, batch)
    if len(frame) != len(predictions):
        raise dg.Failure(
            f"{spec.name}: batch {batch} has {len(frame)} feature rows but {len(predictions)} predictions; "
            "materialize predictions again"
        )
    baseline = baseline_of(registry, version)
    family = version.family
    explainer = build_explainer(
        family,
        registry.load_version(version),
        numeric=pipeline.columns.numeric,
        categorical=pipeline.columns.categorical,
        baseline=baseline,
    )
    explained = explainer.explain(prepare_inputs(frame, pipeline.columns.numeric, pipeline.columns.categorical))
    buffer = io.BytesIO()
    info = write_attributions(
        buffer,
        explained,
        top_k=explain.top_k,
        model_version=version.version,
        model_family=family,
        batch=batch,
        rows=predictions["row"].tolist(),
    )
    path = lake.write_bytes(spec.name, Asset.ATTRIBUTIONS, buffer.getvalue(), batch, "parquet")
    run.log.info(
        "%s batch %s: %d rows explained by version %s (%s), max |residual| %.2e",
        spec.name,
        batch,
        info.rows,
        version.version,
        info.method,
        info.max_abs_residual,
    )
    yield dg.MaterializeResult(metadata=attributions_metadata(info, path))
    drift = decide_attribution_drift(
        baseline=baseline.importance,
        batch=info.importance,
        threshold=explain.drift_threshold,
        metric=explain.drift_metric,
    )
    yield dg.AssetCheckResult(
        asset_key=key,
        check_name=ATTRIBUTION_DRIFT_CHECK,
        passed=not drift.drifted,
        severity=dg.AssetCheckSeverity.WARN,
        description=drift.reason,
        metadata={
            Meta.BATCH: batch,
            Meta.MODEL_VERSION: version.version,
            drift.metric: drift.value,
            "threshold": drift.threshold,
            "batch_ranking": dg.MetadataValue.json(drift.batch_ranking),
            "baseline_ranking": dg.MetadataValue.json(drift.baseline_ranking),
        },
    )


def baseline_of(registry: MlflowRegistry, version: RegisteredModel) -> "AttributionBaseline":
    """The training-time attribution baseline logged with ``version``."""
    from mlops_assets.ml.attribution import AttributionBaseline

    path = artifact_path(Artifact.ATTRIBUTION_BASELINE)
    try:
        text = registry.run_artifact(version.run_id, path).decode()
    except Exception as e:
        raise dg.Failure(
            f"{version.name}: version {version.version} has no {path} on run {version.run_id} (trained before "
            "explanations existed?); retrain it to explain its scores"
        ) from e
    try:
        return AttributionBaseline.from_json(text)
    except ValueError as e:
        raise dg.Failure(f"{version.name}: version {version.version}'s {path}: {e}") from e


def attributions_metadata(info: "FileInfo", path: str) -> dict[str, object]:
    ranked = sorted(info.importance.items(), key=lambda kv: -kv[1])
    return {
        Meta.MODEL_VERSION: info.model_version,
        "method": info.method,
        "dagster/row_count": info.rows,
        "top_k": info.top_k,
        "max_abs_residual": info.max_abs_residual,
        "path": dg.MetadataValue.path(path),
        "importance": dg.MetadataValue.md("\n".join(f"- {md_code(c)}: {v:.4f}" for c, v in ranked)),
        **{f"importance_{c}": v for c, v in ranked},
    }
