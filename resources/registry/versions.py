"""Reads of registered versions: by alias, by number, by training fingerprint."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlops_assets import contract

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

# Errors MLflow answers for a name, version or alias that does not exist (the SQL store and the
# REST server do not agree on which).
_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


@dataclass(frozen=True)
class RegisteredModel:
    """One registered version and where it came from."""

    name: str
    version: str
    run_id: str
    model_id: str | None
    family: str
    tags: dict[str, str]
    created_at: _dt.datetime | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def artifact_digest(self) -> str | None:
        """The digest of the model's files recorded when it was registered; None for a version
        registered before digests existed."""
        return self.tags.get(contract.MlflowTag.ARTIFACT_DIGEST) or None


def from_mlflow(mv: ModelVersion) -> RegisteredModel:
    tags = dict(mv.tags or {})
    # MLflow 3 registers LoggedModels: the source is models:/<model_id>.
    logged = mv.source[len("models:/") :] if mv.source and mv.source.startswith("models:/m-") else None
    created = _dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, _dt.UTC) if mv.creation_timestamp else None
    return RegisteredModel(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id,
        model_id=getattr(mv, "model_id", None) or logged,
        family=tags.get(contract.MlflowTag.MODEL_FAMILY, "sklearn"),
        tags=tags,
        created_at=created,
    )


def is_registered(client: MlflowClient, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def by_alias(client: MlflowClient, name: str, alias: str) -> RegisteredModel | None:
    from mlflow.exceptions import MlflowException

    try:
        return from_mlflow(client.get_model_version_by_alias(name, alias))
    except MlflowException as e:
        if e.error_code in _MISSING:
            return None
        raise


def get(client: MlflowClient, name: str, version: str) -> RegisteredModel:
    from mlflow.exceptions import MlflowException

    try:
        return from_mlflow(client.get_model_version(name, version))
    except MlflowException as e:
        if e.error_code in _MISSING:
            raise LookupError(f"{name}: no registered version {version!r}") from e
        raise


def all_versions(client: MlflowClient, name: str) -> list[RegisteredModel]:
    if not is_registered(client, name):
        return []
    found = client.search_model_versions(f"name = '{name}'")
    return sorted((from_mlflow(mv) for mv in found), key=lambda m: int(m.version))


def oldest_with_fingerprint(client: MlflowClient, name: str, fingerprint: str) -> RegisteredModel | None:
    if not is_registered(client, name):
        return None
    tag = contract.MlflowTag.TRAINING_FINGERPRINT
    found = client.search_model_versions(f"name = '{name}' and tags.`{tag}` = '{fingerprint}'")
    return from_mlflow(min(found, key=lambda mv: int(mv.version))) if found else None


def complete_registration(client: MlflowClient, model: RegisteredModel) -> None:
    """Closes the MLflow run of a version whose training died right after registering it (the
    version is created with all its tags in one write, so it is complete; its run is not)."""
    run = client.get_run(model.run_id)
    if run.info.status == "RUNNING" and contract.MlflowTag.REGISTERED_VERSION not in run.data.tags:
        client.set_tag(model.run_id, contract.MlflowTag.REGISTERED_VERSION, model.version)
        client.set_terminated(model.run_id, "FINISHED")
