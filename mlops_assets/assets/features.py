"""Features: a validated batch in the model's input form, with its binary label."""

from typing import TYPE_CHECKING

import dagster as dg

from mlops_assets.assets.common import ModelPipeline, frame_schema
from mlops_assets.contract import Asset, Meta
from resources.lake import Lake

if TYPE_CHECKING:
    import pandas as pd


def build_feature_assets(pipeline: ModelPipeline) -> list[dg.AssetsDefinition]:
    spec = pipeline.spec
    label = spec.label
    rule = f">= {label.threshold:g}" if label.threshold is not None else f"== {label.positive_value!r}"

    @dg.asset(
        key=pipeline.key(Asset.FEATURES),
        group_name=pipeline.name,
        partitions_def=pipeline.partitions,
        deps=[pipeline.key(Asset.VALIDATED_BATCH)],
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
        batch = pipeline.batch(context)
        validated = lake.read_frame(spec.name, Asset.VALIDATED_BATCH, batch)
        frame, labelled, dropped = model_inputs(pipeline, validated)
        lake.write_frame(spec.name, Asset.FEATURES, frame, batch)
        return features_result(frame, labelled=labelled, dropped=dropped)

    return [features]


def model_inputs(pipeline: ModelPipeline, validated: "pd.DataFrame") -> "tuple[pd.DataFrame, bool, int]":
    """The batch as model input with its label; whether it is labelled, and the rows dropped
    for a missing label."""
    import numpy as np

    from mlops_assets.ml.data import LABEL, binarize_label
    from mlops_assets.ml.trainers import prepare_inputs

    spec = pipeline.spec
    frame = prepare_inputs(validated, pipeline.columns.numeric, pipeline.columns.categorical)
    for column in spec.sensitive_features:
        frame[column] = validated[column].astype(str).where(validated[column].notna(), "missing")
    labelled = spec.label.column in validated.columns
    frame[LABEL] = binarize_label(spec, validated) if labelled else np.nan
    dropped = int(frame[LABEL].isna().sum()) if labelled else 0
    if labelled:
        frame = frame[frame[LABEL].notna()].reset_index(drop=True)
    return frame, labelled, dropped


def features_result(frame: "pd.DataFrame", *, labelled: bool, dropped: int) -> dg.MaterializeResult:
    from mlops_assets.ml.data import LABEL, frame_fingerprint

    fingerprint = frame_fingerprint(frame)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "dagster/column_schema": frame_schema(frame),
            "labelled": labelled,
            "rows_without_label_dropped": dropped,
            "positive_rate": float(frame[LABEL].mean()) if labelled and len(frame) else 0.0,
            Meta.FINGERPRINT: fingerprint,
        },
        data_version=dg.DataVersion(fingerprint),
    )
