"""The MLflow tracking store and model registry, behind one small resource.

An explicit ``MlflowClient`` per call site, never mlflow's module-level proxying of everything
(dagster-mlflow's approach). Aliases ``champion`` and ``challenger``, never the deprecated stages.
"""

from __future__ import annotations

import datetime as _dt
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
CHALLENGER = "challenger"

TAG_FINGERPRINT = "mlops.training_fingerprint"
TAG_DAGSTER_RUN = "mlops.dagster_run_id"
TAG_CODE_VERSION = "mlops.code_version"
TAG_BATCHES = "mlops.training_batches"
TAG_FAMILY = "mlops.model_family"
TAG_PROMOTED = "mlops.promoted"
TAG_LAST_CHAMPION_MOVE = "mlops.champion_history"


class PromotionConflict(RuntimeError):
    """The champion moved between the decision and the promotion."""


@dataclass(frozen=True)
class RegisteredModel:
    """One registered version and where it came from."""

    name: str
    version: str
    run_id: str
    model_id: str | None
    family: str
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


class MlflowRegistry(dg.ConfigurableResource):
    """Experiment tracking and the model registry on one MLflow store."""

    tracking_uri: str = Field(description="sqlite:///... locally; http(s)://... for a tracking server.")
    artifact_root: str = Field(
        description="Where new experiments keep artifacts (a folder or fsspec URI); "
        "with a tracking server, leave it to the server by setting it to ''."
    )

    def client(self) -> MlflowClient:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        client = self.client()
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = f"{self.artifact_root.rstrip('/')}/{name}" if self.artifact_root else None
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

    def _version(self, mv: ModelVersion) -> RegisteredModel:
        tags = dict(mv.tags or {})
        return RegisteredModel(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id,
            model_id=getattr(mv, "model_id", None),
            family=tags.get(TAG_FAMILY, "sklearn"),
            tags=tags,
        )

    def find_by_fingerprint(self, name: str, fingerprint: str) -> RegisteredModel | None:
        """The oldest version trained on exactly this data, code and spec, if any."""
        client = self.client()
        if not self._registered(client, name):
            return None
        found = client.search_model_versions(f"name = '{name}' and tags.`{TAG_FINGERPRINT}` = '{fingerprint}'")
        return self._version(min(found, key=lambda mv: int(mv.version))) if found else None

    def _registered(self, client: MlflowClient, name: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            client.get_registered_model(name)
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return True

    def by_alias(self, name: str, alias: str) -> RegisteredModel | None:
        from mlflow.exceptions import MlflowException

        client = self.client()
        try:
            return self._version(client.get_model_version_by_alias(name, alias))
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def get(self, name: str, version: str) -> RegisteredModel:
        return self._version(self.client().get_model_version(name, version))

    def log_and_register(
        self,
        *,
        name: str,
        experiment: str,
        model: Any,
        family: str,
        params: dict[str, Any],
        metrics: dict[str, float],
        train_inputs: pd.DataFrame,
        training_frame: pd.DataFrame,
        label_column: str,
        tags: dict[str, str],
        extra_artifacts: dict[str, bytes],
    ) -> RegisteredModel:
        """One MLflow run: params, metrics, the training data as a dataset input, the model with
        its signature, extra artifacts; then a registered version carrying ``tags``."""
        import mlflow
        from mlflow.models import infer_signature

        from mlops_assets.ml.trainers import SKOPS_TRUSTED_TYPES

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        example = train_inputs.head(5)
        signature = infer_signature(example, model.predict_proba(example)[:, 1])
        with mlflow.start_run(experiment_id=self.experiment_id(experiment), tags=tags) as run:
            mlflow.log_params({k: str(v) for k, v in params.items()})
            mlflow.log_metrics({k: v for k, v in metrics.items() if v is not None})
            mlflow.log_input(
                mlflow.data.from_pandas(training_frame, name=f"{name}_training", targets=label_column),
                context="training",
            )
            with tempfile.TemporaryDirectory() as tmp:
                for filename, data in extra_artifacts.items():
                    (Path(tmp) / filename).write_bytes(data)
                mlflow.log_artifacts(tmp, artifact_path="mlops")
            if family == "torch_mlp":
                info = self._log_torch(model, signature, example)
            else:
                info = mlflow.sklearn.log_model(
                    model,
                    name="model",
                    serialization_format="skops",
                    skops_trusted_types=SKOPS_TRUSTED_TYPES,
                    signature=signature,
                    input_example=example,
                )
            mv = mlflow.register_model(info.model_uri, name, tags={**tags, TAG_FAMILY: family})
            self.client().set_tag(run.info.run_id, "mlops.registered_version", str(mv.version))
        return self._version(self.client().get_model_version(name, str(mv.version)))

    def _log_torch(self, model: Any, signature: Any, example: pd.DataFrame) -> Any:
        import mlflow

        code = Path(__file__).parent.parent / "mlops_assets" / "ml" / "torch_pyfunc.py"
        with tempfile.TemporaryDirectory() as tmp:
            model.save(tmp)
            return mlflow.pyfunc.log_model(
                name="model",
                python_model=str(code),
                artifacts={"torch_model": tmp},
                signature=signature,
                input_example=example,
            )

    def load_model(self, model: RegisteredModel) -> Any:
        """The fitted estimator of a registered version, loaded without executing stored code.

        scikit-learn models load through skops with our allow-list (not the list stored in the
        artifact's MLmodel file, which whoever wrote the artifact controls); torch models as a
        state_dict with ``weights_only=True``.
        """
        import mlflow

        from mlops_assets.ml.trainers import SKOPS_TRUSTED_TYPES

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{model.name}/{model.version}", dst_path=tmp, tracking_uri=self.tracking_uri
                )
            )
            if model.family == "torch_mlp":
                from mlops_assets.ml.torch_mlp import TorchMLPClassifier

                return TorchMLPClassifier.load(str(local / "artifacts" / "torch_model"))
            import skops.io as sio

            return sio.load(local / "model.skops", trusted=SKOPS_TRUSTED_TYPES)

    def run_artifact(self, run_id: str, path: str) -> bytes:
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=tmp, tracking_uri=self.tracking_uri
            )
            return Path(local).read_bytes()

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client().set_registered_model_alias(name, alias, version)

    def promote(self, *, name: str, version: str, expected_champion: str | None, record: dict[str, Any]) -> None:
        """Moves ``champion`` to ``version`` only if it still points at ``expected_champion``.

        The move is recorded as tags on the new champion (and appended to the registered model's
        history tag), so who was champion when survives in MLflow itself.

        Raises:
            PromotionConflict: the champion moved since the decision was made.
        """
        client = self.client()
        current = self.by_alias(name, CHAMPION)
        current_version = current.version if current else None
        if current_version != expected_champion:
            mover = current.tags.get(TAG_DAGSTER_RUN, "unknown") if current else "unknown"
            raise PromotionConflict(
                f"{name}: champion is version {current_version}, not {expected_champion} as when the "
                f"decision was made (moved by run {mover}); re-run the evaluation"
            )
        when = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        entry = {"at": when, "from": expected_champion, "to": version, **record}
        client.set_registered_model_alias(name, CHAMPION, version)
        client.set_model_version_tag(name, version, TAG_PROMOTED, json.dumps(entry, default=str))
        history = client.get_registered_model(name).tags.get(TAG_LAST_CHAMPION_MOVE)
        moves = json.loads(history) if history else []
        moves.append({"at": when, "from": expected_champion, "to": version})
        # MLflow caps tag values (5000 chars in SQL stores); keep the most recent moves here, the
        # full record lives in the promotion asset's materializations.
        client.set_registered_model_tag(name, TAG_LAST_CHAMPION_MOVE, json.dumps(moves[-40:]))
