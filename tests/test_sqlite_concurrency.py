"""The local profile's MLflow store (SQLite) under 8 concurrent writers.

Each writer is its own Python process, like the run workers of parallel Dagster runs, and goes
through the registry the local profile builds. They start together on a store that does not
exist yet: without ``prepare_sqlite_store`` all 8 fail in MLflow's schema migrations
("duplicate column name: step", "table _alembic_tmp_tags already exists").

Dagster's own SQLite storage under concurrent runs is Dagster's concern (its run and event-log
databases are per-file and retried by Dagster); the production profile uses PostgreSQL for both.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

WRITERS = 8
RUNS_PER_WRITER = 3
NAME = "concurrency"
REPO = Path(__file__).resolve().parents[1]


def write(home: Path, writer: int, go: Path) -> dict:
    """One writer: runs with params and metrics, then a registered version with an alias."""
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    from resources.settings import Settings, build_resources

    registry = build_resources(Settings.from_env({"MLOPS_HOME": str(home)}))["registry"]
    (go.parent / f"ready-{writer}").touch()
    while not go.exists():
        time.sleep(0.01)
    experiment = registry.experiment_id(NAME)
    client = registry.client()
    for _ in range(RUNS_PER_WRITER):
        run_id = client.create_run(experiment, tags={"writer": str(writer)}).info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric("loss", 1.0 / (step + 1), 0, step) for step in range(20)],
            params=[Param("writer", str(writer))],
        )
        client.set_terminated(run_id)
    try:
        client.create_registered_model(NAME)
    except MlflowException as e:
        # Another writer registered the name first; that race is MLflow's documented answer.
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(NAME, source=f"runs:/{run_id}/model", run_id=run_id).version
    client.set_registered_model_alias(NAME, f"writer{writer}", version)
    return {"writer": writer, "version": str(version)}


@pytest.mark.timeout(300)
def test_eight_writers_on_a_fresh_local_store_all_succeed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    sync = tmp_path / "sync"
    sync.mkdir()
    go = sync / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, str(home), str(i), str(go)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(WRITERS)
    ]
    deadline = time.monotonic() + 240
    while len(list(sync.glob("ready-*"))) < WRITERS:
        failed = [w for w in workers if w.poll() not in (None, 0)]
        assert not failed, failed[0].communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the writers did not start within 240s"
        time.sleep(0.05)
    go.touch()
    results, errors = [], []
    for worker in workers:
        out, err = worker.communicate(timeout=240)
        if worker.returncode != 0:
            errors.append(err[-2000:])
        else:
            results.append(json.loads(out.strip().splitlines()[-1]))

    assert not errors, "\n---\n".join(errors)
    assert sorted(int(r["version"]) for r in results) == list(range(1, WRITERS + 1))
    database = home / "mlflow.db"
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finished = connection.execute("SELECT count(*) FROM runs WHERE status = 'FINISHED'").fetchone()[0]
        aliases = connection.execute("SELECT count(*) FROM registered_model_aliases").fetchone()[0]
    assert finished == WRITERS * RUNS_PER_WRITER
    assert aliases == WRITERS


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    print(json.dumps(write(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))))
