"""The pipeline on the production profile: Dagster on PostgreSQL, MLflow behind a tracking server
with a PostgreSQL backend store, the lake and artifacts on fsspec URIs (local folders here).

One spec, one session: history, a first champion, a drifted batch, a retrain and its promotion;
then the tracking server is stopped in the middle of training the next model, for longer than the
step's outage retries last and then for a few seconds.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mlops_assets.contract import Asset, op_name
from resources.registry import CHAMPION, TAG_DAGSTER_RUN, MlflowRegistry
from resources.settings import LOCK_URI_ENV, PROD_ENV_VARS
from tests.assets.pipeline_harness import Harness
from tests.conftest import write_gss_pipeline
from tests.integration.conftest import ProdStack

pytestmark = pytest.mark.integration

NAME = "gss_slice"
YEARS = [1974, 1975, 1976, 2010, 2012]
BATCH_ASSETS = [Asset.RAW_BATCH, Asset.VALIDATED_BATCH, Asset.FEATURES]
SCORING_ASSETS = [*BATCH_ASSETS, Asset.PREDICTIONS, Asset.DRIFT_REPORT]
TRAINING_ASSETS = [Asset.TRAINING_DATASET, Asset.MODEL, Asset.EVALUATION, Asset.PROMOTION]


class ProdHarness(Harness):
    """The shared harness, on the prod profile's resources and a PostgreSQL-backed instance."""

    def __init__(self, home: Path, pipelines: Path, instance: dg.DagsterInstance) -> None:
        super().__init__(home, pipelines, NAME, instance, env={"MLOPS_ENV": "prod", "MLOPS_EXECUTOR": "in_process"})

    def train(self, until: str) -> dg.ExecuteInProcessResult:
        return self.materialize(TRAINING_ASSETS, run_config=self.until(until))


@pytest.fixture(scope="module")
def prod(prod_stack: ProdStack, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A pipeline with history and a first champion, on the running stack."""
    root = tmp_path_factory.mktemp("prod")
    pipelines = write_gss_pipeline(root, YEARS)
    with dg.DagsterInstance.from_config(prod_stack.env["DAGSTER_HOME"]) as instance:
        h = ProdHarness(root / "home", pipelines, instance)
        h.history("1976")
        yield h


def registry(stack: ProdStack) -> MlflowRegistry:
    return MlflowRegistry(tracking_uri=stack.tracking_uri, artifact_root="")


def champion_over_http(stack: ProdStack) -> str:
    return stack.mlflow_get("registered-models/alias", name=NAME, alias=CHAMPION)["model_version"]["version"]


def test_the_env_file_selects_the_prod_profile(prod_stack: ProdStack) -> None:
    env = prod_stack.env
    assert env["MLOPS_ENV"] == "prod"
    assert set(PROD_ENV_VARS) <= set(env)
    assert env["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:")
    assert (prod_stack.home / "prod" / "env").stat().st_mode & 0o777 == 0o600
    assert (prod_stack.home / "prod" / "secrets" / "pg-password").stat().st_mode & 0o777 == 0o600
    config = yaml.safe_load((Path(env["DAGSTER_HOME"]) / "dagster.yaml").read_text())
    assert config["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds > 0
    assert "127.0.0.1" in prod_stack.run("status")


@pytest.mark.timeout(1200)
def test_history_batch_drift_retrain_and_promotion_land_in_postgres_and_the_registry(
    prod: ProdHarness, prod_stack: ProdStack
) -> None:
    first = champion_over_http(prod_stack)
    scored = prod.materialize(SCORING_ASSETS, "2010")
    assert scored.success, prod.failure_message(scored)
    lake = Path(prod_stack.env["MLOPS_LAKE_URI"].removeprefix("file://")) / NAME
    drift = json.loads((lake / "drift_report" / "2010.json").read_text())
    assert drift["dataset_drift"] is True, "the slice's 2010 batch drifts from 1974-76; the retrain below relies on it"

    retrain = prod.train("2010")
    assert retrain.success, prod.failure_message(retrain)
    promotion = prod.metadata("promotion")
    assert promotion["decision"] in ("promoted", "rejected")
    champion = champion_over_http(prod_stack)
    assert champion == promotion["champion_after"]
    assert champion == (promotion["candidate_version"] if promotion["decision"] == "promoted" else first)

    # Dagster's tables in PostgreSQL hold every run and materialization.
    materialized = {
        (json.loads(key)[-1], partition)
        for key, partition in prod_stack.dagster_sql(
            "SELECT asset_key, partition FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
        )
    }
    assert {
        ("drift_report", "2010"),
        ("predictions", "2010"),
        ("features", "1974"),
        ("promotion", None),
    } <= materialized
    runs = dict(prod_stack.dagster_sql("SELECT run_id, status FROM runs"))
    assert runs[retrain.run_id] == "SUCCESS" and runs[scored.run_id] == "SUCCESS"

    # The registry answers over HTTP; the artifacts sit in the server's artifact root.
    versions = prod_stack.mlflow_get("model-versions/search", filter=f"name='{NAME}'")["model_versions"]
    assert {v["version"] for v in versions} >= {first, promotion["candidate_version"]}
    assert list((prod_stack.home / "prod" / "artifacts").rglob("model.skops")), "no model artifact in the server's root"


def _train_while_the_server_stops(
    prod: ProdHarness, stack: ProdStack, *, down_for_s: float | None
) -> tuple[dg.ExecuteInProcessResult, float]:
    """Train batch 2012; once the model's MLflow run exists (mid-step, before its version is
    registered) stop the tracking server, and start it again after ``down_for_s`` (None: not in
    this call). Returns the result and the seconds from the stop to the run's end.
    """
    experiment = stack.mlflow_get("experiments/get-by-name", experiment_name=NAME)["experiment"]
    known_runs = {r["info"]["run_id"] for r in _runs(stack, experiment["experiment_id"])}
    outcome: dict[str, object] = {}

    def train() -> None:
        outcome["result"] = prod.train("2012")
        outcome["ended"] = time.monotonic()

    worker = threading.Thread(target=train)
    worker.start()
    deadline = time.monotonic() + 300
    while not ({r["info"]["run_id"] for r in _runs(stack, experiment["experiment_id"])} - known_runs):
        assert worker.is_alive(), "training finished before its MLflow run was seen"
        assert time.monotonic() < deadline, "no MLflow run appeared within 300s"
        time.sleep(0.2)
    stack.run("stop", "mlflow")
    stopped_at = time.monotonic()
    if down_for_s is not None:
        time.sleep(down_for_s)
        stack.run("start", "mlflow")
    else:
        # No sensor calls MLflow: every tick ends quickly with the server down.
        for sensor in prod.defs.sensors:
            started = time.monotonic()
            context = dg.build_sensor_context(instance=prod.instance, resources=prod.resources, definitions=prod.defs)
            # As the daemon does: a run request for a partition (the drift report sensor's for a
            # drifted batch) is checked against the instance's dynamic partitions.
            with dg.partition_loading_context(dynamic_partitions_store=prod.instance):
                data = prod.defs.resolve_sensor_def(sensor.name).evaluate_tick(context)
            assert time.monotonic() - started < 10, f"{sensor.name} took {time.monotonic() - started:.0f}s"
            assert data.run_requests or data.skip_message is not None, sensor.name
    worker.join(timeout=300)
    assert not worker.is_alive(), "the run did not end within 300s of the server stopping"
    result = outcome["result"]
    assert isinstance(result, dg.ExecuteInProcessResult)
    return result, float(outcome["ended"]) - stopped_at  # type: ignore[arg-type]


@pytest.mark.timeout(900)
def test_mlflow_down_mid_training_retries_then_fails_leaving_no_version(
    prod: ProdHarness, prod_stack: ProdStack
) -> None:
    for step in (prod.materialize(BATCH_ASSETS, "2012"),):
        assert step.success, prod.failure_message(step)
    before = registry(prod_stack).versions(NAME)
    champion = champion_over_http(prod_stack)
    prod.resources["registry"] = _registry_resource(outage_retries=1, outage_wait_s=2)
    try:
        result, seconds = _train_while_the_server_stops(prod, prod_stack, down_for_s=None)
    finally:
        prod.resources["registry"] = _registry_resource()
        prod_stack.run("start", "mlflow")

    assert not result.success
    assert len(prod.retries(result)) == 1, "the step is retried once (outage_retries=1) before it fails"
    message = prod.failure_chain(result)
    assert "Exceeded max_retries of 1" in message
    assert prod_stack.tracking_uri.removeprefix("http://") in message, message
    # MLFLOW_HTTP_REQUEST_MAX_RETRIES/BACKOFF_FACTOR from the env file: seconds, not MLflow's ~4 minutes.
    assert seconds < 90, f"the run took {seconds:.0f}s to fail"
    failed_steps = {e.step_key for e in result.all_events if e.is_step_failure}
    assert failed_steps == {op_name(NAME, Asset.MODEL)}, failed_steps
    assert [v.version for v in registry(prod_stack).versions(NAME)] == [v.version for v in before]
    assert champion_over_http(prod_stack) == champion


@pytest.mark.timeout(900)
def test_a_short_mlflow_outage_mid_training_is_ridden_out_by_the_retry(
    prod: ProdHarness, prod_stack: ProdStack
) -> None:
    before = registry(prod_stack).versions(NAME)
    prod.resources["registry"] = _registry_resource(outage_retries=4, outage_wait_s=5)
    try:
        result, _ = _train_while_the_server_stops(prod, prod_stack, down_for_s=3)
    finally:
        prod.resources["registry"] = _registry_resource()

    assert result.success, prod.failure_message(result)
    assert prod.retries(result), "the step was never retried"
    after = registry(prod_stack).versions(NAME)
    assert len(after) == len(before) + 1, "one training, one version"
    # The retry took up the run its first attempt could not close: no run is left RUNNING.
    experiment = prod_stack.mlflow_get("experiments/get-by-name", experiment_name=NAME)["experiment"]
    mine = [r for r in _runs(prod_stack, experiment["experiment_id"]) if _tag(r, TAG_DAGSTER_RUN) == result.run_id]
    assert [r["info"]["status"] for r in mine] == ["FINISHED"], mine


def _registry_resource(**outage_policy: float) -> MlflowRegistry:
    """The prod profile's registry resource (resources/settings.py), with another outage policy."""
    return MlflowRegistry(
        tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"),
        artifact_root="",
        lock_uri=dg.EnvVar(LOCK_URI_ENV),
        **outage_policy,
    )


def _tag(run: dict, key: str) -> str | None:
    return next((t["value"] for t in run["data"].get("tags", []) if t["key"] == key), None)


def _runs(stack: ProdStack, experiment_id: str) -> list[dict]:
    import urllib.request

    request = urllib.request.Request(
        f"{stack.tracking_uri}/api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [experiment_id], "max_results": 1000}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read()).get("runs", [])
