"""The production profile on real services: PostgreSQL and an MLflow tracking server, started by
``scripts/prod-stack.sh`` once per session and stopped at its end, also when a test fails.

These tests run only with ``MLOPS_INTEGRATION=1`` (``make test-integration``): they need the
Debian ``postgresql`` package and take minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "scripts" / "prod-stack.sh"
HERE = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs the production stack (make test-integration)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("MLOPS_INTEGRATION") == "1":
        return
    skip = pytest.mark.skip(reason="starts PostgreSQL and an MLflow server; run with make test-integration")
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(skip)


@dataclass
class ProdStack:
    """The running stack: its MLOPS_HOME and the variables of ``$MLOPS_HOME/prod/env``."""

    home: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            [str(STACK), *args],
            env={**os.environ, "MLOPS_HOME": str(self.home)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"prod-stack.sh {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    @property
    def tracking_uri(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    def mlflow_get(self, endpoint: str, **params: str) -> dict:
        """One GET on the tracking server's REST API (what any client sees)."""
        from urllib.parse import urlencode

        url = f"{self.tracking_uri}/api/2.0/mlflow/{endpoint}?{urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def dagster_sql(self, query: str, *args: object) -> list[tuple]:
        """Rows from Dagster's PostgreSQL database, read with its own credentials."""
        import psycopg2

        port = int(self.env["MLOPS_REGISTRY_LOCK_URI"].rsplit(":", 1)[1].split("/", 1)[0])
        connection = psycopg2.connect(
            host="127.0.0.1", port=port, user="mlops", password=self.env["DAGSTER_PG_PASSWORD"], dbname="dagster"
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute(query, args)
                return cursor.fetchall()
        finally:
            connection.close()


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, value = line[len("export ") :].split("=", 1)
            env[key] = value
    return env


@pytest.fixture(scope="session")
def prod_stack() -> Iterator[ProdStack]:
    """The stack on a fresh MLOPS_HOME, with this process's environment as after ``source env``."""
    if not os.environ.get("MLOPS_INTEGRATION") == "1":
        pytest.skip("MLOPS_INTEGRATION=1 is not set")
    # Under /tmp and world-traversable: as root, PostgreSQL runs as user postgres and must reach
    # its data folder (pytest's own temporary folders are private to root).
    home = Path(tempfile.mkdtemp(prefix="mlops-prod-it-", dir="/tmp"))
    home.chmod(0o755)
    stack = ProdStack(home=home, env={})
    try:
        stack.run("start", timeout=600)
        stack.env = read_env_file(home / "prod" / "env")
        with pytest.MonkeyPatch.context() as patch:
            for key, value in stack.env.items():
                patch.setenv(key, value)
            yield stack
    finally:
        # Stops whatever part did start, even when start itself failed half-way.
        subprocess.run([str(STACK), "stop"], env={**os.environ, "MLOPS_HOME": str(home)}, check=False, timeout=120)
        if os.environ.get("MLOPS_KEEP_PROD_HOME") != "1":
            shutil.rmtree(home, ignore_errors=True)
