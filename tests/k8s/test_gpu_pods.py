"""The training step's pod on Kubernetes: a GPU, the spec's node selector and toleration, on every
launch path, rendered without a cluster by dagster-k8s's own functions.

For each path the run is created the way that path creates it (same job, asset selection, tags and
run config) on an instance configured like the Helm chart configures it from
``deploy/helm/values.yaml``. The step's Kubernetes Job is then built the way
``dagster_k8s.executor.K8sStepHandler`` builds it: the run's container context (run launcher, then
the code location's), merged with the executor's config, the step's op tags
(``get_user_defined_k8s_config``) and ``per_step_k8s_config``, then ``construct_dagster_k8s_job``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import kubernetes.client
import pytest
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_k8s_job_name,
    get_user_defined_k8s_config,
)

from mlops_assets.contract import Job
from mlops_assets.definitions import build_definitions
from mlops_assets.k8s import K8S_CONFIG_TAG, training_op_tags
from mlops_assets.spec import TrainingSpec
from resources.settings import Settings
from tests.k8s import (
    BATCHES,
    KUBECONFIG,
    MODEL,
    NODE_SELECTOR,
    code_deployment,
    code_location_container_context,
    image_of,
    instance_config,
    load_values,
    write_pipeline,
)

BATCH = BATCHES[-1]
PROD_ENV = {
    "MLOPS_LAKE_URI": "s3://lake/mlops",
    "MLFLOW_TRACKING_URI": "http://mlflow.mlops.svc:5000",
    "MLOPS_LANDING_DIR": "s3://landing/mlops",
}


def key(noun: str) -> dg.AssetKey:
    return dg.AssetKey([MODEL, noun])


def step(noun: str) -> str:
    return f"{MODEL}__{noun}"


@dataclass(frozen=True)
class Cluster:
    defs: dg.Definitions
    instance: dg.DagsterInstance
    values: dict[str, Any]
    runs: dict[str, CreatedRun] = field(default_factory=dict)


@dataclass(frozen=True)
class Launch:
    """One run as a launch path creates it."""

    job: dg.JobDefinition
    asset_selection: frozenset[dg.AssetKey] | None = None
    tags: dict[str, str] = field(default_factory=dict)
    run_config: dict[str, Any] = field(default_factory=dict)
    # Runs launched through the code server carry its container context (the chart's
    # includeConfigInLaunchedRuns); `dagster asset materialize` loads the code itself and has none.
    from_code_server: bool = True


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("k8s")
    spec = write_pipeline(root)
    kubeconfig = root / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    values = load_values()
    settings = Settings.from_env(
        {"MLOPS_ENV": "prod", "MLOPS_HOME": str(root / "home"), "MLOPS_PIPELINES": str(spec), **PROD_ENV}
    )
    with pytest.MonkeyPatch.context() as env:
        # The resources read these EnvVars when a run's config is resolved, as in a run pod.
        for name, value in PROD_ENV.items():
            env.setenv(name, value)
        with dg.instance_for_test(overrides=instance_config(values, kubeconfig=kubeconfig)) as instance:
            instance.add_dynamic_partitions(f"{MODEL}_batches", list(BATCHES))
            yield Cluster(defs=build_definitions(settings), instance=instance, values=values)


def launch(cluster: Cluster, path: str) -> Launch:
    defs, repo = cluster.defs, cluster.defs.get_repository_def()
    retrain_window = (key("training_dataset"), key("model"), key("evaluation"), key("promotion"))
    match path:
        case "ui_materialize":
            selection = frozenset({key("training_dataset"), key("model")})
            return Launch(defs.resolve_implicit_global_asset_job_def(), selection)
        case "cli_materialize":
            # As dagster/_cli/asset.py does: the implicit job for the selection, run in the CLI's
            # process. Without a code server's context, the image and secret come from run config.
            selected = dg.AssetSelection.from_coercible([f"{MODEL}/training_dataset", f"{MODEL}/model"])
            keys = selected.resolve(repo.asset_graph)
            deployment = code_deployment(cluster.values)
            image, secrets = image_of(deployment), [s["name"] for s in deployment["envSecrets"]]
            return Launch(
                repo.get_implicit_job_def_for_assets(keys),
                frozenset(keys),
                run_config={"execution": {"config": {"job_image": image, "env_secrets": secrets}}},
                from_code_server=False,
            )
        case "retrain_sensor":
            sensor = repo.get_sensor_def(f"{MODEL}_drift_sensor")
            return Launch(
                defs.resolve_job_def(sensor.job_name),
                tags={"mlops/model": MODEL, "mlops/trigger": "drift", "mlops/batch": BATCH},
                run_config={"ops": {step("training_dataset"): {"config": {"until": BATCH}}}},
            )
        case "backfill":
            # An asset backfill of the whole lineage runs the unpartitioned window after the batches.
            return Launch(
                defs.resolve_implicit_global_asset_job_def(),
                frozenset(retrain_window),
                tags={"dagster/backfill": "abcdefgh"},
            )
        case "backfill_partition":
            job = defs.resolve_implicit_global_asset_job_def()
            batch_keys = frozenset({key("raw_batch"), key("validated_batch"), key("features")})
            tags = job.get_tags_for_partition_key(BATCH, selected_asset_keys=batch_keys)
            return Launch(job, batch_keys, tags={**tags, "dagster/backfill": "abcdefgh"})
    raise ValueError(path)


@dataclass(frozen=True)
class CreatedRun:
    launch: Launch
    run: dg.DagsterRun
    step_tags: dict[str, dict[str, str]]
    executor_config: dict[str, Any]


def create_run(cluster: Cluster, path: str) -> CreatedRun:
    """The run ``path`` creates, its steps' tags from its execution plan, and its executor config."""
    if path not in cluster.runs:
        how = launch(cluster, path)
        assert how.job.executor_def.name == "k8s"
        run = cluster.instance.create_run_for_job(
            how.job, run_config=how.run_config, tags=how.tags, asset_selection=how.asset_selection
        )
        plan = cluster.instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        run_job = how.job.get_subset(asset_selection=how.asset_selection) if how.asset_selection else how.job
        executor = dg.validate_run_config(run_job, how.run_config)["execution"]["k8s"]
        cluster.runs[path] = CreatedRun(how, run, {s.key: dict(s.tags) for s in plan.steps}, executor)
    return cluster.runs[path]


def render_step_job(cluster: Cluster, path: str, step_key: str) -> kubernetes.client.V1Job:
    """The Kubernetes Job that the k8s_job_executor would create for ``step_key`` of the run."""
    created = create_run(cluster, path)
    run, executor, step_tags = created.run, created.executor_config, created.step_tags
    assert step_key in step_tags, f"{step_key} is not in the run's plan: {sorted(step_tags)}"
    launcher = cluster.instance.run_launcher

    # k8s_job_executor(): the executor's own container context.
    executor_context = K8sContainerContext(
        image_pull_policy=executor.get("image_pull_policy"),
        image_pull_secrets=executor.get("image_pull_secrets"),
        service_account_name=executor.get("service_account_name"),
        env_config_maps=executor.get("env_config_maps"),
        env_secrets=executor.get("env_secrets"),
        env_vars=executor.get("env_vars"),
        volume_mounts=executor.get("volume_mounts"),
        volumes=executor.get("volumes"),
        labels=executor.get("labels"),
        namespace=executor.get("job_namespace"),
        resources=executor.get("resources"),
        scheduler_name=executor.get("scheduler_name"),
        security_context=executor.get("security_context"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor.get("step_k8s_config", {})),
    )
    # K8sStepHandler._get_container_context(). create_for_run() merges the code location's
    # context from the run's code origin; a run created here has none, so it is merged after.
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
    if created.launch.from_code_server:
        code_location = code_location_container_context(cluster.values)
        context = context.merge(K8sContainerContext.create_from_config(code_location))
    context = (
        context.merge(executor_context)
        .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step_tags[step_key])))
        .merge(
            K8sContainerContext(
                run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor["per_step_k8s_config"].get(step_key, {}))
            )
        )
    )
    # K8sStepHandler.launch_step(): the image falls back to the code server's (DAGSTER_CURRENT_IMAGE).
    job_config = context.get_k8s_job_config(executor.get("job_image"), launcher)
    if not job_config.job_image and created.launch.from_code_server:
        job_config = job_config.with_image(image_of(code_deployment(cluster.values)))
    assert job_config.job_image, "no image for the step pod: neither the executor nor the code location sets one"
    name = f"dagster-step-{get_k8s_job_name(run.run_id, step_key)}"
    return construct_dagster_k8s_job(
        job_config=job_config,
        args=None,
        job_name=name,
        pod_name=name,
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/op": step_key, "dagster/run-id": run.run_id},
        env_vars=[
            {"name": "DAGSTER_RUN_JOB_NAME", "value": run.job_name},
            {"name": "DAGSTER_RUN_STEP_KEY", "value": step_key},
        ],
    )


def gpus(container: kubernetes.client.V1Container) -> tuple[str | None, str | None]:
    resources = container.resources or kubernetes.client.V1ResourceRequirements()
    return (resources.requests or {}).get("nvidia.com/gpu"), (resources.limits or {}).get("nvidia.com/gpu")


PATHS_WITH_TRAINING = ["ui_materialize", "cli_materialize", "retrain_sensor", "backfill"]


@pytest.mark.parametrize("path", PATHS_WITH_TRAINING)
def test_training_step_runs_in_a_gpu_pod(cluster: Cluster, path: str) -> None:
    job = render_step_job(cluster, path, step("model"))
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert gpus(container) == ("1", "1")
    assert container.resources.requests["cpu"] == "4"
    assert container.resources.requests["memory"] == container.resources.limits["memory"] == "16Gi"
    assert pod.node_selector == NODE_SELECTOR
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]
    assert job.spec.backoff_limit == 0
    assert pod.restart_policy == "Never"
    assert container.image == image_of(code_deployment(cluster.values))
    assert container.security_context.run_as_non_root is True
    assert "mlops-secrets" in [s.secret_ref.name for s in container.env_from if s.secret_ref]


@pytest.mark.parametrize(
    ("path", "noun"),
    [
        ("ui_materialize", "training_dataset"),
        ("cli_materialize", "training_dataset"),
        ("retrain_sensor", "evaluation"),
        ("backfill", "promotion"),
        ("backfill_partition", "features"),
    ],
)
def test_other_steps_run_in_plain_pods(cluster: Cluster, path: str, noun: str) -> None:
    job = render_step_job(cluster, path, step(noun))
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert gpus(container) == (None, None)
    assert not pod.node_selector
    assert not pod.tolerations
    assert job.spec.backoff_limit == 0
    assert "mlops-secrets" in [s.secret_ref.name for s in container.env_from if s.secret_ref]


def test_every_job_uses_the_k8s_executor(cluster: Cluster) -> None:
    repo = cluster.defs.get_repository_def()
    executors = {job.name: job.executor_def.name for job in repo.get_all_jobs()}
    assert "__ASSET_JOB" in executors and f"{MODEL}_retrain_job" in executors
    # But the backfill: its steps (one per batch) run in its run's pod, importing the libraries
    # once (mlops_assets/assets/backfill.py).
    assert executors.pop(Job.backfill(MODEL)) == "in_process"
    assert set(executors.values()) == {"k8s"}, executors


@pytest.mark.parametrize(
    ("training", "gpu", "tolerated"),
    [
        (TrainingSpec(gpus=2), "2", True),
        (TrainingSpec(gpus=0, cpu="2"), None, False),
        (TrainingSpec(gpus=1, tolerations=[]), "1", False),
    ],
)
def test_training_tags_are_valid_dagster_k8s_config(training: TrainingSpec, gpu: str | None, tolerated: bool) -> None:
    tags = training_op_tags(training, on_kubernetes=True)
    config = get_user_defined_k8s_config({K8S_CONFIG_TAG: json.dumps(tags[K8S_CONFIG_TAG])})
    resources = config.container_config["resources"]
    assert resources["requests"].get("nvidia.com/gpu") == resources["limits"].get("nvidia.com/gpu") == gpu
    assert bool(config.pod_spec_config.get("tolerations")) is tolerated


def test_no_kubernetes_config_off_kubernetes() -> None:
    assert training_op_tags(TrainingSpec(gpus=1, cpu="4"), on_kubernetes=False) == {}
