"""One governed pipeline for the whole session: three GSS years of history and a champion, plus
batch 2010 scored by it, on a lake and an MLflow store in tmp, with a Dagster instance on disk
(so that subprocesses which crash on purpose share its event log).

Building it costs most of a minute, so the governance tests share it. A test that changes the
champion, an artifact or a batch puts it back before it ends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mlops_assets.contract import Asset, op_name
from resources.lake import Lake
from resources.registry import CHAMPION, MlflowRegistry
from tests.assets.pipeline_harness import Harness
from tests.conftest import gss, gss_spec

NAME = "gss_slice"
UNTIL_2010 = {"ops": {op_name(NAME, Asset.TRAINING_DATASET): {"config": {"until": "2010"}}}}
RETRAIN = [Asset.TRAINING_DATASET, Asset.MODEL, Asset.EVALUATION, Asset.PROMOTION]


@dataclass
class Governed:
    root: Path
    source: Path
    harness: Harness

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def registry(self) -> MlflowRegistry:
        return self.harness.resources["registry"]

    @property
    def lake(self) -> Lake:
        return self.harness.resources["lake"]

    @property
    def instance(self) -> dg.DagsterInstance:
        return self.harness.instance

    def champion(self) -> str | None:
        found = self.registry.by_alias(NAME, CHAMPION)
        return found.version if found else None

    def spec(self, **overrides: object) -> dict:
        return gss_spec(self.source, **overrides)

    def variant(self, **overrides: object) -> Harness:
        """The same lake, registry and Dagster instance under a spec with ``overrides``."""
        spec = self.spec(**overrides)
        folder = self.root / "variants" / hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
        harness = Harness(self.home, folder, NAME)
        harness.instance = self.instance
        return harness

    def env(self, pipelines: Path | None = None) -> dict[str, str]:
        return {
            "MLOPS_HOME": str(self.home),
            "MLOPS_PIPELINES": str(pipelines or self.root / "pipelines"),
            "DAGSTER_HOME": str(self.home / "dagster"),
        }


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every step failure's message with the messages of its causes (an asset's own exception
    is the cause of Dagster's "Error occurred while executing op")."""
    texts = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error is not None:
                texts.append(error.message.strip())
                error = error.cause
    return "\n".join(texts)


@pytest.fixture(scope="session")
def governed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Governed]:
    root = tmp_path_factory.mktemp("governed")
    source = root / "data" / "gss.parquet"
    source.parent.mkdir()
    frame = gss()
    frame[frame["year"].isin([1974, 1975, 1976, 2010])].to_parquet(source, index=False)
    (root / "pipelines").mkdir()
    (root / "pipelines" / "spec.yaml").write_text(yaml.safe_dump(gss_spec(source)))
    harness = Harness(root / "home", root / "pipelines", NAME)
    (root / "home" / "dagster").mkdir(parents=True)
    (root / "home" / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    harness.instance = dg.DagsterInstance.from_config(str(root / "home" / "dagster"))
    harness.history("1976")
    scored = harness.materialize(["raw_batch", "validated_batch", "features", "predictions"], "2010")
    assert scored.success, harness.failure_message(scored)
    yield Governed(root, source, harness)
    harness.instance.dispose()


@pytest.fixture(scope="session")
def candidate(governed: Governed) -> str:
    """Version 2: the same spec trained on a window that adds batch 2010 (challenger, not champion)."""
    result = governed.harness.materialize(["training_dataset", "model"], run_config=UNTIL_2010)
    assert result.success, governed.harness.failure_message(result)
    version = governed.harness.metadata("model")["version"]
    assert version != governed.champion()
    return version
