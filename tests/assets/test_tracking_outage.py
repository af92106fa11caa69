"""A tracking server that cannot be reached makes a step retry with backoff; any other failure
fails it at once. The outage here is real: a port on 127.0.0.1 with nothing listening.
"""

from __future__ import annotations

import socket
from pathlib import Path

import dagster as dg
import pytest

from resources.registry import MlflowRegistry, is_tracking_outage
from resources.settings import LocalMlflowRegistry
from tests.assets.pipeline_harness import Harness

SCORING = ["predictions"]


def closed_port_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # closed again: connections are refused


@pytest.fixture
def fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow's own client retries for minutes by default; the prod env file shortens it the same way.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def test_refused_connection_is_an_outage_and_a_missing_model_is_not(tmp_path: Path, fail_fast: None) -> None:
    from mlflow.exceptions import MlflowException

    down = MlflowRegistry(tracking_uri=closed_port_uri(), artifact_root="")
    with pytest.raises(MlflowException) as refused:
        down.client().get_registered_model("anything")
    assert is_tracking_outage(refused.value)

    store = LocalMlflowRegistry(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "a"))
    with pytest.raises(MlflowException) as missing:
        store.client().get_registered_model("anything")
    assert not is_tracking_outage(missing.value)


def _scoring_with(harness: Harness, registry: MlflowRegistry, batch: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        harness.defs.assets,
        instance=harness.instance,
        selection=[harness.key(n) for n in SCORING],
        partition_key=batch,
        resources={**harness.resources, "registry": registry},
        raise_on_error=False,
    )


def test_unreachable_server_retries_with_backoff_then_fails_naming_it(
    scored_pipeline: Harness, fail_fast: None
) -> None:
    h = scored_pipeline
    before = h.metadata("predictions", "2010")
    uri = closed_port_uri()
    down = MlflowRegistry(tracking_uri=uri, artifact_root="", outage_retries=2, outage_wait_s=0.1)
    result = _scoring_with(h, down, "2010")

    assert not result.success
    assert h.retries(result) == pytest.approx([0.1, 0.2]), "two retries, the wait doubling"
    chain = h.failure_chain(result)
    assert chain.startswith("Exceeded max_retries of 2"), chain
    assert uri.removeprefix("http://") in chain, chain
    # The batch's scores from the healthy run are untouched.
    assert h.metadata("predictions", "2010") == before


def test_a_failure_that_is_not_an_outage_is_not_retried(scored_pipeline: Harness, tmp_path: Path) -> None:
    h = scored_pipeline
    empty = LocalMlflowRegistry(tracking_uri=f"sqlite:///{tmp_path / 'empty.db'}", artifact_root=str(tmp_path / "a"))
    result = _scoring_with(h, empty, "2010")
    assert not result.success
    assert h.retries(result) == []
    assert "no version is champion" in h.failure_message(result)


def test_an_outage_in_a_backfill_retries_the_batch_step_with_backoff(scored_pipeline: Harness, fail_fast: None) -> None:
    from mlops_assets.assets.backfill import plan_op
    from mlops_assets.contract import Job

    h = scored_pipeline
    before = h.metadata("predictions", "2010")
    down = MlflowRegistry(tracking_uri=closed_port_uri(), artifact_root="", outage_retries=2, outage_wait_s=0.1)
    job = h.defs.resolve_job_def(Job.backfill(h.name))
    config = {"ops": {plan_op(h.name): {"config": {"batches": ["2010"], "assets": SCORING}}}}
    result = job.execute_in_process(
        run_config=config, instance=h.instance, resources={**h.resources, "registry": down}, raise_on_error=False
    )

    assert not result.success
    assert h.retries(result) == pytest.approx([0.1, 0.2]), "the batch's step retried twice, the wait doubling"
    assert h.failure_chain(result).startswith("Exceeded max_retries of 2")
    assert h.metadata("predictions", "2010") == before
