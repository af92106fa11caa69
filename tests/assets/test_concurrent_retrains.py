"""Two retrains of one model at once: each registered version's lineage is the data it was trained
on, and each run's evaluation and decision are about the version that run trained.

A drift sensor's retrain and one launched from the UI can overlap. The runs here meet on purpose:
each waits, at its first read of training data, until the other has written its own window, so
the overlap is certain rather than a matter of timing. A retrain re-executed after a failure (the
daemon's run retries) keeps its window too, though another window was assembled in between.
"""

from __future__ import annotations

import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.contract import Artifact, Asset, Job, Meta, MlflowTag, artifact_path, version_record
from mlops_assets.definitions import build_definitions
from resources.lake import Lake
from resources.registry import MlflowRegistry
from resources.settings import Settings
from tests.assets.pipeline_harness import Harness
from tests.conftest import write_gss_pipeline

NAME = "gss_slice"
RETRAIN = [Asset.TRAINING_DATASET, Asset.MODEL, Asset.EVALUATION, Asset.PROMOTION]
WINDOWS = {"1976": ["1974", "1975", "1976"], "2010": ["1974", "1975", "1976", "2010"]}

_meeting = threading.Barrier(len(WINDOWS))
_reader = threading.local()


class MeetingLake(Lake):
    """The real lake; a run's first read of training data waits for the other run to get there."""

    def read_bytes(self, model: str, asset: str, partition: str | None = None, ext: str = "bin") -> bytes:
        if asset == Asset.TRAINING_DATASET and not getattr(_reader, "met", False):
            _reader.met = True
            _meeting.wait(timeout=600)
        return super().read_bytes(model, asset, partition, ext)


def materialized(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    """Each asset's metadata as this run recorded it, by noun (one materialization each)."""
    found: dict[str, dict] = {}
    for event in result.get_asset_materialization_events():
        noun = event.materialization.asset_key.path[-1]
        assert noun not in found, f"{noun} materialized twice in run {result.run_id}"
        found[noun] = {k: v.value for k, v in event.materialization.metadata.items()}
    return found


def test_overlapping_retrains_keep_their_own_lineage_and_decisions(tmp_path: Path) -> None:
    # A floor no model reaches keeps the champion empty: both decisions are then a deterministic
    # rejection, so neither run can lose a champion race to the other.
    pipelines = write_gss_pipeline(tmp_path, [1974, 1975, 1976, 2010], gates={"min_metrics": {"roc_auc": 0.99}})
    (tmp_path / "home" / "dagster").mkdir(parents=True)
    h = Harness(tmp_path / "home", pipelines, NAME)
    h.instance = dg.DagsterInstance.from_config(str(tmp_path / "home" / "dagster"))
    try:
        h.history("1975")
        for batch in ("1976", "2010"):
            ready = h.materialize(["raw_batch", "validated_batch", "features"], batch)
            assert ready.success, h.failure_message(ready)
        registry = h.resources["registry"]
        before = {m.version for m in registry.versions(NAME)}
        h.resources["lake"] = MeetingLake(root=h.resources["lake"].root)

        def retrain(until: str) -> dg.ExecuteInProcessResult:
            return h.materialize(RETRAIN, run_config=h.until(until))

        with ThreadPoolExecutor(max_workers=len(WINDOWS)) as pool:
            runs = dict(zip(WINDOWS, pool.map(retrain, WINDOWS), strict=True))

        lake = Lake(root=h.resources["lake"].root)
        trained = set()
        for until, result in runs.items():
            assert result.success, h.failure_message(result)
            meta = materialized(result)
            version = meta[Asset.MODEL]["version"]
            fingerprint = meta[Asset.TRAINING_DATASET][Meta.TRAINING_FINGERPRINT]
            registered = registry.get(NAME, version)
            assert registered.tags[MlflowTag.TRAINING_FINGERPRINT] == fingerprint, until
            assert registered.tags[MlflowTag.TRAINING_BATCHES] == ",".join(WINDOWS[until]), until
            manifest = json.loads(registry.run_artifact(registered.run_id, artifact_path(Artifact.TRAINING_MANIFEST)))
            assert (manifest["batches"], manifest["training_fingerprint"]) == (WINDOWS[until], fingerprint), until
            assert meta[Asset.MODEL]["training_fingerprint"] == fingerprint, until
            # The evaluation scored this run's version on this run's holdout.
            assert meta[Asset.EVALUATION]["candidate_version"] == version, until
            assert meta[Asset.EVALUATION]["holdout_rows"] == meta[Asset.TRAINING_DATASET]["holdout_rows"], until
            assert meta[Asset.PROMOTION]["candidate_version"] == version, until
            assert meta[Asset.PROMOTION][Meta.DECISION] == "rejected", until
            record = lake.read_json(NAME, Asset.PROMOTION, version_record(version))
            assert (record["version"], record["dagster_run_id"]) == (version, result.run_id), until
            trained.add(version)
        assert len(trained) == len(WINDOWS)
        assert {m.version for m in registry.versions(NAME)} == before | trained
    finally:
        h.instance.dispose()


def retrain_job(home: str, pipelines: str, tracking_uri: str = "") -> dg.JobDefinition:
    """``<model>_retrain_job`` of the pipelines at ``pipelines``; with ``tracking_uri``, on a
    registry there (for a run whose model step cannot reach its tracking server)."""
    defs = build_definitions(Settings.from_env({"MLOPS_HOME": home, "MLOPS_PIPELINES": pipelines}))
    resources = dict(defs.resources)
    if tracking_uri:
        resources["registry"] = MlflowRegistry(tracking_uri=tracking_uri, artifact_root="", outage_retries=0)
    rebuilt = dg.Definitions(assets=defs.assets, jobs=defs.jobs, resources=resources, executor=defs.executor)
    return rebuilt.resolve_job_def(Job.retrain(NAME))


def test_a_retrain_re_executed_after_a_failure_trains_on_its_own_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MLflow's client would retry a refused connection for minutes.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    pipelines = write_gss_pipeline(tmp_path, [1974, 1975, 1976, 2010], gates={"min_metrics": {"roc_auc": 0.99}})
    home = tmp_path / "home"
    (home / "dagster").mkdir(parents=True)
    h = Harness(home, pipelines, NAME)
    h.instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    try:
        h.history("1975")
        for batch in ("1976", "2010"):
            ready = h.materialize(["raw_batch", "validated_batch", "features"], batch)
            assert ready.success, h.failure_message(ready)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{s.getsockname()[1]}"

        def job(tracking_uri: str = "") -> dg.ReconstructableJob:
            kwargs = {"home": str(home), "pipelines": str(pipelines), "tracking_uri": tracking_uri}
            return dg.build_reconstructable_job(__name__, "retrain_job", reconstructable_kwargs=kwargs)

        failed = dg.execute_job(job(closed), h.instance, run_config=h.until("1976"))
        assert not failed.success
        window = materialized(failed)[Asset.TRAINING_DATASET]
        assert [r.data["batch"] for r in window["batches"].records] == WINDOWS["1976"]
        # Another retrain assembles a later window before the failed one is retried.
        assert h.materialize([Asset.TRAINING_DATASET], run_config=h.until("2010")).success
        assert h.metadata(Asset.TRAINING_DATASET)[Meta.TRAINING_FINGERPRINT] != window[Meta.TRAINING_FINGERPRINT]

        retried = dg.execute_job(
            job(),
            h.instance,
            run_config=h.until("1976"),
            reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, h.instance),
        )
        assert retried.success
        meta = materialized(retried)
        assert Asset.TRAINING_DATASET not in meta, "from failure: the window step is not run again"
        registered = h.resources["registry"].get(NAME, meta[Asset.MODEL]["version"])
        assert registered.tags[MlflowTag.TRAINING_FINGERPRINT] == window[Meta.TRAINING_FINGERPRINT]
        assert registered.tags[MlflowTag.TRAINING_BATCHES] == ",".join(WINDOWS["1976"])
        assert meta[Asset.EVALUATION]["candidate_version"] == registered.version
        assert meta[Asset.EVALUATION]["holdout_rows"] == window["holdout_rows"]
        assert meta[Asset.PROMOTION]["candidate_version"] == registered.version
    finally:
        h.instance.dispose()
