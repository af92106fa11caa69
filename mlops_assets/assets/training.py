"""Training: the window of labelled batches, and the model trained on it as an MLflow version.

Every file of a window lives under its training fingerprint (``training_dataset/<fingerprint>/``)
and the model step reads the window its own run assembled, so overlapping retrains of one model
never train or register a version on another run's data.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from mlops_assets.assets.common import (
    ModelPipeline,
    recorded,
    retry_on_tracking_outage,
    table,
    upstream_materialization,
)
from mlops_assets.contract import (
    CHALLENGER,
    Artifact,
    Asset,
    LakeFolder,
    Meta,
    MlflowTag,
    TrainingFile,
    training_file,
)
from mlops_assets.records import TrainingManifest
from mlops_assets.spec import PipelineSpec
from resources.lake import Lake
from resources.registry import MlflowRegistry, RegisteredModel

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlops_assets.ml.torch_mlp import EpochReport, TorchMLPClassifier


class TrainingWindow(dg.Config):
    """Which batches the training data covers."""

    until: str = Field(
        default="",
        description="The last batch in the window (inclusive). Empty: the spec's training.initial_until. "
        "Retraining runs started by sensors set it to the newest labelled batch.",
    )


def build_training_assets(pipeline: ModelPipeline, *, op_tags: dict[str, object]) -> list[dg.AssetsDefinition]:
    spec = pipeline.spec

    @dg.asset(
        key=pipeline.key(Asset.TRAINING_DATASET),
        group_name=pipeline.name,
        deps=[pipeline.key(Asset.FEATURES)],
        kinds={"pandas", "parquet"},
        description=(
            "The labelled rows of every batch in the training window, split into a training set "
            f"and a holdout of about {spec.training.holdout_fraction:.0%}. A row's side is a stable hash of its "
            "batch and position, the same in every window, so a retrained candidate and the champion "
            "are never compared on rows either of them trained on.\n\n"
            "Its metadata lists the batches with their fingerprints: the lineage of every model "
            "trained on it."
        ),
    )
    def training_dataset(context: dg.AssetExecutionContext, config: TrainingWindow, lake: Lake) -> dg.MaterializeResult:
        until = window_until(spec, config.until)
        parts = read_window(context, pipeline, lake, until)
        window = split_window(spec, parts.frames, parts.content_versions)
        store_window(lake, spec.name, window)
        return window_result(window, until)

    @dg.asset(
        key=pipeline.key(Asset.MODEL),
        group_name=pipeline.name,
        deps=[training_dataset],
        op_tags=op_tags,
        kinds={"mlflow", "torch" if spec.training.model == "torch_mlp" else "scikitlearn"},
        description=(
            f"A `{spec.training.model}` model trained on the training set, registered in MLflow as "
            f"`{spec.name}` with alias `challenger`.\n\n"
            "The MLflow run holds the params, training metrics, the training data as a dataset "
            "input, the signature and the drift reference profile; the version is tagged with the "
            "Dagster run, the code version and the batches. Training the same data with the same "
            "code and spec again reuses the existing version instead of adding one."
        ),
    )
    @retry_on_tracking_outage
    def model(context: dg.AssetExecutionContext, lake: Lake, registry: MlflowRegistry) -> dg.MaterializeResult:
        manifest = window_of_run(context, pipeline, lake)
        existing = registry.find_by_fingerprint(spec.name, manifest.training_fingerprint)
        if existing is not None:
            registry.set_alias(spec.name, CHALLENGER, existing.version)
            context.log.info(
                "%s: version %s was trained on the same data and code; reused", spec.name, existing.version
            )
            return model_result(existing, reused=True, manifest=manifest)
        trained = train_and_register(context, pipeline, manifest, lake=lake, registry=registry)
        registry.set_alias(spec.name, CHALLENGER, trained.registered.version)
        return model_result(trained.registered, reused=False, manifest=manifest, trained=trained)

    return [training_dataset, model]


@dataclass(frozen=True)
class Trained:
    """A newly registered version, its training ROC AUC, and what its fit cost."""

    registered: RegisteredModel
    train_auc: float
    fit_seconds: float
    threads: int


@dataclass(frozen=True)
class WindowSplit:
    """A training window split into training set and holdout, with its manifest."""

    rows_per_batch: dict[str, int]
    train: "pd.DataFrame"
    holdout: "pd.DataFrame"
    positive_rate: float
    manifest: TrainingManifest


def window_until(spec: PipelineSpec, configured: str) -> str | None:
    """The window's last batch: the run's config, else the spec's ``training.initial_until``."""
    if configured:
        return configured
    return None if spec.training.initial_until is None else str(spec.training.initial_until)


def select_window(registered: Sequence[str], until: str | None) -> list[str]:
    """The registered batches up to ``until`` (every one when None), in batch order."""
    from mlops_assets.ml.data import batch_at_or_before, sorted_batches

    return [b for b in sorted_batches(registered) if until is None or batch_at_or_before(b, until)]


@dataclass(frozen=True)
class WindowParts:
    """The features of each batch of a window, and the raw content version each came from
    (absent for features written before content versions were recorded)."""

    frames: "dict[str, pd.DataFrame]"
    content_versions: dict[str, str]


def read_window(
    context: dg.AssetExecutionContext, pipeline: ModelPipeline, lake: Lake, until: str | None
) -> WindowParts:
    """The features of every batch of the window that has them and holds a label."""
    from mlops_assets.ml.data import LABEL

    name = pipeline.name
    window = select_window(context.instance.get_dynamic_partitions(pipeline.partitions.name), until)
    ready = [b for b in window if lake.exists(name, Asset.FEATURES, b)]
    missing = sorted(set(window) - set(ready))
    if missing:
        context.log.warning(
            "%s: batches %s have no features yet (not validated?); left out of the window", name, missing
        )
    if not ready:
        raise dg.Failure(f"{name}: no batch up to {until} has features; materialize features first")
    parts = {b: lake.read_frame(name, Asset.FEATURES, b) for b in ready}
    frames = {b: f for b, f in parts.items() if f[LABEL].notna().any()}
    versions = {b: lake.frame_tags(name, Asset.FEATURES, b).get(Meta.CONTENT_VERSION) for b in frames}
    return WindowParts(frames, {b: v for b, v in versions.items() if v})


def labelled_rows(features: "pd.DataFrame") -> "pd.DataFrame":
    """A batch's labelled rows, renumbered: features keeps unlabelled rows for scoring, while a
    row's holdout side is a hash of its position among the labelled rows, as it always was."""
    from mlops_assets.ml.data import LABEL

    return features[features[LABEL].notna()].reset_index(drop=True)


def split_window(
    spec: PipelineSpec, parts: "Mapping[str, pd.DataFrame]", content_versions: Mapping[str, str] | None = None
) -> WindowSplit:
    """Training set and holdout of the window's labelled rows, each row's side a stable hash.

    Raises:
        Failure: the window, the training set or the holdout holds a single label class.
    """
    import pandas as pd

    from mlops_assets.ml.data import LABEL, frame_fingerprint, holdout_mask
    from mlops_assets.ml.lineage import training_fingerprint

    # The features' own fingerprint (every row), which lineage matches against their materializations.
    fingerprints = {b: frame_fingerprint(f) for b, f in parts.items()}
    labelled = {b: labelled_rows(f) for b, f in parts.items()}
    data = pd.concat([f.assign(__batch__=b, __row__=range(len(f))) for b, f in labelled.items()], ignore_index=True)
    if data[LABEL].nunique() < 2:
        raise dg.Failure(f"{spec.name}: the training window {list(parts)} holds a single label class")
    in_holdout = holdout_mask(
        data["__batch__"], data["__row__"], fraction=spec.training.holdout_fraction, seed=spec.training.seed
    )
    train, holdout = data[~in_holdout].reset_index(drop=True), data[in_holdout].reset_index(drop=True)
    for side, frame in (("training set", train), ("holdout", holdout)):
        if frame[LABEL].nunique() < 2:
            raise dg.Failure(f"{spec.name}: the {side} of window {list(parts)} holds a single label class")
    manifest = TrainingManifest(
        batches=tuple(parts),
        fingerprints=fingerprints,
        training_fingerprint=training_fingerprint(spec, fingerprints),
        train_rows=len(train),
        holdout_rows=len(holdout),
        content_versions={b: v for b, v in (content_versions or {}).items() if b in parts},
    )
    return WindowSplit(
        rows_per_batch={b: len(f) for b, f in labelled.items()},
        train=train,
        holdout=holdout,
        positive_rate=float(data[LABEL].mean()),
        manifest=manifest,
    )


def store_window(lake: Lake, name: str, window: WindowSplit) -> None:
    """Training set, holdout and manifest under the window's training fingerprint."""
    fingerprint = window.manifest.training_fingerprint
    lake.write_frame(name, Asset.TRAINING_DATASET, window.train, training_file(fingerprint, TrainingFile.TRAIN))
    lake.write_frame(name, Asset.TRAINING_DATASET, window.holdout, training_file(fingerprint, TrainingFile.HOLDOUT))
    lake.write_bytes(
        name,
        Asset.TRAINING_DATASET,
        window.manifest.to_json(),
        training_file(fingerprint, TrainingFile.MANIFEST),
        "json",
    )


def window_result(window: WindowSplit, until: str | None) -> dg.MaterializeResult:
    manifest = window.manifest
    return dg.MaterializeResult(
        metadata={
            Meta.WINDOW_UNTIL: until or "(all)",
            "batches": table(
                [
                    {
                        "batch": b,
                        "rows": window.rows_per_batch[b],
                        "fingerprint": manifest.fingerprints[b],
                        Meta.CONTENT_VERSION: manifest.content_versions.get(b),
                    }
                    for b in manifest.batches
                ],
                ["batch", "rows", "fingerprint", Meta.CONTENT_VERSION],
            ),
            "train_rows": manifest.train_rows,
            "holdout_rows": manifest.holdout_rows,
            "positive_rate": window.positive_rate,
            Meta.TRAINING_FINGERPRINT: manifest.training_fingerprint,
        },
        data_version=dg.DataVersion(manifest.training_fingerprint),
    )


def read_manifest(lake: Lake, name: str, fingerprint: str) -> TrainingManifest:
    """The manifest of the window with training fingerprint ``fingerprint``."""
    partition = training_file(fingerprint, TrainingFile.MANIFEST)
    if not lake.exists(name, Asset.TRAINING_DATASET, partition, "json"):
        raise dg.Failure(
            f"{name}: no training data with fingerprint {fingerprint} at "
            f"{lake.uri(name, Asset.TRAINING_DATASET, partition, 'json')}; materialize training_dataset again"
        )
    return TrainingManifest.from_json(
        lake.read_bytes(name, Asset.TRAINING_DATASET, partition, "json"),
        origin=lake.uri(name, Asset.TRAINING_DATASET, partition, "json"),
    )


# Model materializations read per page when looking for the versions trained on a batch.
_MODEL_PAGE = 200


def trained_content(
    instance: dg.DagsterInstance, pipeline: ModelPipeline, lake: Lake, batch: str
) -> dict[str, str | None]:
    """The registered versions whose training window held ``batch``, each with the batch's raw
    content version it recorded (None: a manifest from before content versions were recorded).

    Read from the ``model`` materializations (version and training fingerprint) and the manifests
    they name; a version whose manifest is gone is logged by the caller's reader, not guessed.
    """
    found: dict[str, str | None] = {}
    cursor = None
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=pipeline.key(Asset.MODEL)), limit=_MODEL_PAGE, cursor=cursor
        )
        for record in page.records:
            version, fingerprint = recorded(record, Meta.VERSION), recorded(record, Meta.TRAINING_FINGERPRINT)
            if version is None or fingerprint is None or str(version) in found:
                continue
            manifest = read_manifest(lake, pipeline.name, str(fingerprint))
            if batch in manifest.batches:
                found[str(version)] = manifest.content_versions.get(batch)
        if not page.has_more:
            return found
        cursor = page.cursor


def window_of_run(context: dg.AssetExecutionContext, pipeline: ModelPipeline, lake: Lake) -> TrainingManifest:
    """The manifest of the window this run assembled (else the latest window assembled)."""
    record = upstream_materialization(context, pipeline.key(Asset.TRAINING_DATASET))
    fingerprint = recorded(record, Meta.TRAINING_FINGERPRINT) if record is not None else None
    if fingerprint is None:
        raise dg.Failure(f"{pipeline.name}: no training_dataset was materialized; materialize it first")
    return read_manifest(lake, pipeline.name, str(fingerprint))


def version_tags(context: dg.AssetExecutionContext, manifest: TrainingManifest) -> dict[str, str]:
    from mlops_assets.ml.lineage import code_version

    return {
        MlflowTag.TRAINING_FINGERPRINT: manifest.training_fingerprint,
        MlflowTag.DAGSTER_RUN_ID: context.run_id,
        MlflowTag.CODE_VERSION: code_version(),
        MlflowTag.TRAINING_BATCHES: ",".join(manifest.batches),
    }


def train_and_register(
    context: dg.AssetExecutionContext,
    pipeline: ModelPipeline,
    manifest: TrainingManifest,
    *,
    lake: Lake,
    registry: MlflowRegistry,
) -> Trained:
    """Trains the spec's model on the window's training set and registers it with its lineage.

    The fit and the work on the fitted model run with their native thread pools sized to the
    run's CPU share (``run_share``): HGB's OpenMP threads on a two-core machine shared with another
    run made the same fit 7-12x slower than with one thread (scikit-learn #30662).
    """
    import time

    from sklearn.metrics import roc_auc_score

    from mlops_assets.ml.attribution import fit_baseline
    from mlops_assets.ml.cpus import cpu_share, run_share
    from mlops_assets.ml.data import LABEL
    from mlops_assets.ml.drift import ReferenceProfile
    from mlops_assets.ml.trainers import build_estimator, effective_params, prepare_inputs

    spec, fingerprint = pipeline.spec, manifest.training_fingerprint
    numeric, categorical = pipeline.columns.numeric, pipeline.columns.categorical
    train = lake.read_frame(spec.name, Asset.TRAINING_DATASET, training_file(fingerprint, TrainingFile.TRAIN))
    inputs = prepare_inputs(train, numeric, categorical)
    y = train[LABEL].to_numpy(dtype="int64")
    estimator = build_estimator(
        spec.training.model,
        numeric=numeric,
        categorical=categorical,
        params=spec.training.params,
        seed=spec.training.seed,
    )
    context.log.info("%s: training %s on %d rows", spec.name, spec.training.model, len(train))
    tags = version_tags(context, manifest)
    # The MLflow run exists before training, so a torch model's curve fills in while it trains.
    run_id = registry.open_training_run(experiment=spec.name, tags=tags)
    threads = run_share(spec.training.cpu)
    with cpu_share(threads):
        began = time.perf_counter()
        if spec.training.model == "torch_mlp":
            _fit_torch(
                context, estimator, inputs, y, lake=lake, registry=registry, run_id=run_id, fingerprint=fingerprint
            )
        else:
            estimator.fit(inputs, y)
        fit_seconds = time.perf_counter() - began
        context.log.info("%s: fitted in %.2fs with %d thread(s)", spec.name, fit_seconds, threads)
        train_auc = float(roc_auc_score(y, estimator.predict_proba(inputs)[:, 1]))
        # Explaining the version's scores later needs its training rows' expectations and importance.
        baseline = fit_baseline(
            spec.training.model,
            estimator,
            inputs,
            numeric=numeric,
            categorical=categorical,
            integration_steps=spec.explain.integration_steps,
        )
    profile = ReferenceProfile.build(
        train, numerical=numeric, categorical=[*categorical, *spec.sensitive_features], seed=spec.training.seed
    )
    registered = registry.log_and_register(
        name=spec.name,
        experiment=spec.name,
        model=estimator,
        family=spec.training.model,
        params={
            "family": spec.training.model,
            "seed": spec.training.seed,
            **effective_params(spec.training.model, estimator),
        },
        metrics={"train_roc_auc": train_auc, "train_rows": float(len(train))},
        train_inputs=inputs,
        training_frame=train,
        label_column=LABEL,
        tags=tags,
        extra_artifacts={
            Artifact.REFERENCE_PROFILE: profile.to_bytes(),
            Artifact.VALIDATION_SUITE: lake.read_bytes(spec.name, Asset.VALIDATION_SUITE, ext="json"),
            Artifact.TRAINING_MANIFEST: manifest.to_json(),
            Artifact.ATTRIBUTION_BASELINE: baseline.to_json().encode(),
        },
        run_id=run_id,
    )
    return Trained(registered, train_auc, fit_seconds, threads)


def _fit_torch(
    context: dg.AssetExecutionContext,
    estimator: "TorchMLPClassifier",
    inputs: "pd.DataFrame",
    y: "np.ndarray",
    *,
    lake: Lake,
    registry: MlflowRegistry,
    run_id: str,
    fingerprint: str,
) -> None:
    """Trains with per-epoch progress in the Dagster log and, batched, in the MLflow run.

    The checkpoint written after every epoch is copied to the lake under the training
    fingerprint, so a retried run (a new process, or a new pod) resumes from the last epoch.
    """
    import tempfile
    from pathlib import Path

    from mlops_assets.ml.torch_mlp import CHECKPOINT_FILE, BatchedMetricLogger

    name = context.assets_def.key.path[0]
    with tempfile.TemporaryDirectory() as local:
        checkpoint = Path(local) / CHECKPOINT_FILE
        if lake.exists(name, LakeFolder.CHECKPOINTS, fingerprint, "pt"):
            checkpoint.write_bytes(lake.read_bytes(name, LakeFolder.CHECKPOINTS, fingerprint, "pt"))
            context.log.info("%s: found a checkpoint for this training data; resuming from it", name)
        to_mlflow = BatchedMetricLogger(lambda metrics: registry.log_metrics(run_id, metrics), every_n_epochs=5)

        def on_epoch(report: "EpochReport") -> None:
            context.log.info(
                "%s epoch %d: train loss %.4f, validation loss %.4f, %.0f samples/s",
                name,
                report.epoch,
                report.train_loss,
                report.val_loss,
                report.samples_per_second,
            )
            to_mlflow(report)
            lake.write_bytes(name, LakeFolder.CHECKPOINTS, checkpoint.read_bytes(), fingerprint, "pt")

        estimator.checkpoint_dir, estimator.on_epoch = local, on_epoch
        try:
            with to_mlflow:
                estimator.fit(inputs, y)
        finally:
            # Training-time hooks are not part of the registered model.
            estimator.checkpoint_dir, estimator.on_epoch = None, None
        context.log.info(
            "%s: best epoch %d of %d; MLflow tracking took %.3fs",
            name,
            estimator.best_epoch,
            len(estimator.history),
            to_mlflow.seconds_in_flush,
        )


def model_result(
    registered: RegisteredModel, *, reused: bool, manifest: TrainingManifest, trained: Trained | None = None
) -> dg.MaterializeResult:
    metadata: dict[str, Any] = {
        Meta.VERSION: registered.version,
        "model_uri": registered.uri,
        "mlflow_run_id": registered.run_id,
        "reused_existing_version": reused,
        "training_batches": dg.MetadataValue.json(list(manifest.batches)),
        Meta.TRAINING_CONTENT_VERSIONS: dg.MetadataValue.json(dict(manifest.content_versions)),
        Meta.TRAINING_FINGERPRINT: manifest.training_fingerprint,
    }
    if trained is not None:
        metadata["train_roc_auc"] = trained.train_auc
        metadata[Meta.FIT_SECONDS] = trained.fit_seconds
        metadata[Meta.FIT_THREADS] = trained.threads
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(f"v{registered.version}"))
