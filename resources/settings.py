"""The environment, chosen in one place: ``MLOPS_ENV`` picks the resources and the executor.

| MLOPS_ENV | Dagster instance         | lake                    | MLflow                          | executor       |
|-----------|--------------------------|-------------------------|---------------------------------|----------------|
| local     | SQLite, DAGSTER_HOME     | $MLOPS_HOME/lake        | sqlite:///$MLOPS_HOME/mlflow.db | in-process     |
| prod      | PostgreSQL, DAGSTER_HOME | MLOPS_LAKE_URI (fsspec) | MLFLOW_TRACKING_URI (server)    | MLOPS_EXECUTOR |

The Dagster instance is Dagster's, not the code location's: its storage is the ``dagster.yaml``
in DAGSTER_HOME (``scripts/prod-stack.sh`` writes one for PostgreSQL; the Helm chart has its own).
Under ``prod`` every service address and secret is a ``dg.EnvVar``, read when a run starts, and
the executor is ``k8s_job_executor`` unless ``MLOPS_EXECUTOR=in_process`` (the one-machine stack).
On both, loaded model versions are cached in $MLOPS_HOME/cache/models, and a set
``MLOPS_REGISTRY_LOCK_URI`` (an ``EnvVar``) serializes champion moves with an advisory lock.

Reading the environment happens when definitions are built, never at import.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

import dagster as dg

from resources.alerts import ALERT_WEBHOOK_ENV, AlertSink
from resources.lake import Lake
from resources.landing import LandingZone
from resources.registry import MlflowRegistry
from resources.registry.locks import file_lock

if TYPE_CHECKING:
    from mlflow import MlflowClient

Environment = Literal["local", "prod"]
Executor = Literal["in_process", "k8s"]
# What a prod run reads when it starts; scripts/prod-stack.sh writes all three.
PROD_ENV_VARS = ("MLOPS_LAKE_URI", "MLFLOW_TRACKING_URI", "MLOPS_LANDING_DIR")
# A PostgreSQL URI for the advisory lock of champion moves; a secret (it holds a password).
LOCK_URI_ENV = "MLOPS_REGISTRY_LOCK_URI"


@dataclass(frozen=True)
class Settings:
    """Where everything lives, from ``MLOPS_ENV``, ``MLOPS_HOME`` and ``MLOPS_PIPELINES``."""

    env: Environment
    home: Path
    pipelines: str | None
    alert_webhook: bool = False
    registry_lock: bool = False
    sensor_interval_seconds: int = 30
    # None: k8s_job_executor under prod, in-process locally.
    executor: Executor | None = None
    # DAGSTER_HOME when set; None: $MLOPS_HOME/dagster.
    dagster_home_env: Path | None = None
    # The environment these settings were read from, handed on to the processes the product starts.
    environment: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        env = environ.get("MLOPS_ENV", "local")
        if env not in ("local", "prod"):
            raise ValueError(f"MLOPS_ENV: expected 'local' or 'prod', got {env!r}")
        home = Path(environ.get("MLOPS_HOME", ".mlops")).expanduser().absolute()
        executor = environ.get("MLOPS_EXECUTOR") or None
        if executor not in (None, "in_process", "k8s"):
            raise ValueError(f"MLOPS_EXECUTOR: expected 'in_process' or 'k8s', got {executor!r}")
        if executor == "k8s" and env != "prod":
            raise ValueError("MLOPS_EXECUTOR=k8s needs MLOPS_ENV=prod: pods cannot reach a SQLite file on this machine")
        return cls(
            env=env,
            home=home,
            pipelines=environ.get("MLOPS_PIPELINES") or None,
            alert_webhook=bool(environ.get(ALERT_WEBHOOK_ENV)),
            registry_lock=bool(environ.get(LOCK_URI_ENV)),
            sensor_interval_seconds=int(environ.get("MLOPS_SENSOR_INTERVAL_SECONDS", "30")),
            executor=executor,
            dagster_home_env=Path(environ["DAGSTER_HOME"]) if environ.get("DAGSTER_HOME") else None,
            environment=dict(environ),
        )

    @property
    def on_kubernetes(self) -> bool:
        """Whether steps run in pods (``k8s_job_executor``) rather than in the run's process."""
        return (self.executor or ("k8s" if self.env == "prod" else "in_process")) == "k8s"

    @property
    def dagster_home(self) -> Path:
        """The Dagster instance's folder: ``DAGSTER_HOME``, else ``$MLOPS_HOME/dagster``."""
        return self.dagster_home_env or self.home / "dagster"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def model_cache_dir(self) -> Path:
        return self.home / "cache" / "models"


def build_resources(settings: Settings) -> dict[str, Any]:
    """The resources of one environment; production secrets stay ``EnvVar``s until a run needs them.

    Under ``prod`` the tracking server's credentials are MLflow's own variables
    (``MLFLOW_TRACKING_TOKEN``, or ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``), which the client
    reads itself, and ``MLOPS_REGISTRY_LOCK_URI``, when set, serializes champion moves with a
    PostgreSQL advisory lock (on either profile).
    """
    # The URI holds a password: it stays an EnvVar, read when a run starts.
    lock = {"lock_uri": dg.EnvVar(LOCK_URI_ENV)} if settings.registry_lock else {}
    cache = str(settings.model_cache_dir)
    if settings.env == "prod":
        return {
            "lake": Lake(root=dg.EnvVar("MLOPS_LAKE_URI")),
            "registry": MlflowRegistry(
                tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"), artifact_root="", model_cache_dir=cache, **lock
            ),
            "landing": LandingZone(root=dg.EnvVar("MLOPS_LANDING_DIR")),
            "alerts": _alerts(settings),
        }
    return {
        "lake": Lake(root=str(settings.home / "lake")),
        "registry": LocalMlflowRegistry(
            tracking_uri=settings.mlflow_uri,
            artifact_root=str(settings.home / "mlartifacts"),
            model_cache_dir=cache,
            **lock,
        ),
        "landing": LandingZone(root=str(settings.landing_dir)),
        "alerts": _alerts(settings),
    }


def _alerts(settings: Settings) -> AlertSink:
    # The URL is a secret: it stays an EnvVar, read when a sensor needs it.
    if settings.alert_webhook:
        return AlertSink(webhook_url=dg.EnvVar(ALERT_WEBHOOK_ENV))
    return AlertSink()


class LocalMlflowRegistry(MlflowRegistry):
    """The registry on the local profile's SQLite store, which it prepares before first use.

    MLflow creates a SQLite store's schema on first use with no lock of its own: processes that
    open a fresh store at the same moment run the same migrations and fail ("duplicate column
    name", "table _alembic_tmp_... already exists"). Preparing the store under a file lock
    serializes that once per store; after it, MLflow's 20 s busy timeout per session handles
    concurrent writers.
    """

    def client(self) -> MlflowClient:
        prepare_sqlite_store(self.tracking_uri)
        return super().client()


_PREPARED_STORES: set[str] = set()


def prepare_sqlite_store(tracking_uri: str, *, lock_timeout_s: float = 120.0) -> None:
    """Creates the MLflow schema of a ``sqlite:///`` store once, under a file lock, in WAL mode.

    WAL lets readers (sensors, the UI, scoring runs) go on while a run writes, and roughly halves
    the time 8 concurrent writers take. A no-op for other URIs and after the first call per process.

    Raises:
        RuntimeError: SQLite refused WAL (a network filesystem); the message names the file.
        TimeoutError: another process held the preparation lock for over ``lock_timeout_s``.
    """
    if tracking_uri in _PREPARED_STORES or not tracking_uri.startswith("sqlite:///"):
        return
    database = unquote(tracking_uri[len("sqlite:///") :].split("?", 1)[0])
    if not database or database == ":memory:":
        return
    path = Path(database).absolute()
    # The registry's champion locks live in the same folder.
    with file_lock(
        path.parent / f"{path.name}.locks" / "store.lock",
        timeout_s=lock_timeout_s,
        what="MLflow store preparation lock",
    ):
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as connection:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(
                f"{path}: SQLite kept journal mode {mode!r} instead of WAL (is MLOPS_HOME on a network "
                "filesystem?); keep MLOPS_HOME on a local disk, or use MLOPS_ENV=prod with a tracking server"
            )
        from mlflow import MlflowClient

        # Opening both stores runs their migrations, now while no other process can.
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
    _PREPARED_STORES.add(tracking_uri)


def resolved_resources(settings: Settings) -> dict[str, Any]:
    """The environment's resources with their ``EnvVar`` fields read, for use outside a run
    (the demo, the CLI): inside a run Dagster does this itself."""
    return {key: resource.process_config_and_initialize() for key, resource in build_resources(settings).items()}
