"""Batches that arrive again or arrive without labels, landed through the landing folder and
materialized with real resources (a lake on disk, MLflow on SQLite).

One history (three GSS years and a champion) is built per module; each test lands its own batch
names, so they do not depend on each other's order.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mlops_assets.contract import Asset, Meta, partitions_name
from resources.registry import CHAMPION
from tests.assets.pipeline_harness import Harness
from tests.conftest import gss, write_gss_pipeline

NAME = "gss_slice"
SCORE = [Asset.RAW_BATCH, Asset.VALIDATED_BATCH, Asset.FEATURES, Asset.PREDICTIONS, Asset.DRIFT_REPORT]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    root = tmp_path_factory.mktemp("relanding")
    h = Harness(root / "home", write_gss_pipeline(root, [1974, 1975, 1976, 2010]), NAME)
    h.history("1976")
    return h


def land(h: Harness, batch: str, frame: pd.DataFrame) -> Path:
    """Drops ``frame`` into the landing folder as ``<batch>.parquet`` and registers the batch."""
    folder = h.resources["landing"].folder(NAME)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{batch}.parquet"
    frame.assign(year=int(batch)).to_parquet(path, index=False)
    h.instance.add_dynamic_partitions(partitions_name(NAME), [batch])
    return path


def rows_of(year: int) -> pd.DataFrame:
    frame = gss()
    return frame[frame["year"] == year].reset_index(drop=True)


def test_a_batch_without_any_label_is_scored_and_drift_checked(harness: Harness) -> None:
    served = rows_of(2010).assign(realrinc=float("nan"))
    land(harness, "2030", served)
    result = harness.materialize(SCORE, "2030")
    assert result.success, harness.failure_message(result)
    predictions = harness.resources["lake"].read_frame(NAME, Asset.PREDICTIONS, "2030")
    assert len(predictions) == len(served)
    assert predictions["score"].notna().all()
    meta = harness.metadata(Asset.PREDICTIONS, "2030")
    assert meta[Meta.LABELLED_ROWS] == 0
    assert "none of the" in meta[Meta.EVALUATION_SKIPPED]
    assert "roc_auc" not in meta
    assert harness.metadata(Asset.FEATURES, "2030")[Meta.LABELLED_ROWS] == 0
    drift = harness.metadata(Asset.DRIFT_REPORT, "2030")
    assert drift[Meta.MODEL_VERSION] == harness.resources["registry"].by_alias(NAME, CHAMPION).version
    fairness = {e.check_name: e for e in result.get_asset_check_evaluations() if "within_limit" in e.check_name}
    assert fairness and all(e.passed and "not evaluated" in e.description for e in fairness.values())


def test_partly_labelled_batch_scores_every_row_and_evaluates_the_labelled(harness: Harness) -> None:
    batch = rows_of(2010)
    batch.loc[: len(batch) // 2, "realrinc"] = float("nan")
    labelled = int(batch["realrinc"].notna().sum())
    land(harness, "2031", batch)
    result = harness.materialize(SCORE, "2031")
    assert result.success, harness.failure_message(result)
    assert len(harness.resources["lake"].read_frame(NAME, Asset.PREDICTIONS, "2031")) == len(batch)
    meta = harness.metadata(Asset.PREDICTIONS, "2031")
    assert meta[Meta.LABELLED_ROWS] == labelled
    assert Meta.EVALUATION_SKIPPED not in meta and 0.5 < meta["roc_auc"] <= 1.0


@pytest.mark.parametrize("noun", [Asset.PREDICTIONS, Asset.DRIFT_REPORT, Asset.ATTRIBUTIONS, Asset.EXPLANATION])
def test_a_partition_added_from_outside_is_held_to_the_batch_grammar(harness: Harness, noun: str) -> None:
    # The lake would take this key (no traversal); only the grammar says it names no batch.
    harness.instance.add_dynamic_partitions(partitions_name(NAME), ["20 10"])
    result = harness.materialize([noun], "20 10")
    assert not result.success
    assert "partition key '20 10' is not a valid batch name" in harness.failure_message(result)
