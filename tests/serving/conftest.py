"""A real registry with real HGB versions, and `mlops serve` started on it as a subprocess.

Three versions of ``gss_slice`` are trained on a GSS slice (different ``max_iter``, so their
scores differ) and registered in a SQLite MLflow store in tmp through the product's registry
resource; version 1 is champion. Servers bind 127.0.0.1 on ports 18080-18099 and are stopped when
the test ends, also when it fails.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_assets.contract import CHALLENGER
from tests.conftest import GSS_FEATURES, gss, gss_spec

NAME = "gss_slice"
REPO = Path(__file__).resolve().parents[2]
_PORTS = iter(range(18081, 18100))


@dataclass
class Registered:
    root: Path
    source: Path
    versions: list[str]
    frame: Any  # the GSS rows of the slice (pandas)
    registry: Any
    models: dict[str, Any] = field(default_factory=dict)

    def env(self, pipelines: Path, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "MLOPS_HOME": str(self.root / "home"),
            "MLOPS_PIPELINES": str(pipelines),
            "PYTHONPATH": str(REPO),
            "OMP_NUM_THREADS": "1",
            **extra,
        }

    def champion(self) -> str | None:
        found = self.registry.by_alias(NAME, "champion")
        return found.version if found else None

    def spec_file(self, serving: dict | None = None, *, model: str = "sklearn_hgb") -> Path:
        spec = gss_spec(self.source, training={"initial_until": 1976, "model": model, "seed": 7})
        if serving is not None:
            spec["serving"] = serving
        folder = self.root / "specs" / f"spec-{len(list((self.root / 'specs').glob('*')))}"
        folder.mkdir(parents=True)
        (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
        return folder


@pytest.fixture(scope="session")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Registered:
    from mlops_assets.ml.trainers import build_estimator, prepare_inputs
    from resources.settings import Settings, build_resources

    root = tmp_path_factory.mktemp("serving")
    source = root / "data" / "gss.parquet"
    source.parent.mkdir()
    frame = gss()
    frame = frame[frame["year"].isin([1974, 1975, 1976, 2010])].reset_index(drop=True)
    frame.to_parquet(source, index=False)
    (root / "specs").mkdir()
    settings = Settings.from_env({"MLOPS_HOME": str(root / "home")})
    registry = build_resources(settings)["registry"]
    numeric, categorical = GSS_FEATURES["numeric"], GSS_FEATURES["categorical"]
    train = frame[frame["year"] <= 1976]
    inputs = prepare_inputs(train, numeric, categorical)
    label = (train["realrinc"] >= 25000).astype(int)
    versions = []
    models = {}
    for max_iter in (20, 40, 60):
        model = build_estimator(
            "sklearn_hgb", numeric=numeric, categorical=categorical, params={"max_iter": max_iter}, seed=7
        )
        model.fit(inputs, label)
        version = registry.log_and_register(
            name=NAME,
            experiment=NAME,
            model=model,
            family="sklearn_hgb",
            params={"max_iter": max_iter},
            metrics={},
            train_inputs=inputs,
            training_frame=train,
            label_column="realrinc",
            tags={},
            extra_artifacts={},
        ).version
        versions.append(version)
        models[version] = model
    registry.promote(name=NAME, version=versions[0], expected_champion=None, record={}, reason="test setup")
    return Registered(root, source, versions, frame, registry, models)


class Served:
    """One `mlops serve` subprocess and a keep-alive HTTP client to it."""

    def __init__(self, process: subprocess.Popen, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        connection = self.connect()
        try:
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            sent = {"Content-Type": "application/json", **(headers or {})}
            connection.request(method, path, body=data, headers=sent)
            reply = connection.getresponse()
            return reply.status, dict(reply.getheaders()), reply.read()
        finally:
            connection.close()

    def invoke(self, body: Any, **headers: str) -> tuple[int, Any]:
        status, _, data = self.request("POST", "/invocations", body, headers=headers)
        return status, json.loads(data)

    def metrics(self) -> dict[str, float]:
        _, _, data = self.request("GET", "/metrics")
        out = {}
        for line in data.decode().splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"mlops serve exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                status, _, _ = self.request("GET", "/health")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"mlops serve not ready after {timeout}s:\n{self.log.read_text()}")


Serve = Callable[..., Served]


def free_port() -> int:
    for port in _PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port left in 18081-18099")


@pytest.fixture
def serve(registered: Registered, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Starts `mlops serve gss_slice` with a given ``serving`` block; stops every server it started."""
    started: list[Served] = []

    def start(serving: dict | None = None, *, wait: bool = True, host: str = "127.0.0.1", **env: str) -> Served:
        pipelines = registered.spec_file(serving)
        port = free_port()
        log = tmp_path / f"serve-{port}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "mlops_assets.cli", "serve", NAME, "--host", host, "--port", str(port)],
            env=registered.env(pipelines, **env),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        served = Served(process, port, log)
        started.append(served)
        if wait:
            served.wait_ready()
        return served

    yield start
    for served in started:
        if served.process.poll() is None:
            served.process.terminate()
            try:
                served.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                served.process.kill()
                served.process.wait()


@pytest.fixture
def challenger(registered: Registered) -> Iterator[str]:
    """Version 2 as challenger for the test, removed after it."""
    registered.registry.set_alias(NAME, CHALLENGER, registered.versions[1])
    yield registered.versions[1]
    registered.registry.client().delete_registered_model_alias(NAME, CHALLENGER)


def row(frame: Any, i: int) -> dict[str, Any]:
    """Row ``i`` of the slice as a JSON record of the model's inputs (NaN as null)."""
    columns = [*GSS_FEATURES["numeric"], *GSS_FEATURES["categorical"]]
    record = frame.iloc[i][columns].to_dict()
    return {
        k: (None if isinstance(v, float) and v != v else (v.item() if hasattr(v, "item") else v))
        for k, v in record.items()
    }
