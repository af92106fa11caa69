"""A scoring run's registry reads on the local store give MLflow's answers without importing MLflow.

The same store is read both ways: through ``store_reads`` (what ``MlflowRegistry`` does on a
``sqlite:///`` store) and through ``MlflowClient`` (``versions``, ``tracking``). Then a fresh
interpreter makes every read a scoring run makes, and MLflow must not have been imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_assets.contract import Artifact, artifact_path
from resources.registry import CHAMPION, tracking, versions
from resources.registry.store_reads import by_alias, get, run_artifact, sqlite_database
from tests.governance.conftest import NAME, Governed

ROOT = Path(__file__).resolve().parents[2]


def test_the_store_reads_answer_what_mlflow_answers(governed: Governed, candidate: str) -> None:
    registry = governed.registry
    client = registry.client()
    database = sqlite_database(registry.tracking_uri)
    assert database is not None
    champion = versions.by_alias(client, NAME, CHAMPION)
    assert champion is not None
    assert by_alias(database, NAME, CHAMPION) == champion
    assert by_alias(database, NAME, "no_such_alias") is None
    assert versions.by_alias(client, NAME, "no_such_alias") is None
    assert by_alias(database, "no_such_model", CHAMPION) is None
    every = versions.all_versions(client, NAME)
    assert len(every) >= 2  # the champion and the candidate
    for model in every:
        assert get(database, NAME, model.version) == model
        # The digest every load checks, and the family that picks the loader, come through.
        assert model.artifact_digest and model.family
    for missing in ("999", "x"):
        with pytest.raises(LookupError, match=f"no registered version '{missing}'"):
            get(database, NAME, missing)
        with pytest.raises(LookupError):
            versions.get(client, NAME, missing)
    path = artifact_path(Artifact.REFERENCE_PROFILE)
    expected = tracking.run_artifact(champion.run_id, path, tracking_uri=registry.tracking_uri)
    assert run_artifact(database, champion.run_id, path) == expected
    assert run_artifact(database, champion.run_id, "no/such/file") is None
    with pytest.raises(ValueError, match="leaves run"):
        run_artifact(database, champion.run_id, "../../../../etc/passwd")


PROBE = """
import json, sys
from resources.registry import MlflowRegistry
from mlops_assets.contract import Artifact, artifact_path
tracking_uri, cache, name = sys.argv[1:4]
registry = MlflowRegistry(tracking_uri=tracking_uri, artifact_root="", model_cache_dir=cache)
champion = registry.by_alias(name, "champion")
version = registry.get(name, champion.version)
profile = registry.run_artifact(version.run_id, artifact_path(Artifact.REFERENCE_PROFILE))
model = registry.load_version(version)
print(json.dumps({
    "version": champion.version,
    "profile bytes": len(profile),
    "model": type(model).__name__,
    "mlflow imported": "mlflow" in sys.modules,
}))
"""


def test_a_scoring_runs_registry_reads_import_no_mlflow(governed: Governed) -> None:
    registry = governed.registry
    champion = registry.by_alias(NAME, CHAMPION)
    registry.load_version(champion)  # the verified disk cache holds it, as after the first run
    done = subprocess.run(
        [sys.executable, "-c", PROBE, registry.tracking_uri, registry.model_cache_dir, NAME],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["version"] == champion.version
    assert outcome["profile bytes"] > 0
    assert outcome["model"] == "Pipeline"
    assert outcome["mlflow imported"] is False
