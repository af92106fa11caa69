"""``MlflowRegistry``: the one resource every step uses for MLflow tracking and the registry.

An explicit ``MlflowClient`` per call, never mlflow's module-level proxying of everything
(dagster-mlflow's approach). Aliases ``champion`` and ``challenger``, never the deprecated stages.
Each job lives in its own module; this class only wires them to one store:

| module       | job                                                                         |
|--------------|-----------------------------------------------------------------------------|
| ``tracking`` | runs, params, metrics, artifacts; registering a trained model with its digest |
| ``versions`` | reads of registered versions (by alias, number, fingerprint)                |
| ``champion`` | the champion's compare-and-set, its history and rollback planning           |
| ``loading``  | safe loading, the verified disk cache and the in-process memo               |
| ``store_reads`` | a scoring run's reads from a local SQLite store, without importing MLflow |
| ``locks``    | the file lock and the PostgreSQL advisory lock                              |
| ``errors``   | what the registry raises; telling an outage from a refusal                  |
"""

from __future__ import annotations

import contextlib
import datetime as _dt
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from mlops_assets import contract
from resources.registry import champion, loading, store_reads, tracking, versions
from resources.registry.champion import ChampionMove
from resources.registry.locks import champion_lock
from resources.registry.versions import RegisteredModel

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient


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
        "(needed for a tracking server shared by several machines). Empty: a file lock beside a "
        "SQLite or file store, else re-read-after-write verification.",
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
    model_cache_dir: str = Field(
        default="",
        description="A local folder holding each loaded version's files, checked against the digest "
        "recorded at registration before every load; empty: fetch from the registry on every load.",
    )

    def client(self) -> MlflowClient:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    # ----------------------------------------------------------------------------- tracking

    def experiment_id(self, name: str) -> str:
        return tracking.experiment_id(self.client(), name, artifact_root=self.artifact_root)

    def open_training_run(self, *, experiment: str, tags: dict[str, str]) -> str:
        """The MLflow run one training logs to; ``log_and_register(run_id=...)`` finishes it.

        A run still RUNNING from an earlier attempt of the same Dagster run on the same data (``tags``
        carry both) is taken up again rather than left dangling: an attempt cut off by a tracking
        server outage could not mark its run failed, and its retry continues the same run, so one
        training keeps one run and a resumed torch model one whole curve. Returns the run's id.
        """
        return tracking.open_training_run(self.client(), self.experiment_id(experiment), tags)

    def log_metrics(self, run_id: str, metrics: list[tuple[str, float, int]]) -> None:
        """Logs ``(key, value, step)`` metrics to a run in one request."""
        tracking.log_metrics(self.client(), run_id, metrics)

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
        its signature, extra artifacts; then a registered version carrying ``tags`` and the digest
        of its model files (tag ``mlops.artifact_digest``), which every later load checks.

        Args:
            run_id: a run made by ``open_training_run`` (training that logged while it ran) to
                finish; default: a new run.
        """
        client = self.client()
        version = tracking.log_and_register(
            client,
            tracking_uri=self.tracking_uri,
            experiment_id=None if run_id else self.experiment_id(experiment),
            run_id=run_id,
            name=name,
            model=model,
            family=family,
            params=params,
            metrics=metrics,
            train_inputs=train_inputs,
            training_frame=training_frame,
            label_column=label_column,
            tags=tags,
            extra_artifacts=extra_artifacts,
        )
        return versions.get(client, name, version)

    def _from_store(self, read: Any, *args: str) -> Any:
        """``read(database, *args)`` on a local SQLite store, without importing MLflow;
        ``store_reads.UNANSWERED`` on any other store or when its schema is not the one expected."""
        database = store_reads.sqlite_database(self.tracking_uri)
        if database is None:
            return store_reads.UNANSWERED
        try:
            return read(database, *args)
        except store_reads.SchemaMismatch as e:
            store_reads.warn_fallback(database, e)
            return store_reads.UNANSWERED

    def run_artifact(self, run_id: str, path: str) -> bytes:
        found = self._from_store(store_reads.run_artifact, run_id, path)
        if found is not store_reads.UNANSWERED and found is not None:
            return found
        # Not a local file artifact (or none): MLflow knows every artifact store.
        return tracking.run_artifact(run_id, path, tracking_uri=self.tracking_uri)

    def log_run_text(self, run_id: str, path: str, text: str) -> str:
        """Writes ``text`` as artifact ``path`` of a (finished) run; returns its ``runs:/`` URI."""
        self.client().log_text(run_id, text, path)
        return f"runs:/{run_id}/{path}"

    def log_run_files(self, run_id: str, folder: str, files: dict[str, bytes]) -> list[str]:
        """Writes each ``name -> bytes`` as artifact ``folder/name`` of a (finished) run in one
        upload; returns their ``runs:/`` URIs."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="mlops-artifacts-") as staging:
            for filename, data in files.items():
                (Path(staging) / filename).write_bytes(data)
            self.client().log_artifacts(run_id, staging, folder)
        return [f"runs:/{run_id}/{folder}/{filename}" for filename in files]

    def model_signature(self, model: RegisteredModel) -> dict[str, Any] | None:
        """The signature in the version's MLmodel file (inputs and outputs as JSON), or None."""
        return tracking.model_signature(self.client(), model.name, model.version, tracking_uri=self.tracking_uri)

    # ----------------------------------------------------------------------------- versions

    def find_by_fingerprint(self, name: str, fingerprint: str) -> RegisteredModel | None:
        """The oldest version trained on exactly this data, code and spec, if any.

        A version found here may come from a run that died right after registering it (the
        version is created with all its tags in one write, so it is complete); its MLflow run is
        then still RUNNING, and is closed here so a rerun leaves no half-finished run behind.
        """
        client = self.client()
        oldest = versions.oldest_with_fingerprint(client, name, fingerprint)
        if oldest is not None:
            versions.complete_registration(client, oldest)
        return oldest

    def by_alias(self, name: str, alias: str) -> RegisteredModel | None:
        """The version ``alias`` points at now, or None when it points nowhere (or ``name`` is unknown).

        On a local SQLite store, read without importing MLflow (``store_reads``)."""
        found = self._from_store(store_reads.by_alias, name, alias)
        return versions.by_alias(self.client(), name, alias) if found is store_reads.UNANSWERED else found

    def resolve(self, name: str, alias: str) -> RegisteredModel:
        """The version ``alias`` points at now: one registry read, made on every call, so a moved
        alias is seen at once (a server polls this and loads a new version with ``load_version``).

        Raises:
            LookupError: the alias points at no version.
        """
        found = self.by_alias(name, alias)
        if found is None:
            raise LookupError(f"{name}: alias {alias!r} points at no version")
        return found

    def get(self, name: str, version: str) -> RegisteredModel:
        found = self._from_store(store_reads.get, name, version)
        return versions.get(self.client(), name, version) if found is store_reads.UNANSWERED else found

    def versions(self, name: str) -> list[RegisteredModel]:
        """Every registered version of ``name``, oldest first."""
        return versions.all_versions(self.client(), name)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Points ``alias`` at ``version``; ``champion`` moves only through promote and rollback."""
        if alias == contract.CHAMPION:
            raise ValueError(
                f"{name}: alias '{contract.CHAMPION}' moves only through promote() or rollback(), which "
                "compare-and-set under the registry lock and record the move"
            )
        self.client().set_registered_model_alias(name, alias, version)

    # ----------------------------------------------------------------------------- loading

    def load_version(self, model: RegisteredModel) -> Any:
        """The fitted estimator of a registered version, loaded without executing stored code.

        Memoised in the process (a few versions, keyed by store, name, version and digest); else
        read from the disk cache and checked against the digest recorded at registration; else
        fetched from the registry, checked, and cached. scikit-learn models load through skops
        with our allow-list (not the list stored in the artifact's MLmodel file, which whoever
        wrote the artifact controls); torch models as a state_dict with ``weights_only=True``.
        Safe to call from several threads; the object returned is shared, never change it.

        Raises:
            UnsafeModelError: the artifact is not a skops file, or holds a type outside the
                allow-list; nothing in it was constructed or imported.
            ArtifactIntegrityError: the registry's copy differs from the registered one.
        """
        cache = loading.ModelCache(Path(self.model_cache_dir)) if self.model_cache_dir else None

        def fetch(destination: Path) -> Path:
            # The client only on a cache miss: a cached, verified version loads without MLflow.
            return tracking.download_version(
                self.client(), model.name, model.version, destination, tracking_uri=self.tracking_uri
            )

        return loading.load_version(model, store=self.tracking_uri, cache=cache, fetch=fetch)

    def load_model(self, model: RegisteredModel) -> Any:
        """``load_version``, under the name the assets have always used."""
        return self.load_version(model)

    def evict(self, name: str, version: str | None = None, *, on_disk: bool = True) -> None:
        """Forgets loaded copies of ``name`` (one version, or all): in this process and, with
        ``on_disk``, in the disk cache; the next load fetches from the registry again."""
        loading.LOADED.drop(lambda key: key[:2] == (self.tracking_uri, name) and version in (None, key[2]))
        if on_disk and self.model_cache_dir:
            loading.ModelCache(Path(self.model_cache_dir)).evict(name, version)

    # ----------------------------------------------------------------------------- champion

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
        champion (tag ``mlops.promoted``) and as the registered model's latest move. Retried by
        the same Dagster run after the alias already moved, it finishes that move's records and
        returns it.

        Raises:
            PromotionConflict: the champion is not ``expected_champion`` (the message says which
                version it is and who moved it there), or a concurrent move won the race.
        """
        return champion.move_champion(
            self.client(),
            lock=self._lock_for(name),
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

        A retry by the same Dagster run after its rollback landed returns that rollback instead
        of rolling back once more.

        Args:
            expected_champion: the champion the caller saw; default: the champion now.

        Raises:
            ValueError: no reason, no previous champion, or a target that was never champion.
            PromotionConflict: the champion moved since the caller looked.
        """
        if not reason.strip():
            raise ValueError(f"{name}: a rollback needs a reason (it is recorded in the champion history)")
        client = self.client()
        state = champion.read_state(client, name)
        done = champion.own_move(state, kind="rollback", dagster_run_id=dagster_run_id, to_version=to_version)
        if done is not None:
            target, expected = versions.get(client, name, done.to_version), done.from_version
        else:
            target = champion.rollback_target(
                state, name, to_version=to_version, get=lambda v: versions.get(client, name, v)
            )
            expected = expected_champion if expected_champion is not None else state.champion
        return champion.move_champion(
            client,
            lock=self._lock_for(name),
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
        return champion.history(champion.read_state(self.client(), name))

    def champion_at(self, name: str, when: _dt.datetime | str) -> str | None:
        """The version that was champion at ``when`` (naive times are UTC); None before the first."""
        moment = champion.as_utc(when)
        before = [m for m in self.champion_history(name) if m.at <= moment]
        return before[-1].to_version if before else None

    @contextlib.contextmanager
    def champion_lock(self, name: str) -> Iterator[bool]:
        """Holds the lock every champion move of ``name`` takes (see ``promote``); yields whether
        no lock exists for this store (a tracking server without ``lock_uri``)."""
        with self._lock_for(name)(champion.registry_identity(self.client(), name)) as verify_only:
            yield verify_only

    def _lock_for(self, name: str) -> champion.ChampionLock:
        def lock(identity: str) -> contextlib.AbstractContextManager[bool]:
            return champion_lock(
                name=name,
                tracking_uri=self.tracking_uri,
                lock_uri=self.lock_uri,
                registry_identity=identity,
                timeout_s=self.lock_timeout_s,
                holder=f"{champion.actor()} since {champion.now().isoformat(timespec='seconds')}",
            )

        return lock
