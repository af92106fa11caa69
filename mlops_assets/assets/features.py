"""Features: a validated batch in the model's input form, with its binary label."""

from typing import TYPE_CHECKING

import dagster as dg

from mlops_assets.assets.common import BatchEvents, BatchRun, ModelPipeline, frame_schema
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
            "Every row is kept, so every row is scored: a row whose label is missing (all of "
            "them in served traffic, or in a batch without the label column) has a null `label` "
            "and is counted; training and the production metrics use the labelled rows only. "
            "Only row-wise, stateless "
            "transformations happen here: everything fitted (imputation, encoding, scaling) is "
            "fitted on training data inside the model and saved with it, so scoring applies "
            "exactly the training-time transformations."
        ),
    )
    def features(context: dg.AssetExecutionContext, lake: Lake) -> BatchEvents:
        yield from features_work(pipeline, BatchRun.of(pipeline, context), lake=lake)

    return [features]


def features_work(pipeline: ModelPipeline, run: BatchRun, *, lake: Lake) -> BatchEvents:
    name, batch = pipeline.name, run.batch
    validated = lake.read_frame(name, Asset.VALIDATED_BATCH, batch)
    tags = lake.frame_tags(name, Asset.VALIDATED_BATCH, batch)
    frame, labelled = model_inputs(pipeline, validated)
    # The raw content version goes on with the rows: training records it as the model's lineage.
    lake.write_frame(name, Asset.FEATURES, frame, batch, tags=tags)
    yield features_result(frame, labelled=labelled, content_version=tags.get(Meta.CONTENT_VERSION, ""))


def model_inputs(pipeline: ModelPipeline, validated: "pd.DataFrame") -> "tuple[pd.DataFrame, bool]":
    """Every row of the batch as model input with its label (null where the row has none), and
    whether the batch has the label column."""
    import numpy as np

    from mlops_assets.ml.data import LABEL, binarize_label
    from mlops_assets.ml.trainers import prepare_inputs

    spec = pipeline.spec
    frame = prepare_inputs(validated, pipeline.columns.numeric, pipeline.columns.categorical)
    for column in spec.sensitive_features:
        frame[column] = validated[column].astype(str).where(validated[column].notna(), "missing")
    labelled = spec.label.column in validated.columns
    frame[LABEL] = binarize_label(spec, validated) if labelled else np.nan
    return frame, labelled


def features_result(frame: "pd.DataFrame", *, labelled: bool, content_version: str = "") -> dg.MaterializeResult:
    from mlops_assets.ml.data import LABEL, frame_fingerprint

    fingerprint = frame_fingerprint(frame)
    with_label = frame[LABEL].notna()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "dagster/column_schema": frame_schema(frame),
            "labelled": labelled,
            Meta.LABELLED_ROWS: int(with_label.sum()),
            "rows_without_label": int((~with_label).sum()),
            "positive_rate": float(frame.loc[with_label, LABEL].mean()) if with_label.any() else 0.0,
            Meta.FINGERPRINT: fingerprint,
            Meta.CONTENT_VERSION: content_version,
        },
        data_version=dg.DataVersion(fingerprint),
    )
