"""The MLflow tracking store and model registry, behind one small resource.

An explicit ``MlflowClient`` per call site, never mlflow's module-level proxying of everything
(dagster-mlflow's approach). Aliases ``champion`` and ``challenger``, never the deprecated stages.

Governance lives here because MLflow has no compare-and-set and no alias history:

- ``champion`` moves only through ``promote`` and ``rollback``, which share one compare-and-set
  under a lock (``_registry_lock``): a file lock beside a SQLite or file store, a PostgreSQL
  advisory lock when a lock URI is configured, and otherwise (a tracking server without a lock
  URI) a re-read after the write that detects a lost race and raises.
- Every move is a registered-model tag ``mlops.champion_move.<time>-<id>`` holding from, to,
  when, why, which run and the decision's numbers, so ``champion_history`` and ``champion_at``
  are one read of the registered model.
- Models load only from the registry and never by unpickling (``load_model``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import hashlib
import json
import os
import signal
import socket
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlparse

import dagster as dg
from pydantic import Field

from mlops_assets import contract
from resources.locks import file_lock

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

# Re-exported under their historical names; the contract module defines them.
CHAMPION = contract.CHAMPION
CHALLENGER = contract.CHALLENGER
TAG_FINGERPRINT = contract.MlflowTag.TRAINING_FINGERPRINT
TAG_DAGSTER_RUN = contract.MlflowTag.DAGSTER_RUN_ID
TAG_CODE_VERSION = contract.MlflowTag.CODE_VERSION
TAG_BATCHES = contract.MlflowTag.TRAINING_BATCHES
TAG_FAMILY = contract.MlflowTag.MODEL_FAMILY
TAG_PROMOTED = contract.MlflowTag.PROMOTED
TAG_ROLLED_BACK_TO = contract.MlflowTag.ROLLED_BACK_TO
TAG_LAST_CHAMPION_MOVE = contract.MlflowTag.LAST_CHAMPION_MOVE
TAG_MOVE_PREFIX = contract.CHAMPION_MOVE_TAG_PREFIX
TAG_REGISTERED_VERSION = contract.MlflowTag.REGISTERED_VERSION

LOCK_URI_ENV = "MLOPS_REGISTRY_LOCK_URI"
# A test hook: kills the process at a named point, to prove a rerun completes what a crash left.
CRASH_ENV = "MLOPS_TEST_CRASH_AT"

MoveKind = Literal["promotion", "rollback"]
# A move recorded but not yet applied is "pending"; a crash can leave one behind, and the next
# move under the lock settles it as "done" (the alias did move) or "aborted" (it did not).
MoveState = Literal["pending", "done", "aborted"]
# Without a lock, another process's pending record may be in flight; leave young ones alone.
_PENDING_GRACE_S = 300.0


class PromotionConflict(RuntimeError):
    """The champion moved between the decision and the promotion (or a concurrent move won)."""


class UnsafeModelError(RuntimeError):
    """A registered model's artifact would need code execution (or an untrusted type) to load."""


class RegistryLockTimeout(TimeoutError):
    """Another promotion or rollback held the registry lock for too long."""


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


@dataclass(frozen=True)
class ChampionMove:
    """One move of alias ``champion``: a promotion or a rollback."""

    at: _dt.datetime
    from_version: str | None
    to_version: str
    kind: MoveKind
    reason: str
    dagster_run_id: str | None
    actor: str
    override: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    state: MoveState = "done"
    key: str = ""

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["at"] = self.at.isoformat()
        del record["key"]
        return record

    @classmethod
    def from_record(cls, key: str, record: dict[str, Any]) -> ChampionMove:
        return cls(**{**record, "at": _dt.datetime.fromisoformat(record["at"]), "key": key})

    def describe(self) -> str:
        by = f"run {self.dagster_run_id}" if self.dagster_run_id else self.actor
        return (
            f"{self.kind} {self.from_version or '(none)'} -> {self.to_version} at "
            f"{self.at.isoformat(timespec='seconds')} by {by}" + (" (OVERRIDE)" if self.override else "")
        )


def _crash_point(point: str) -> None:
    """Dies like a killed pod at ``point`` when the test hook asks for it; a no-op otherwise."""
    if os.environ.get(CRASH_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _as_utc(when: _dt.datetime | str) -> _dt.datetime:
    moment = _dt.datetime.fromisoformat(when) if isinstance(when, str) else when
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.UTC)


def _actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        # No passwd entry for this uid (common in containers).
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def is_tracking_outage(error: BaseException) -> bool:
    """Whether ``error`` comes from not reaching the tracking server at all, as opposed to the
    server answering with a refusal (a missing model, a bad request), which a retry cannot fix.

    MLflow's REST client re-raises what ``requests`` raised as an ``MlflowException``, sometimes
    with the original only as implicit context, so the whole chain is searched.
    """
    import requests

    unreachable = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.RetryError)
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, unreachable):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class MlflowRegistry(dg.ConfigurableResource):
    """Experiment tracking and the model registry on one MLflow store."""

    tracking_uri: str = Field(description="sqlite:///... locally; http(s)://... for a tracking server.")
    artifact_root: str = Field(
        description="Where new experiments keep artifacts (a folder or fsspec URI); "
        "with a tracking server, leave it to the server by setting it to ''."
    )
    lock_uri: str = Field(
        default="",
        description="postgresql://... : serialize champion moves with a PostgreSQL advisory lock "
        f"(needed for a tracking server shared by several machines). Empty: ${LOCK_URI_ENV}, "
        "else a file lock beside a SQLite or file store, else re-read-after-write verification.",
    )
    lock_timeout_s: float = Field(default=120.0, description="How long a champion move waits for the lock.")
    outage_retries: int = Field(
        default=3,
        ge=0,
        description="How many times a step retries when the tracking server cannot be reached "
        "(refused, reset, timed out, 5xx after the client's own retries). Other errors are not retried.",
    )
    outage_wait_s: float = Field(
        default=30.0, gt=0, description="Wait before the first such retry, doubled for each later one."
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
        # MLflow 3 registers LoggedModels: the source is models:/<model_id>.
        logged = mv.source[len("models:/") :] if mv.source and mv.source.startswith("models:/m-") else None
        created = _dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, _dt.UTC) if mv.creation_timestamp else None
        return RegisteredModel(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id,
            model_id=getattr(mv, "model_id", None) or logged,
            family=tags.get(TAG_FAMILY, "sklearn"),
            tags=tags,
            created_at=created,
        )

    def find_by_fingerprint(self, name: str, fingerprint: str) -> RegisteredModel | None:
        """The oldest version trained on exactly this data, code and spec, if any.

        A version found here may come from a run that died right after registering it (the
        version is created with all its tags in one write, so it is complete); its MLflow run is
        then still RUNNING, and is closed here so a rerun leaves no half-finished run behind.
        """
        client = self.client()
        if not self._registered(client, name):
            return None
        found = client.search_model_versions(f"name = '{name}' and tags.`{TAG_FINGERPRINT}` = '{fingerprint}'")
        if not found:
            return None
        oldest = self._version(min(found, key=lambda mv: int(mv.version)))
        self._complete_registration(client, oldest)
        return oldest

    def _complete_registration(self, client: MlflowClient, model: RegisteredModel) -> None:
        run = client.get_run(model.run_id)
        if run.info.status == "RUNNING" and TAG_REGISTERED_VERSION not in run.data.tags:
            client.set_tag(model.run_id, TAG_REGISTERED_VERSION, model.version)
            client.set_terminated(model.run_id, "FINISHED")

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
        from mlflow.exceptions import MlflowException

        try:
            return self._version(self.client().get_model_version(name, version))
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise LookupError(f"{name}: no registered version {version!r}") from e
            raise

    def versions(self, name: str) -> list[RegisteredModel]:
        """Every registered version of ``name``, oldest first."""
        client = self.client()
        if not self._registered(client, name):
            return []
        found = client.search_model_versions(f"name = '{name}'")
        return sorted((self._version(mv) for mv in found), key=lambda m: int(m.version))

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
        run_id: str | None = None,
    ) -> RegisteredModel:
        """One MLflow run: params, metrics, the training data as a dataset input, the model with
        its signature, extra artifacts; then a registered version carrying ``tags``.

        Args:
            run_id: a run made by ``open_training_run`` (training that logged while it ran) to
                finish; default: a new run.
        """
        import mlflow
        from mlflow.models import infer_signature

        from mlops_assets.ml.trainers import SKOPS_TRUSTED_TYPES

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        example = train_inputs.head(5)
        signature = infer_signature(example, model.predict_proba(example)[:, 1])
        started = (
            mlflow.start_run(run_id=run_id)
            if run_id
            else mlflow.start_run(experiment_id=self.experiment_id(experiment), tags=tags)
        )
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
            _crash_point("after_register")
            self.client().set_tag(run.info.run_id, TAG_REGISTERED_VERSION, str(mv.version))
        return self._version(self.client().get_model_version(name, str(mv.version)))

    def open_training_run(self, *, experiment: str, tags: dict[str, str]) -> str:
        """The MLflow run one training logs to; ``log_and_register(run_id=...)`` finishes it.

        A run still RUNNING from an earlier attempt of the same Dagster run on the same data (``tags``
        carry both) is taken up again rather than left dangling: an attempt cut off by a tracking
        server outage could not mark its run failed, and its retry continues the same run, so one
        training keeps one run and a resumed torch model one whole curve. Returns the run's id.
        """
        client = self.client()
        experiment_id = self.experiment_id(experiment)
        same_attempts = " and ".join(f"tags.`{key}` = '{tags[key]}'" for key in (TAG_DAGSTER_RUN, TAG_FINGERPRINT))
        unfinished = client.search_runs(
            [experiment_id], filter_string=f"{same_attempts} and attributes.status = 'RUNNING'", max_results=1
        )
        if unfinished:
            return unfinished[0].info.run_id
        return client.create_run(experiment_id, tags=tags).info.run_id

    def log_metrics(self, run_id: str, metrics: list[tuple[str, float, int]]) -> None:
        """Logs ``(key, value, step)`` metrics to a run in one request."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client().log_batch(run_id, metrics=[Metric(key, value, now, step) for key, value, step in metrics])

    def _log_torch(self, model: Any, signature: Any, example: pd.DataFrame) -> Any:
        import mlflow

        code = Path(__file__).with_name("torch_pyfunc.py")
        with tempfile.TemporaryDirectory() as tmp:
            # MLflow keeps the folder's own name under artifacts/; load_model expects torch_model.
            folder = Path(tmp) / "torch_model"
            model.save(str(folder))
            return mlflow.pyfunc.log_model(
                name="model",
                python_model=str(code),
                artifacts={"torch_model": str(folder)},
                signature=signature,
                input_example=example,
            )

    def load_model(self, model: RegisteredModel) -> Any:
        """The fitted estimator of a registered version, loaded without executing stored code.

        scikit-learn models load through skops with our allow-list (not the list stored in the
        artifact's MLmodel file, which whoever wrote the artifact controls); torch models as a
        state_dict with ``weights_only=True``.

        Raises:
            UnsafeModelError: the artifact is not a skops file, or holds a type outside the
                allow-list; nothing in it was constructed or imported.
        """
        import mlflow

        from mlops_assets.ml.trainers import SKOPS_TRUSTED_TYPES

        # Resolved through our client: a models:/ URI would go through mlflow's process-global
        # registry URI, which a fresh run worker has never set.
        location = self.client().get_model_version_download_uri(model.name, model.version)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp, tracking_uri=self.tracking_uri)
            )
            if model.family == "torch_mlp":
                from mlops_assets.ml.torch_mlp import TorchMLPClassifier

                return TorchMLPClassifier.load(str(local / "artifacts" / "torch_model"))
            return _load_skops(local / "model.skops", SKOPS_TRUSTED_TYPES, what=f"{model.name} version {model.version}")

    def run_artifact(self, run_id: str, path: str) -> bytes:
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=tmp, tracking_uri=self.tracking_uri
            )
            return Path(local).read_bytes()

    def log_run_text(self, run_id: str, path: str, text: str) -> str:
        """Writes ``text`` as artifact ``path`` of a (finished) run; returns its ``runs:/`` URI."""
        self.client().log_text(run_id, text, path)
        return f"runs:/{run_id}/{path}"

    def model_signature(self, model: RegisteredModel) -> dict[str, Any] | None:
        """The signature in the version's MLmodel file (inputs and outputs as JSON), or None."""
        import mlflow
        import yaml

        location = self.client().get_model_version_download_uri(model.name, model.version)
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{location.rstrip('/')}/MLmodel", dst_path=tmp, tracking_uri=self.tracking_uri
            )
            document = yaml.safe_load(Path(local).read_text()) or {}
        signature = document.get("signature")
        if not signature or not signature.get("inputs"):
            return None
        return {k: json.loads(v) if isinstance(v, str) else v for k, v in signature.items() if v}

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Points ``alias`` at ``version``; ``champion`` moves only through promote and rollback."""
        if alias == CHAMPION:
            raise ValueError(
                f"{name}: alias '{CHAMPION}' moves only through promote() or rollback(), which "
                "compare-and-set under the registry lock and record the move"
            )
        self.client().set_registered_model_alias(name, alias, version)

    def promote(
        self,
        *,
        name: str,
        version: str,
        expected_champion: str | None,
        record: dict[str, Any],
        reason: str = "",
        dagster_run_id: str | None = None,
        override: bool = False,
    ) -> ChampionMove:
        """Moves ``champion`` to ``version`` only if it still points at ``expected_champion``.

        The move is recorded in the champion history (a registered-model tag), on the new
        champion (tag ``mlops.promoted``) and as the registered model's latest move.

        Raises:
            PromotionConflict: the champion is not ``expected_champion`` (the message says which
                version it is and who moved it there), or a concurrent move won the race.
        """
        return self._move_champion(
            name=name,
            to_version=version,
            expected=expected_champion,
            kind="promotion",
            reason=reason,
            dagster_run_id=dagster_run_id,
            override=override,
            details=record,
        )

    def rollback(
        self,
        *,
        name: str,
        reason: str,
        to_version: str | None = None,
        expected_champion: str | None = None,
        dagster_run_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> ChampionMove:
        """Moves ``champion`` back to ``to_version`` (default: the version that was champion
        before the current one), through the same compare-and-set as a promotion.

        Args:
            expected_champion: the champion the caller saw; default: the champion now.

        Raises:
            ValueError: no reason, no previous champion, or a target that was never champion.
            PromotionConflict: the champion moved since the caller looked.
        """
        if not reason.strip():
            raise ValueError(f"{name}: a rollback needs a reason (it is recorded in the champion history)")
        current = self.by_alias(name, CHAMPION)
        if current is None:
            raise ValueError(f"{name}: no version is champion, so there is nothing to roll back")
        expected = expected_champion if expected_champion is not None else current.version
        history = self.champion_history(name)
        if to_version:
            target = self.get(name, to_version)
            was_champion = any(m.to_version == target.version for m in history) or TAG_PROMOTED in target.tags
            if not was_champion:
                raise ValueError(
                    f"{name}: version {target.version} was never champion, so it cannot be rolled back "
                    "to; promote it through the promotion asset (with an override if its gates fail)"
                )
        else:
            previous = next((m.from_version for m in reversed(history) if m.to_version == current.version), None)
            if previous is None:
                raise ValueError(
                    f"{name}: the champion history has no version before {current.version}; name one with --to"
                )
            target = self.get(name, previous)
        if target.version == current.version:
            raise ValueError(f"{name}: version {target.version} is already champion")
        return self._move_champion(
            name=name,
            to_version=target.version,
            expected=expected,
            kind="rollback",
            reason=reason,
            dagster_run_id=dagster_run_id,
            override=False,
            details=details or {},
        )

    def champion_history(self, name: str) -> list[ChampionMove]:
        """Every move of ``champion`` made through this resource, oldest first (aborted ones left out)."""
        champion, moves = self._champion_state(self.client(), name)
        if not moves:
            return []
        settled = [*moves[:-1], _settle(moves[-1], champion)]
        return [m for m in settled if m.state == "done"]

    def champion_at(self, name: str, when: _dt.datetime | str) -> str | None:
        """The version that was champion at ``when`` (naive times are UTC); None before the first."""
        moment = _as_utc(when)
        before = [m for m in self.champion_history(name) if m.at <= moment]
        return before[-1].to_version if before else None

    def _champion_state(self, client: MlflowClient, name: str) -> tuple[str | None, list[ChampionMove]]:
        """The champion now and every recorded move, from one read of the registered model."""
        from mlflow.exceptions import MlflowException

        try:
            registered = client.get_registered_model(name)
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None, []
            raise
        champion = (registered.aliases or {}).get(CHAMPION)
        tags = registered.tags
        moves = [ChampionMove.from_record(k, json.loads(v)) for k, v in tags.items() if k.startswith(TAG_MOVE_PREFIX)]
        return (None if champion is None else str(champion)), sorted(moves, key=lambda m: (m.at, m.key))

    def _move_champion(
        self,
        *,
        name: str,
        to_version: str,
        expected: str | None,
        kind: MoveKind,
        reason: str,
        dagster_run_id: str | None,
        override: bool,
        details: dict[str, Any],
    ) -> ChampionMove:
        """The one compare-and-set behind every champion move.

        The record is written first (pending), then the alias, then the record is marked done:
        a crash in between leaves a pending record that the next move settles, never an alias
        move without a record.
        """
        client = self.client()
        target = self.get(name, to_version)
        with self._registry_lock(name) as verify_only:
            found, moves = self._champion_state(client, name)
            self._settle_pending(client, name, found, moves, locked=not verify_only)
            if found != expected:
                raise PromotionConflict(
                    f"{name}: champion is version {found or '(none)'}, not {expected or '(none)'} as when "
                    f"the {kind} of version {to_version} was decided; {_who_moved(moves, found)}. "
                    "Nothing was changed; re-run the evaluation (or the rollback) against the new champion"
                )
            at = _now()
            move = ChampionMove(
                at=at,
                from_version=found,
                to_version=target.version,
                kind=kind,
                reason=reason[:2000],
                dagster_run_id=dagster_run_id,
                actor=_actor(),
                override=override,
                details=_compact(details),
                state="pending",
                key=f"{TAG_MOVE_PREFIX}{at.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}",
            )
            client.set_registered_model_tag(name, move.key, json.dumps(move.to_record(), default=str))
            _crash_point("before_alias_move")
            client.set_registered_model_alias(name, CHAMPION, target.version)
            after, moves = self._champion_state(client, name)
            if after != target.version:
                # Only possible without a lock: a concurrent writer moved it after us.
                self._mark(client, name, move, "aborted")
                raise PromotionConflict(
                    f"{name}: lost a concurrent champion move: set version {target.version}, then read "
                    f"version {after or '(none)'}; {_who_moved(moves, after)}"
                )
            done = self._mark(client, name, move, "done")
            record = json.dumps(done.to_record(), default=str)
            tag = TAG_PROMOTED if kind == "promotion" else TAG_ROLLED_BACK_TO
            client.set_model_version_tag(name, target.version, tag, record)
            client.set_registered_model_tag(name, TAG_LAST_CHAMPION_MOVE, record)
            return done

    def _mark(self, client: MlflowClient, name: str, move: ChampionMove, state: MoveState) -> ChampionMove:
        settled = ChampionMove(**{**move.__dict__, "state": state})
        client.set_registered_model_tag(name, move.key, json.dumps(settled.to_record(), default=str))
        return settled

    def _settle_pending(
        self, client: MlflowClient, name: str, champion: str | None, moves: list[ChampionMove], *, locked: bool
    ) -> None:
        for move in moves:
            if move.state != "pending":
                continue
            if not locked and (_now() - move.at).total_seconds() < _PENDING_GRACE_S:
                continue
            # Only the latest move can have happened: any later one was recorded after it settled.
            happened = move is moves[-1] and champion == move.to_version
            self._mark(client, name, move, "done" if happened else "aborted")

    @contextlib.contextmanager
    def _registry_lock(self, name: str) -> Iterator[bool]:
        """Serializes champion moves of ``name`` across processes and machines.

        Yields whether the caller must rely on re-read-after-write verification alone (no lock
        is available for this store).
        """
        lock_uri = self.lock_uri or os.environ.get(LOCK_URI_ENV, "")
        if lock_uri:
            with _postgres_advisory_lock(lock_uri, f"{self.tracking_uri}|{name}", timeout_s=self.lock_timeout_s):
                yield False
            return
        folder = _local_store_dir(self.tracking_uri)
        if folder is None:
            yield True
            return
        with file_lock(
            folder / f"champion-{name}.lock",
            timeout_s=self.lock_timeout_s,
            what="registry lock",
            holder=f"{_actor()} since {_now().isoformat(timespec='seconds')}",
            error=RegistryLockTimeout,
        ):
            yield False


def _who_moved(moves: list[ChampionMove], version: str | None) -> str:
    if version is None:
        return "no version is champion"
    last = next((m for m in reversed(moves) if m.to_version == version and m.state != "aborted"), None)
    if last is None:
        return f"version {version} was made champion outside mlops (no history record: the MLflow UI or API?)"
    return f"moved there by {last.describe()}" + (f": {last.reason}" if last.reason else "")


def _settle(move: ChampionMove, champion: str | None) -> ChampionMove:
    """A pending record is the latest move; it happened iff the alias points where it says."""
    if move.state != "pending":
        return move
    return ChampionMove(**{**move.__dict__, "state": "done" if champion == move.to_version else "aborted"})


def _compact(details: dict[str, Any], limit: int = 6000) -> dict[str, Any]:
    """Keeps a history record well under MLflow's tag size; the full record is the asset's."""
    text = json.dumps(details, default=str)
    if len(text) <= limit:
        return json.loads(text)
    kept = {k: v for k, v in details.items() if len(json.dumps(v, default=str)) < limit // 4}
    kept["truncated"] = sorted(set(details) - set(kept))
    return json.loads(json.dumps(kept, default=str))


def _local_store_dir(tracking_uri: str) -> Path | None:
    """Where a lock file for this store lives: beside a SQLite database or inside a file store."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        database = unquote(tracking_uri.split(":///", 1)[1]) if ":///" in tracking_uri else ""
        if not database or database == ":memory:":
            return None
        path = Path(database).absolute()
        return path.parent / f"{path.name}.locks"
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)) / ".mlops-locks"
    if parsed.scheme == "" and tracking_uri:
        return Path(tracking_uri).absolute() / ".mlops-locks"
    return None


@contextlib.contextmanager
def _postgres_advisory_lock(uri: str, subject: str, *, timeout_s: float) -> Iterator[None]:
    """A session-level advisory lock: PostgreSQL releases it when the connection drops."""
    import psycopg2

    key = int.from_bytes(hashlib.sha256(subject.encode()).digest()[:8], "big", signed=True)
    connection = psycopg2.connect(uri.replace("postgresql+psycopg2://", "postgresql://"))
    connection.autocommit = True
    deadline = time.monotonic() + timeout_s
    try:
        with connection.cursor() as cursor:
            while True:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                if cursor.fetchone()[0]:
                    break
                if time.monotonic() > deadline:
                    raise RegistryLockTimeout(f"advisory lock {key} for {subject} held for over {timeout_s:.0f}s")
                time.sleep(0.02)
            try:
                yield
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        connection.close()


_ZIP_MAGIC = b"PK\x03\x04"


def _load_skops(path: Path, trusted: list[str], *, what: str) -> Any:
    """skops.load with ``trusted``, after checking the file is a skops archive at all.

    A pickle renamed to model.skops never reaches a parser that could run it; an archive with a
    type outside ``trusted`` is refused before skops imports or constructs anything.
    """
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    if not path.exists():
        raise UnsafeModelError(f"{what}: no model.skops in the registered artifact; refusing any other format")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head != _ZIP_MAGIC:
        kind = "a pickle" if head[:1] == b"\x80" else f"starts with {head!r}"
        raise UnsafeModelError(f"{what}: model.skops is not a skops archive ({kind}); refusing to load it")
    try:
        return sio.load(path, trusted=trusted)
    except UntrustedTypesFoundException as e:
        raise UnsafeModelError(
            f"{what}: model.skops holds types outside the allow-list ({e}); refusing to load it. "
            "The list in the artifact's MLmodel file is ignored on purpose"
        ) from e
