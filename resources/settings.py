"""The environment, chosen in one place: ``MLOPS_ENV`` picks the resources and the executor.

| MLOPS_ENV | lake                     | MLflow                          | executor          |
|-----------|--------------------------|---------------------------------|-------------------|
| local     | $MLOPS_HOME/lake         | sqlite:///$MLOPS_HOME/mlflow.db | in-process        |
| prod      | MLOPS_LAKE_URI (fsspec)  | MLFLOW_TRACKING_URI (server)    | k8s_job_executor  |

Reading the environment happens when definitions are built, never at import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dagster as dg

from resources.lake import Lake
from resources.alerts import ALERT_WEBHOOK_ENV, AlertSink
from resources.landing import LandingZone
from resources.registry import MlflowRegistry

Environment = Literal["local", "prod"]


@dataclass(frozen=True)
class Settings:
    """Where everything lives, from ``MLOPS_ENV``, ``MLOPS_HOME`` and ``MLOPS_PIPELINES``."""

    env: Environment
    home: Path
    pipelines: str | None
    alert_webhook: bool = False
    sensor_interval_seconds: int = 30

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        env = environ.get("MLOPS_ENV", "local")
        if env not in ("local", "prod"):
            raise ValueError(f"MLOPS_ENV: expected 'local' or 'prod', got {env!r}")
        home = Path(environ.get("MLOPS_HOME", ".mlops")).expanduser().absolute()
        return cls(
            env=env,
            home=home,
            pipelines=environ.get("MLOPS_PIPELINES") or None,
            alert_webhook=bool(environ.get(ALERT_WEBHOOK_ENV)),
            sensor_interval_seconds=int(environ.get("MLOPS_SENSOR_INTERVAL_SECONDS", "30")),
        )

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"


def build_resources(settings: Settings) -> dict[str, Any]:
    """The resources of one environment; production secrets stay ``EnvVar``s until a run needs them."""
    if settings.env == "prod":
        return {
            "lake": Lake(root=dg.EnvVar("MLOPS_LAKE_URI")),
            "registry": MlflowRegistry(tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"), artifact_root=""),
            "landing": LandingZone(root=dg.EnvVar("MLOPS_LANDING_DIR")),
            "alerts": _alerts(settings),
        }
    return {
        "lake": Lake(root=str(settings.home / "lake")),
        "registry": MlflowRegistry(tracking_uri=settings.mlflow_uri, artifact_root=str(settings.home / "mlartifacts")),
        "landing": LandingZone(root=str(settings.landing_dir)),
        "alerts": _alerts(settings),
    }


def _alerts(settings: Settings) -> AlertSink:
    # The URL is a secret: it stays an EnvVar, read when a sensor needs it.
    if settings.alert_webhook:
        return AlertSink(webhook_url=dg.EnvVar(ALERT_WEBHOOK_ENV))
    return AlertSink()
