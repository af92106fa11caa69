"""One model's definitions from its resolved spec: assets, checks and jobs."""

from __future__ import annotations

import dagster as dg

from mlops_assets.assets.common import ModelPipeline
from mlops_assets.assets.deployment import build_deployment_assets
from mlops_assets.assets.evaluation import build_evaluation_assets
from mlops_assets.assets.features import build_feature_assets
from mlops_assets.assets.ingestion import build_ingestion_assets
from mlops_assets.assets.training import build_training_assets
from mlops_assets.assets.validation import build_validation_assets
from mlops_assets.k8s import training_op_tags

BATCH_ASSETS = ("raw_batch", "validated_batch", "features", "predictions", "drift_report")
RETRAIN_ASSETS = ("training_dataset", "model", "evaluation", "promotion")


def build_pipeline(pipeline: ModelPipeline, *, on_kubernetes: bool) -> dg.Definitions:
    """Assets keyed ``[<name>, <noun>]`` in group ``<name>``, and the jobs that sensors and people launch.

    Args:
        pipeline: the spec with its columns resolved.
        on_kubernetes: whether steps run as pods (then the training step carries its GPU config).
    """
    name = pipeline.name
    assets = [
        *build_ingestion_assets(pipeline),
        *build_validation_assets(pipeline),
        *build_feature_assets(pipeline),
        *build_training_assets(pipeline, op_tags=training_op_tags(pipeline.spec.training, on_kubernetes=on_kubernetes)),
        *build_evaluation_assets(pipeline),
        *build_deployment_assets(pipeline),
    ]
    score_batch = dg.define_asset_job(
        f"{name}_score_batch_job",
        selection=dg.AssetSelection.assets(*(pipeline.key(a) for a in BATCH_ASSETS)),
        partitions_def=pipeline.partitions,
        tags=pipeline.tags,
        description=f"Validates, featurizes, scores and drift-checks one {name} batch.",
    )
    retrain = dg.define_asset_job(
        f"{name}_retrain_job",
        selection=dg.AssetSelection.assets(*(pipeline.key(a) for a in RETRAIN_ASSETS)),
        tags=pipeline.tags,
        description=f"Trains a {name} candidate on the training window, evaluates it and decides its promotion.",
    )
    return dg.Definitions(assets=assets, jobs=[score_batch, retrain])
