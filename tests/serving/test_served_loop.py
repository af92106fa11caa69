"""Served traffic back into the loop, on a real pipeline: a request-log file is ingested by the
real landing sensor and scored by the real score job, and its drift verdicts equal those of the
same rows landed as a plain batch. Labels joined later by request id give it realized
performance and fairness."""

from __future__ import annotations

import time

import dagster as dg
import pytest

from mlops_assets.contract import DRIFT_CHECK, Asset, Job, LakeFolder, Meta, ServedColumn
from mlops_assets.records import ProductionEvaluation
from mlops_assets.serving.labels import join_labels
from mlops_assets.serving.request_log import RequestLog, ServedBatch
from mlops_assets.spec import load_specs
from tests.assets.pipeline_harness import Harness
from tests.conftest import gss, write_gss_pipeline

NAME = "gss_slice"
HISTORY = [1974, 1975, 1976]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    root = tmp_path_factory.mktemp("served")
    serving = {"canary": {"share": 0.1}, "shadow": True}
    h = Harness(root / "home", write_gss_pipeline(root, HISTORY, serving=serving), NAME)
    h.history("1976")
    h.spec = load_specs(root / "pipelines")[0]
    return h


def production_rows():  # noqa: ANN201 - pandas frame
    """GSS 2010 rows with a label (a landed labelled batch keeps only those)."""
    frame = gss()
    return frame[(frame["year"] == 2010) & frame["realrinc"].notna()].reset_index(drop=True)


def serve(h: Harness, rows, request_size: int = 3) -> str:  # noqa: ANN001
    """The rows as served requests through a real request log; the one batch it closes."""
    log = RequestLog(h.spec, h.resources["lake"].root, landing_root=h.resources["landing"].root)
    columns = log.feature_columns
    for start in range(0, len(rows), request_size):
        part = rows.iloc[start : start + request_size]
        log.append(
            ServedBatch(
                request_ids=[f"req-{i}" for i in part.index],
                received_at=time.time(),
                features={c: part[c].tolist() for c in columns},
                champion_version="1",
                champion_proba=[0.5] * len(part),
                route=["champion"] * len(part),
                challenger_version=None,
                challenger_proba=None,
            )
        )
    log.close()
    (batch,) = log.written
    return batch


def run_requests(h: Harness, requests: list[dg.RunRequest]) -> dict[str, dg.ExecuteInProcessResult]:
    job = h.defs.resolve_job_def(Job.score_batch(NAME))
    out = {}
    for r in requests:
        result = job.execute_in_process(instance=h.instance, partition_key=r.partition_key, tags=r.tags)
        assert result.success, h.failure_message(result)
        out[r.partition_key] = result
    return out


def drift_verdicts(result: dg.ExecuteInProcessResult) -> dict[str, tuple[bool, float | None]]:
    out = {}
    for e in result.get_asset_check_evaluations():
        if e.asset_key == dg.AssetKey([NAME, Asset.DRIFT_REPORT]):
            score = e.metadata.get("score") or e.metadata.get("drifted_share")
            out[e.check_name] = (e.passed, score.value if score is not None else None)
    return out


def test_a_served_log_is_a_batch_with_the_drift_verdicts_of_the_same_rows_landed(pipeline: Harness) -> None:
    h = pipeline
    h.landing_cursor = None
    rows = production_rows()
    served = serve(h, rows)
    landing = h.resources["landing"].folder(NAME)
    rows.to_parquet(landing / "2010.parquet", index=False)

    requests = h.tick_landing()
    assert sorted(r.partition_key for r in requests) == sorted(["2010", served])
    assert all(r.tags["mlops/trigger"] == "landing" for r in requests)
    results = run_requests(h, requests)

    served_drift, landed_drift = drift_verdicts(results[served]), drift_verdicts(results["2010"])
    watched = len(h.spec.features.columns) + len(h.spec.sensitive_features)
    assert len(served_drift) == 1 + watched
    assert served_drift == landed_drift
    assert served_drift[DRIFT_CHECK][0] is False, "2010 drifts from the 1970s: the verdict is not vacuous"

    # Every served row was validated, featurized and scored again by the champion.
    assert h.metadata(Asset.RAW_BATCH, served)["dagster/row_count"] == len(rows)
    assert h.metadata(Asset.PREDICTIONS, served)["dagster/row_count"] == len(rows)
    lake = h.resources["lake"]
    assert lake.exists(NAME, LakeFolder.PRODUCTION_EVALUATION, "2010", "json")
    assert not lake.exists(NAME, LakeFolder.PRODUCTION_EVALUATION, served, "json"), "unlabelled: no evaluation"
    fairness = {
        e.check_name: e.description
        for e in results[served].get_asset_check_evaluations()
        if e.asset_key == h.key(Asset.PREDICTIONS)
    }
    assert len(fairness) == 2 and all("no labelled rows" in d for d in fairness.values())

    # A second tick takes neither file again.
    assert h.tick_landing() == []

    # Labels arrive later, for two thirds of the requests: joined by request id, the batch lands
    # again with its label column and is scored with realized performance and fairness.
    served_log = lake.read_frame(NAME, LakeFolder.REQUEST_LOG, served)
    labelled = served_log.iloc[: 2 * len(served_log) // 3]
    labels = labelled[[ServedColumn.REQUEST_ID]].assign(realrinc=rows.loc[: len(labelled) - 1, "realrinc"].to_numpy())
    report = join_labels(h.spec, lake, h.resources["landing"], labels)
    assert report.matched == {served: len(labelled)}
    assert report.unmatched == 0
    (relanded,) = h.tick_landing()
    assert relanded.partition_key == served
    rescored = run_requests(h, [relanded])[served]
    # Every row is still scored; the labelled ones are counted and evaluated.
    assert h.metadata(Asset.FEATURES, served)["dagster/row_count"] == len(served_log)
    assert h.metadata(Asset.FEATURES, served)[Meta.LABELLED_ROWS] == len(labelled)
    assert h.metadata(Asset.FEATURES, served)["rows_without_label"] == len(served_log) - len(labelled)
    quality = ProductionEvaluation.from_dict(
        lake.read_json(NAME, LakeFolder.PRODUCTION_EVALUATION, served), origin=served
    )
    assert 0.5 < quality.evaluation.metrics["roc_auc"] <= 1.0
    gaps = [
        e.metadata["gap"].value
        for e in rescored.get_asset_check_evaluations()
        if e.asset_key == h.key(Asset.PREDICTIONS)
    ]
    assert len(gaps) == 2 and all(g >= 0.0 for g in gaps), "fairness evaluated on the labelled served rows"


def test_the_deployment_records_what_serves_after_a_promotion_and_a_rollback(
    pipeline: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = pipeline
    registry = h.resources["registry"]
    champion = registry.by_alias(NAME, "champion")
    monkeypatch.setenv("MLOPS_SERVE_URL", "http://serve.internal:8080")
    result = h.materialize([Asset.DEPLOYMENT])
    assert result.success, h.failure_message(result)
    meta = h.metadata(Asset.DEPLOYMENT)
    assert meta["model_version"] == champion.version
    assert meta["endpoint"] == "http://serve.internal:8080"
    assert (meta["canary_share"], meta["canary_key"], meta["shadow"]) == (0.1, "request_id", True)
    # The only candidate is the champion: canary and shadow have nothing to send traffic to.
    assert meta["challenger_version"] == champion.version
    assert meta["challenger_traffic"].startswith("idle")
    record = h.resources["lake"].read_json(NAME, Asset.DEPLOYMENT)
    assert record["champion_version"] == champion.version and record["request_log"]["max_rows"] == 10000

    # Both jobs that move the champion record the deployment in the same run.
    for job in (Job.retrain(NAME), Job.rollback(NAME)):
        keys = h.defs.resolve_job_def(job).asset_layer.selected_asset_keys
        assert h.key(Asset.DEPLOYMENT) in keys, job
