"""Features: a validated batch in the model's input form, with its binary label."""

import dagster as dg

from mlops_assets.assets.common import ModelPipeline, frame_schema
from resources.lake import Lake


def build_feature_assets(pipeline: ModelPipeline) -> list[dg.AssetsDefinition]:
    spec = pipeline.spec
    label = spec.label
    rule = f">= {label.threshold:g}" if label.threshold is not None else f"== {label.positive_value!r}"

    @dg.asset(
        key=pipeline.key("features"),
        group_name=pipeline.name,
        partitions_def=pipeline.partitions,
        deps=[pipeline.key("validated_batch")],
        kinds={"pandas", "parquet"},
        description=(
            f"A batch as model input: the feature columns typed for the model, the sensitive "
            f"columns kept for fairness (not model inputs), and `label` = `{label.column}` {rule}.\n\n"
            "Rows whose label is missing are dropped and counted; a batch without the label "
            "column keeps every row, unlabelled, for scoring. Only row-wise, stateless "
            "transformations happen here: everything fitted (imputation, encoding, scaling) is "
            "fitted on training data inside the model and saved with it, so scoring applies "
            "exactly the training-time transformations."
        ),
    )
    def features(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
        import numpy as np

        from mlops_assets.ml.data import LABEL, binarize_label, frame_fingerprint
        from mlops_assets.ml.trainers import prepare_inputs

        batch = context.partition_key
        validated = lake.read_frame(spec.name, "validated_batch", batch)
        frame = prepare_inputs(validated, pipeline.columns.numeric, pipeline.columns.categorical)
        for column in spec.sensitive_features:
            frame[column] = validated[column].astype(str).where(validated[column].notna(), "missing")
        labelled = label.column in validated.columns
        frame[LABEL] = binarize_label(spec, validated) if labelled else np.nan
        dropped = int(frame[LABEL].isna().sum()) if labelled else 0
        if labelled:
            frame = frame[frame[LABEL].notna()].reset_index(drop=True)
        fingerprint = frame_fingerprint(frame)
        lake.write_frame(spec.name, "features", frame, batch)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(frame),
                "dagster/column_schema": frame_schema(frame),
                "labelled": labelled,
                "rows_without_label_dropped": dropped,
                "positive_rate": float(frame[LABEL].mean()) if labelled and len(frame) else 0.0,
                "fingerprint": fingerprint,
            },
            data_version=dg.DataVersion(fingerprint),
        )

    return [features]
