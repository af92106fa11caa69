"""Experiment tracking: runs, params, metrics, artifacts, and the registration of a trained model."""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_assets import contract
from resources.registry.loading import import_skops_io, read_tree, tree_digest

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.models.model import ModelInfo

_TORCH_PYFUNC = Path(__file__).resolve().parent.parent / "torch_pyfunc.py"

# What loading and scoring a version needs, by family. Named instead of MLflow's inference, which
# imports the model in a subprocess (3.7 s of a 5 s model step on two cores, measured with
# cProfile) and recorded whatever the product's modules had imported (pytest, rich, tqdm, and
# torch for an HGB model).
_MODEL_PACKAGES = {
    "torch_mlp": ("mlflow", "numpy", "pandas", "scikit-learn", "torch"),
    "default": ("mlflow", "numpy", "pandas", "scikit-learn", "scipy", "skops"),
}


def pinned_requirements(family: str) -> list[str]:
    """The packages a version of ``family`` needs, pinned to the versions it was trained with
    (a local version label such as torch's ``+cpu`` left out, as MLflow does: pip cannot find it)."""
    from importlib.metadata import version

    packages = _MODEL_PACKAGES.get(family, _MODEL_PACKAGES["default"])
    return [f"{package}=={version(package).split('+', 1)[0]}" for package in packages]


def experiment_id(client: MlflowClient, name: str, *, artifact_root: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else None
    if location and "://" not in location:
        location = Path(location).absolute().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Another process may have created it between our read and our create.
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def open_training_run(client: MlflowClient, experiment: str, tags: dict[str, str]) -> str:
    """An unfinished run of the same Dagster run on the same data, else a new run (see the resource)."""
    keys = (contract.MlflowTag.DAGSTER_RUN_ID, contract.MlflowTag.TRAINING_FINGERPRINT)
    same_attempts = " and ".join(f"tags.`{key}` = '{tags[key]}'" for key in keys)
    unfinished = client.search_runs(
        [experiment], filter_string=f"{same_attempts} and attributes.status = 'RUNNING'", max_results=1
    )
    if unfinished:
        return unfinished[0].info.run_id
    return client.create_run(experiment, tags=tags).info.run_id


def log_metrics(client: MlflowClient, run_id: str, metrics: list[tuple[str, float, int]]) -> None:
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, value, stamp, step) for key, value, step in metrics])


def log_and_register(
    client: MlflowClient,
    *,
    tracking_uri: str,
    experiment_id: str | None,
    run_id: str | None,
    name: str,
    model: Any,
    family: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    train_inputs: pd.DataFrame,
    training_frame: pd.DataFrame,
    label_column: str,
    tags: dict[str, str],
    extra_artifacts: dict[str, bytes],
) -> str:
    """Logs one training to its run and registers the model; returns the new version's number.

    The version is created with all its tags in one write (the training fingerprint, the family,
    the digest of the model files as the store holds them), so a version that exists is complete.
    """
    import mlflow
    from mlflow.models import infer_signature

    from mlops_assets.ml.trainers import SKOPS_TRUSTED_TYPES

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    example = train_inputs.head(5)
    signature = infer_signature(example, model.predict_proba(example)[:, 1])
    started = mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run(experiment_id=experiment_id, tags=tags)
    with started as run:
        mlflow.log_params({k: str(v) for k, v in params.items()})
        mlflow.log_metrics({k: v for k, v in metrics.items() if v is not None})
        with warnings.catch_warnings():
            # The dataset's schema is a record of the training data, never enforced on input,
            # so MLflow's hint about integer columns and missing values does not apply to it.
            warnings.filterwarnings("ignore", message=r"[\s\S]*Inferred schema contains integer column")
            dataset = mlflow.data.from_pandas(training_frame, name=f"{name}_training", targets=label_column)
            mlflow.log_input(dataset, context="training")  # infers the schema here, lazily
        with tempfile.TemporaryDirectory() as tmp:
            for filename, data in extra_artifacts.items():
                (Path(tmp) / filename).write_bytes(data)
            mlflow.log_artifacts(tmp, artifact_path=contract.ARTIFACT_DIR)
        if family == "torch_mlp":
            info = _log_torch(model, signature, example)
        else:
            # MLflow imports skops.io to save; first imported here, it would list every
            # scikit-learn estimator and import torch (1.5 s of the model step in a run worker).
            import_skops_io()
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                serialization_format="skops",
                skops_trusted_types=SKOPS_TRUSTED_TYPES,
                signature=signature,
                input_example=example,
                pip_requirements=pinned_requirements(family),
            )
        digest = stored_digest(client, info, tracking_uri=tracking_uri)
        version_tags = {**tags, contract.MlflowTag.MODEL_FAMILY: family, contract.MlflowTag.ARTIFACT_DIGEST: digest}
        mv = mlflow.register_model(info.model_uri, name, tags=version_tags)
        client.set_tag(run.info.run_id, contract.MlflowTag.REGISTERED_VERSION, str(mv.version))
    return str(mv.version)


def stored_digest(client: MlflowClient, info: ModelInfo, *, tracking_uri: str) -> str:
    """The digest of a logged model's files as the artifact store holds them (read back, not the
    local copy MLflow uploaded: what is checked later is what the store serves)."""
    import mlflow

    location = client.get_logged_model(info.model_id).artifact_location
    with tempfile.TemporaryDirectory(prefix="mlops-digest-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp, tracking_uri=tracking_uri)
        return tree_digest(read_tree(Path(local)))


def download_version(client: MlflowClient, name: str, version: str, destination: Path, *, tracking_uri: str) -> Path:
    """Downloads a version's model folder into ``destination``; returns the folder."""
    import mlflow

    # Resolved through our client: a models:/ URI would go through mlflow's process-global
    # registry URI, which a fresh run worker has never set.
    location = client.get_model_version_download_uri(name, version)
    return Path(
        mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(destination), tracking_uri=tracking_uri)
    )


def _log_torch(model: Any, signature: Any, example: pd.DataFrame) -> ModelInfo:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        # MLflow keeps the folder's own name under artifacts/; the loader expects torch_model.
        folder = Path(tmp) / "torch_model"
        model.save(str(folder))
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(_TORCH_PYFUNC),
            artifacts={"torch_model": str(folder)},
            signature=signature,
            input_example=example,
            pip_requirements=pinned_requirements("torch_mlp"),
        )


def run_artifact(run_id: str, path: str, *, tracking_uri: str) -> bytes:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=path, dst_path=tmp, tracking_uri=tracking_uri
        )
        return Path(local).read_bytes()


def model_signature(client: MlflowClient, name: str, version: str, *, tracking_uri: str) -> dict[str, Any] | None:
    import mlflow
    import yaml

    location = client.get_model_version_download_uri(name, version)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{location.rstrip('/')}/MLmodel", dst_path=tmp, tracking_uri=tracking_uri
        )
        document = yaml.safe_load(Path(local).read_text()) or {}
    signature = document.get("signature")
    if not signature or not signature.get("inputs"):
        return None
    return {k: json.loads(v) if isinstance(v, str) else v for k, v in signature.items() if v}
