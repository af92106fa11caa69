"""Deployment: batch scoring by the champion, and the drift of each batch against its training data."""

import dagster as dg

from mlops_assets.assets.common import ModelPipeline, retry_on_tracking_outage, table
from resources.lake import Lake
from resources.registry import MlflowRegistry

DRIFT_CHECK = "drift_within_tolerance"
FAIRNESS_CHECKS = {
    # check name -> (gap, spec limit attribute)
    "parity_gap_within_limit": ("demographic_parity_difference", "max_demographic_parity_difference"),
    "equalized_odds_within_limit": ("equalized_odds_difference", "max_equalized_odds_difference"),
}


def drift_columns(pipeline: ModelPipeline) -> list[str]:
    """The columns whose drift is watched: model inputs and sensitive features."""
    return [*pipeline.columns.numeric, *pipeline.columns.categorical, *pipeline.spec.sensitive_features]


def fairness_checks(pipeline: ModelPipeline) -> dict[str, tuple[str, float]]:
    """The production fairness checks the spec asks for: name -> (gap, limit)."""
    if not pipeline.spec.sensitive_features:
        return {}
    limits = {name: (gap, getattr(pipeline.spec.gates, attr)) for name, (gap, attr) in FAIRNESS_CHECKS.items()}
    return {name: (gap, limit) for name, (gap, limit) in limits.items() if limit is not None}


def build_deployment_assets(pipeline: ModelPipeline) -> list[dg.AssetsDefinition]:
    spec = pipeline.spec
    sensitive = spec.sensitive_features
    fairness = fairness_checks(pipeline)

    @dg.asset(
        key=pipeline.key("predictions"),
        group_name=pipeline.name,
        partitions_def=pipeline.partitions,
        deps=[pipeline.key("features"), pipeline.key("promotion")],
        check_specs=[
            dg.AssetCheckSpec(
                name,
                asset=pipeline.key("predictions"),
                description=f"On labelled batches, the champion's {gap.replace('_', ' ')} across "
                f"{', '.join(sensitive)} stays within {limit:g} (bias drift in production).",
            )
            for name, (gap, limit) in fairness.items()
        ],
        kinds={"mlflow", "parquet"},
        description=(
            "A batch scored by the model version that is champion when the run starts; the "
            "version is stored in every row and in the metadata.\n\n"
            "On labelled batches the metadata adds ROC AUC and the fairness of the champion's "
            "predictions in production, checked against the spec's fairness limits."
        ),
    )
    @retry_on_tracking_outage
    def predictions(context: dg.AssetExecutionContext, lake: Lake, registry: MlflowRegistry):  # noqa: ANN202 - events
        import numpy as np
        import pandas as pd

        from mlops_assets.ml.data import LABEL
        from mlops_assets.ml.evaluation import DECISION_THRESHOLD, evaluate
        from mlops_assets.ml.scoring import positive_scores
        from mlops_assets.ml.trainers import prepare_inputs
        from resources.registry import CHAMPION

        batch = context.partition_key
        champion = registry.by_alias(spec.name, CHAMPION)
        if champion is None:
            raise dg.Failure(
                f"{spec.name}: no version is champion yet, so batch {batch} cannot be scored; "
                "materialize training_dataset, model, evaluation and promotion (see the promotion "
                "asset's reasons if a candidate was rejected)"
            )
        frame = lake.read_frame(spec.name, "features", batch)
        model = registry.load_model(champion)
        scores = positive_scores(model, prepare_inputs(frame, pipeline.columns.numeric, pipeline.columns.categorical))
        out = pd.DataFrame(
            {
                "row": np.arange(len(frame)),
                "score": scores,
                "prediction": (scores >= DECISION_THRESHOLD).astype("int8"),
                "label": frame[LABEL],
                **{c: frame[c] for c in sensitive},
                "model_version": champion.version,
            }
        )
        metadata: dict[str, object] = {
            "model_version": champion.version,
            "model_uri": champion.uri,
            "dagster/row_count": len(out),
            "predicted_positive_rate": float(out["prediction"].mean()) if len(out) else 0.0,
        }
        labelled = out["label"].notna()
        result = None
        if labelled.any():
            result = evaluate(
                out.loc[labelled, "label"].to_numpy(), scores[labelled.to_numpy()], out.loc[labelled, sensitive]
            )
            metadata.update({f"{k}": v for k, v in result.metrics.items() if v is not None})
            for gap in ("demographic_parity_difference", "equalized_odds_difference"):
                if result.worst(gap) is not None:
                    metadata[gap] = result.worst(gap)
        lake.write_frame(spec.name, "predictions", out, batch)
        if result is not None:
            lake.write_json(
                spec.name, "production_evaluation", {**result.to_dict(), "model_version": champion.version}, batch
            )
        context.log.info("%s batch %s scored by version %s", spec.name, batch, champion.version)
        yield dg.MaterializeResult(metadata=metadata)
        for name, (gap, limit) in fairness.items():
            value = result.worst(gap) if result is not None else None
            yield dg.AssetCheckResult(
                check_name=name,
                passed=value is None or value <= limit,
                severity=dg.AssetCheckSeverity.WARN,
                description=(
                    f"batch {batch}: no labelled rows with both classes, not evaluated"
                    if value is None
                    else f"batch {batch}: {gap} {value:.3f} {'within' if value <= limit else 'exceeds'} "
                    f"limit {limit:g} (champion version {champion.version})"
                ),
                metadata={
                    "batch": batch,
                    "gap": value if value is not None else -1.0,
                    "limit": limit,
                    "model_version": champion.version,
                },
            )

    columns = drift_columns(pipeline)
    check_specs = [
        dg.AssetCheckSpec(
            DRIFT_CHECK,
            asset=pipeline.key("drift_report"),
            description=(
                f"Fewer than {spec.drift.drift_share:.0%} of the watched columns drifted (Evidently's dataset drift)."
            ),
        ),
        *(
            dg.AssetCheckSpec(
                f"{column}_no_drift",
                asset=pipeline.key("drift_report"),
                description=f"Column {column} did not drift from the champion's training data.",
            )
            for column in columns
        ),
    ]

    @dg.asset(
        key=pipeline.key("drift_report"),
        group_name=pipeline.name,
        partitions_def=pipeline.partitions,
        deps=[pipeline.key("predictions")],
        check_specs=check_specs,
        kinds={"evidently"},
        description=(
            "How far a batch drifted from the training data of the model that scored it.\n\n"
            "Per-column drift scores come from the reference profile saved with the model "
            "(Evidently's default methods and thresholds, or the spec's); the drifted share is "
            f"check `{DRIFT_CHECK}`. An Evidently HTML report of the same comparison is stored "
            "beside it and linked here."
        ),
    )
    @retry_on_tracking_outage
    def drift_report(context: dg.AssetExecutionContext, lake: Lake, registry: MlflowRegistry):  # noqa: ANN202 - events
        import tempfile
        from pathlib import Path

        from mlops_assets.ml.drift import DriftPolicy, ReferenceProfile, detect_drift, render_evidently_report

        batch = context.partition_key
        scored_by = str(lake.read_frame(spec.name, "predictions", batch)["model_version"].iloc[0])
        version = registry.get(spec.name, scored_by)
        profile = ReferenceProfile.from_bytes(registry.run_artifact(version.run_id, "mlops/reference_profile.bin"))
        current = lake.read_frame(spec.name, "features", batch)
        policy = DriftPolicy(**spec.drift.model_dump())
        result = detect_drift(profile, current, policy)
        with tempfile.TemporaryDirectory() as tmp:
            html = Path(tmp) / "drift.html"
            render_evidently_report(profile, current, policy, str(html))
            report_path = lake.write_bytes(spec.name, "drift_report", html.read_bytes(), batch, "html")
        summary = {
            "batch": batch,
            "model_version": scored_by,
            "drifted_share": result.drifted_share,
            "dataset_drift": result.dataset_drift,
            "columns": [c.__dict__ for c in result.columns],
        }
        lake.write_json(spec.name, "drift_report", summary, batch)
        by_column = {c.column: c for c in result.columns}
        rows = [
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
        yield dg.AssetCheckResult(
            check_name=DRIFT_CHECK,
            passed=not result.dataset_drift,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                f"batch {batch}: {result.drifted_share:.0%} of columns drifted "
                f"(limit {spec.drift.drift_share:.0%}) against version {scored_by}'s training data"
            ),
            metadata={
                "drifted_share": result.drifted_share,
                "drift_share_limit": spec.drift.drift_share,
                "drifted_columns": dg.MetadataValue.json([c.column for c in result.columns if c.drifted]),
                "columns": table(rows, ["column", "method", "score", "threshold", "drifted", "note"]),
                "batch": batch,
            },
        )
        for column in columns:
            c = by_column[column]
            yield dg.AssetCheckResult(
                check_name=f"{column}_no_drift",
                passed=not c.drifted,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"{c.method_label} {c.score:.4g} (threshold {c.threshold:g})"
                + (f"; {c.note}" if c.note else ""),
                metadata={"batch": batch, "score": c.score, "threshold": c.threshold, "method": c.method},
            )
        yield dg.MaterializeResult(
            metadata={
                "model_version": scored_by,
                "drifted_share": result.drifted_share,
                "dataset_drift": result.dataset_drift,
                "report": dg.MetadataValue.path(report_path),
                "columns": table(rows, ["column", "method", "score", "threshold", "drifted", "note"]),
            }
        )

    return [predictions, drift_report]
