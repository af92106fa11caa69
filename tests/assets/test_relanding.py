"""Batches that arrive again or arrive without labels, landed through the landing folder and
materialized with real resources (a lake on disk, MLflow on SQLite).

One history (three GSS years and a champion) is built per module; each test lands its own batch
names, so they do not depend on each other's order.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mlops_assets.contract import RELANDING_CHECK, Asset, Meta, Sensor, partitions_name, raw_version_file
from mlops_assets.explain.document import training_manifest
from mlops_assets.ml.data import frame_fingerprint
from resources.alerts import AlertSink
from resources.registry import CHALLENGER, CHAMPION
from tests.assets.pipeline_harness import Harness
from tests.conftest import gss, write_gss_pipeline
from tests.sensors.http_sink import Sink, http_sink

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


def lake_bytes(h: Harness, batch: str) -> dict[str, bytes]:
    """What the batch's downstream outputs hold now, byte for byte."""
    store = h.resources["lake"]
    files = [(Asset.VALIDATED_BATCH, "parquet"), (Asset.FEATURES, "parquet"), (Asset.PREDICTIONS, "parquet")]
    files.append((Asset.DRIFT_REPORT, "json"))
    return {f"{a}.{ext}": store.read_bytes(NAME, a, batch, ext) for a, ext in files}


def land_and_score(h: Harness, batch: str, frame: pd.DataFrame) -> tuple[Path, dg.ExecuteInProcessResult]:
    """Lands ``frame`` as the batch's file and runs what the real landing sensor requests for it."""
    path = land(h, batch, frame)
    (request,) = [r for r in h.tick_landing() if r.partition_key == batch]  # earlier tests landed files by hand
    return path, h.run_score_job(request)


def raw_versions(h: Harness, batch: str) -> list[str]:
    return h.resources["lake"].partitions(NAME, Asset.RAW_BATCH + "/" + batch)


def test_a_bad_relanding_fails_naming_file_and_expectations_and_downstream_keeps_the_good_version(
    harness: Harness,
) -> None:
    good = rows_of(2010)
    _, first = land_and_score(harness, "2040", good)
    assert first.success, harness.failure_message(first)
    version = harness.metadata(Asset.RAW_BATCH, "2040")[Meta.CONTENT_VERSION]
    kept, champion = lake_bytes(harness, "2040"), harness.resources["registry"].by_alias(NAME, CHAMPION).version
    good_raw = harness.resources["lake"].read_bytes(NAME, Asset.RAW_BATCH, raw_version_file("2040", version), "parquet")

    path, bad = land_and_score(harness, "2040", good.assign(age=good["age"].astype(str)))

    assert not bad.success
    message = harness.failure_message(bad)
    assert f"batch 2040 ({path}, content version " in message
    assert f"failed validation; nothing was written; downstream keeps content version {version}" in message
    assert "column 'age': age_numeric failed" in message
    assert harness.check_results(bad)["age_numeric"] is False
    # The bad version is stored beside the good one, which is byte for byte what it was.
    bad_version = harness.metadata(Asset.RAW_BATCH, "2040")[Meta.CONTENT_VERSION]
    assert bad_version != version
    assert raw_versions(harness, "2040") == sorted([version, bad_version])
    lake = harness.resources["lake"]
    assert lake.read_bytes(NAME, Asset.RAW_BATCH, raw_version_file("2040", version), "parquet") == good_raw
    assert lake_bytes(harness, "2040") == kept
    assert lake.frame_tags(NAME, Asset.FEATURES, "2040")[Meta.CONTENT_VERSION] == version
    assert harness.resources["registry"].by_alias(NAME, CHAMPION).version == champion
    assert {e.asset_key.path[-1] for e in bad.get_asset_materialization_events()} == {Asset.RAW_BATCH}


def test_a_good_relanding_becomes_the_current_version_once_it_passes_validation(harness: Harness) -> None:
    batch = rows_of(2010)
    _, first = land_and_score(harness, "2041", batch)
    assert first.success, harness.failure_message(first)
    version = harness.metadata(Asset.FEATURES, "2041")[Meta.CONTENT_VERSION]
    scored = len(harness.resources["lake"].read_frame(NAME, Asset.PREDICTIONS, "2041"))

    # Landed again with fewer rows: stored as a new version, not yet validated.
    fewer = batch.iloc[: len(batch) // 2]
    land(harness, "2041", fewer)
    (request,) = [r for r in harness.tick_landing() if r.partition_key == "2041"]
    landed = harness.materialize([Asset.RAW_BATCH], "2041")
    assert landed.success, harness.failure_message(landed)
    new_version = harness.metadata(Asset.RAW_BATCH, "2041")[Meta.CONTENT_VERSION]
    assert new_version != version
    assert harness.metadata(Asset.RAW_BATCH, "2041")[Meta.PREVIOUS_CONTENT_VERSION] == version
    lake = harness.resources["lake"]
    assert lake.frame_tags(NAME, Asset.FEATURES, "2041")[Meta.CONTENT_VERSION] == version
    assert len(lake.read_frame(NAME, Asset.PREDICTIONS, "2041")) == scored

    rescored = harness.run_score_job(request)
    assert rescored.success, harness.failure_message(rescored)
    for noun in (Asset.VALIDATED_BATCH, Asset.FEATURES):
        assert lake.frame_tags(NAME, noun, "2041")[Meta.CONTENT_VERSION] == new_version, noun
        assert harness.metadata(noun, "2041")[Meta.CONTENT_VERSION] == new_version, noun
    assert len(lake.read_frame(NAME, Asset.PREDICTIONS, "2041")) == len(fewer)
    assert raw_versions(harness, "2041") == sorted([version, new_version])
    assert harness.check_results(rescored)[RELANDING_CHECK] is True, "2041 trained no registered version"


def alert_tick(h: Harness, sink: Sink, cursor: str | None) -> tuple[list[dict], str | None]:
    """One tick of the real check alert sensor posting to ``sink``; the re-landing alerts it sent."""
    sensor = h.defs.get_sensor_def(Sensor.check_alert(NAME))
    context = dg.build_sensor_context(
        instance=h.instance,
        cursor=cursor,
        resources={**h.resources, "alerts": AlertSink(webhook_url=sink.url)},
        definitions=h.defs,
    )
    before = len(sink.delivered())
    data = sensor.evaluate_tick(context)
    return [b for b in sink.delivered()[before:] if b["check"] == RELANDING_CHECK], data.cursor


def test_training_records_content_versions_and_relanding_a_trained_batch_is_flagged_once(harness: Harness) -> None:
    # Last in the module: it re-lands 1975, a batch the champion was trained on, and retrains.
    registry, lake = harness.resources["registry"], harness.resources["lake"]
    champion = registry.by_alias(NAME, CHAMPION)
    manifest = training_manifest(registry, champion)
    trained = {b: harness.metadata(Asset.RAW_BATCH, b)[Meta.CONTENT_VERSION] for b in ("1974", "1975", "1976")}
    assert manifest is not None and manifest.content_versions == trained
    assert harness.metadata(Asset.MODEL)[Meta.TRAINING_CONTENT_VERSIONS] == trained

    with http_sink() as sink:
        _, cursor = alert_tick(harness, sink, None)  # what earlier tests failed is alerted here, not below
        path, result = land_and_score(harness, "1975", rows_of(1975).iloc[:-25])
        assert result.success, harness.failure_message(result)
        (flag,) = [e for e in result.get_asset_check_evaluations() if e.check_name == RELANDING_CHECK]
        assert flag.passed is False and flag.severity == dg.AssetCheckSeverity.WARN
        assert f"batch 1975 landed again from {path} as content version" in flag.description
        assert f"v{champion.version} on {trained['1975']}" in flag.description
        relanded = harness.metadata(Asset.RAW_BATCH, "1975")
        assert relanded[Meta.TRAINED_VERSIONS] == {champion.version: trained["1975"]}
        assert relanded[Meta.PREVIOUS_CONTENT_VERSION] == trained["1975"]
        new = relanded[Meta.CONTENT_VERSION]
        assert lake.frame_tags(NAME, Asset.FEATURES, "1975")[Meta.CONTENT_VERSION] == new != trained["1975"]
        alerts, cursor = alert_tick(harness, sink, cursor)
        assert [(a["batch"], a["check"]) for a in alerts] == [("1975", RELANDING_CHECK)]
        assert f"v{champion.version} on {trained['1975']}" in alerts[0]["text"]

        # Storing the same content again is no new re-landing: the check passes, no second alert.
        again = harness.materialize([Asset.RAW_BATCH], "1975")
        assert again.success and harness.check_results(again)[RELANDING_CHECK] is True
        alerts, cursor = alert_tick(harness, sink, cursor)
        assert alerts == []

    # The registered version's lineage still names the content it was trained on, still stored.
    assert training_manifest(registry, registry.by_alias(NAME, CHAMPION)) == manifest
    old = lake.read_frame(NAME, Asset.RAW_BATCH, raw_version_file("1975", trained["1975"]))
    assert frame_fingerprint(old) == trained["1975"] and len(old) == len(rows_of(1975))
    # A retrain trains on, and records, the new content.
    retrained = harness.materialize([Asset.TRAINING_DATASET, Asset.MODEL], run_config=harness.until("1976"))
    assert retrained.success, harness.failure_message(retrained)
    assert harness.metadata(Asset.MODEL)[Meta.TRAINING_CONTENT_VERSIONS] == {**trained, "1975": new}
    version = registry.by_alias(NAME, CHALLENGER)
    assert version.version != champion.version
    assert training_manifest(registry, version).content_versions == {**trained, "1975": new}
    assert training_manifest(registry, champion) == manifest
