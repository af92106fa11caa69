"""Training: the window of labelled batches, and the model trained on it as an MLflow version."""

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from mlops_assets.assets.common import ModelPipeline, retry_on_tracking_outage, table
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
        key=pipeline.key("training_dataset"),
        group_name=pipeline.name,
        deps=[pipeline.key("features")],
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
        import pandas as pd

        from mlops_assets.ml.data import LABEL, batch_at_or_before, frame_fingerprint, holdout_mask, sorted_batches
        from mlops_assets.ml.lineage import training_fingerprint

        until = config.until or (None if spec.training.initial_until is None else str(spec.training.initial_until))
        registered = sorted_batches(context.instance.get_dynamic_partitions(pipeline.partitions.name))
        window = [b for b in registered if until is None or batch_at_or_before(b, until)]
        ready = [b for b in window if lake.exists(spec.name, "features", b)]
        missing = sorted(set(window) - set(ready))
        if missing:
            context.log.warning(
                "%s: batches %s have no features yet (not validated?); left out of the window", spec.name, missing
            )
        if not ready:
            raise dg.Failure(f"{spec.name}: no batch up to {until} has features; materialize features first")
        parts = {b: lake.read_frame(spec.name, "features", b) for b in ready}
        parts = {b: f for b, f in parts.items() if f[LABEL].notna().any()}
        fingerprints = {b: frame_fingerprint(f) for b, f in parts.items()}
        data = pd.concat([f.assign(__batch__=b, __row__=range(len(f))) for b, f in parts.items()], ignore_index=True)
        data = data[data[LABEL].notna()].reset_index(drop=True)
        if data[LABEL].nunique() < 2:
            raise dg.Failure(f"{spec.name}: the training window {list(parts)} holds a single label class")
        in_holdout = holdout_mask(
            data["__batch__"], data["__row__"], fraction=spec.training.holdout_fraction, seed=spec.training.seed
        )
        train, holdout = data[~in_holdout], data[in_holdout]
        for side, frame in (("training set", train), ("holdout", holdout)):
            if frame[LABEL].nunique() < 2:
                raise dg.Failure(f"{spec.name}: the {side} of window {list(parts)} holds a single label class")
        manifest = {
            "batches": list(parts),
            "fingerprints": fingerprints,
            "training_fingerprint": training_fingerprint(spec, fingerprints),
            "rows": {"train": len(train), "holdout": len(holdout)},
        }
        lake.write_frame(spec.name, "training_dataset", train.reset_index(drop=True), "train")
        lake.write_frame(spec.name, "training_dataset", holdout.reset_index(drop=True), "holdout")
        lake.write_json(spec.name, "training_dataset", manifest, "manifest")
        return dg.MaterializeResult(
            metadata={
                "window_until": until or "(all)",
                "batches": table(
                    [{"batch": b, "rows": len(parts[b]), "fingerprint": fingerprints[b]} for b in parts],
                    ["batch", "rows", "fingerprint"],
                ),
                "train_rows": len(train),
                "holdout_rows": len(holdout),
                "positive_rate": float(data[LABEL].mean()),
                "training_fingerprint": manifest["training_fingerprint"],
            },
            data_version=dg.DataVersion(manifest["training_fingerprint"]),
        )

    @dg.asset(
        key=pipeline.key("model"),
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
        from mlops_assets.ml.data import LABEL
        from mlops_assets.ml.drift import ReferenceProfile
        from mlops_assets.ml.lineage import code_version
        from mlops_assets.ml.trainers import build_estimator, effective_params, prepare_inputs
        from resources.registry import (
            CHALLENGER,
            TAG_BATCHES,
            TAG_CODE_VERSION,
            TAG_DAGSTER_RUN,
            TAG_FINGERPRINT,
        )

        manifest = lake.read_json(spec.name, "training_dataset", "manifest")
        fingerprint = manifest["training_fingerprint"]
        existing = registry.find_by_fingerprint(spec.name, fingerprint)
        if existing is not None:
            registry.set_alias(spec.name, CHALLENGER, existing.version)
            context.log.info(
                "%s: version %s was trained on the same data and code; reused", spec.name, existing.version
            )
            return _model_result(existing, reused=True, manifest=manifest)

        numeric, categorical = pipeline.columns.numeric, pipeline.columns.categorical
        train = lake.read_frame(spec.name, "training_dataset", "train")
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
        tags = {
            TAG_FINGERPRINT: fingerprint,
            TAG_DAGSTER_RUN: context.run_id,
            TAG_CODE_VERSION: code_version(),
            TAG_BATCHES: ",".join(manifest["batches"]),
        }
        # The MLflow run exists before training, so a torch model's curve fills in while it trains.
        run_id = registry.open_training_run(experiment=spec.name, tags=tags)
        if spec.training.model == "torch_mlp":
            _fit_torch(
                context, estimator, inputs, y, lake=lake, registry=registry, run_id=run_id, fingerprint=fingerprint
            )
        else:
            estimator.fit(inputs, y)

        from sklearn.metrics import roc_auc_score

        train_auc = float(roc_auc_score(y, estimator.predict_proba(inputs)[:, 1]))
        profile = ReferenceProfile.build(
            train, numerical=numeric, categorical=[*categorical, *spec.sensitive_features], seed=spec.training.seed
        )
        suite = lake.read_bytes(spec.name, "validation_suite", ext="json")
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
                "reference_profile.bin": profile.to_bytes(),
                "validation_suite.json": suite,
                "training_manifest.json": lake.read_bytes(spec.name, "training_dataset", "manifest", "json"),
            },
            run_id=run_id,
        )
        registry.set_alias(spec.name, CHALLENGER, registered.version)
        return _model_result(registered, reused=False, manifest=manifest, train_auc=train_auc)

    return [training_dataset, model]


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
        if lake.exists(name, "checkpoints", fingerprint, "pt"):
            checkpoint.write_bytes(lake.read_bytes(name, "checkpoints", fingerprint, "pt"))
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
            lake.write_bytes(name, "checkpoints", checkpoint.read_bytes(), fingerprint, "pt")

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


def _model_result(
    registered: "RegisteredModel", *, reused: bool, manifest: dict, train_auc: float | None = None
) -> dg.MaterializeResult:
    metadata: dict[str, object] = {
        "version": registered.version,
        "model_uri": registered.uri,
        "mlflow_run_id": registered.run_id,
        "reused_existing_version": reused,
        "training_batches": dg.MetadataValue.json(manifest["batches"]),
        "training_fingerprint": manifest["training_fingerprint"],
    }
    if train_auc is not None:
        metadata["train_roc_auc"] = train_auc
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(f"v{registered.version}"))
