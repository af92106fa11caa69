"""The closed loop with the real ``dagster-daemon``: a landed batch is ingested, scored, found
drifted, and the retrain and promotion it triggers happen by themselves."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mlops_assets.contract import Asset, Meta, TrainingFile, training_file
from mlops_assets.demo import ensure_instance
from mlops_assets.loop import ClosedLoop
from mlops_assets.spec import load_specs
from resources.settings import Settings
from tests.assets.pipeline_harness import Harness
from tests.conftest import gss, gss_spec

NAME = "gss_slice"


@pytest.mark.timeout(900)
def test_landing_drift_retrain_and_promotion_happen_by_themselves(tmp_path: Path) -> None:
    source = tmp_path / "data" / "history.parquet"
    source.parent.mkdir()
    frame = gss()
    frame[frame["year"].isin([1974, 1975, 1976])].to_parquet(source, index=False)
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "spec.yaml").write_text(yaml.safe_dump(gss_spec(source)))
    home = tmp_path / "home"
    dagster_home = home / "dagster"
    ensure_instance(dagster_home)
    env = {
        **os.environ,
        "MLOPS_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "MLOPS_PIPELINES": str(pipelines),
        "MLOPS_SENSOR_INTERVAL_SECONDS": "2",
    }
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        Harness(home, pipelines, NAME, instance=instance).history("1976")

    (spec,) = load_specs(pipelines)
    settings = Settings.from_env(env)
    with ClosedLoop(spec, settings, env, timeout=400) as loop:
        row = loop.land_and_follow("2010", frame[frame["year"] == 2010])
        instance = loop.instance
        runs = {r.tags["mlops/trigger"]: r for r in instance.get_runs(dg.RunsFilter(tags={"mlops/model": NAME}))}

    assert row["scored"], row
    assert row["retrain"] == "drift", row
    assert set(runs) == {"landing", "drift"}, runs.keys()
    landing, retrain = runs["landing"], runs["drift"]
    assert landing.status == dg.DagsterRunStatus.SUCCESS
    assert landing.tags["mlops/landing_file"].endswith("2010.parquet")
    assert landing.job_name == f"{NAME}_score_batch_job"
    drift = json.loads((home / "lake" / NAME / "drift_report" / "2010.json").read_text())
    assert drift["dataset_drift"] is True
    assert retrain.status == dg.DagsterRunStatus.SUCCESS
    assert retrain.tags["mlops/batch"] == "2010"
    assert retrain.job_name == f"{NAME}_retrain_job"
    assert row["retrain"] == "drift"
    assert row["decision"] in ("promoted", "rejected")
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        window = instance.get_latest_materialization_event(dg.AssetKey([NAME, Asset.TRAINING_DATASET]))
    fingerprint = window.asset_materialization.metadata[Meta.TRAINING_FINGERPRINT].value
    manifest = json.loads(
        (
            home / "lake" / NAME / Asset.TRAINING_DATASET / f"{training_file(fingerprint, TrainingFile.MANIFEST)}.json"
        ).read_text()
    )
    assert manifest["batches"] == ["1974", "1975", "1976", "2010"]
    if row["decision"] == "promoted":
        assert row["champion"] == "2"
