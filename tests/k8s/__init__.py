"""Kubernetes deployment tests, and what the Dagster Helm chart makes of ``deploy/helm/values.yaml``.

There is no cluster and no ``helm`` here, so the chart templates these tests depend on are followed
by hand, key by key, for the keys our values set (helm/dagster in dagster-io/dagster:
``configmap-instance.yaml``, ``helpers/instance/_run-launcher.tpl`` and ``_run-coordinator.tpl``, and
the user-deployments subchart's ``dagsterUserDeployments.k8sContainerContext``). What comes out is
checked by Dagster and dagster-k8s themselves: the instance config loads into a real ``DagsterInstance``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
VALUES_FILE = DEPLOY / "helm" / "values.yaml"

RELEASE = "dagster"
NAMESPACE = "mlops"
DAGSTER_HOME = "/opt/dagster/dagster_home"  # the chart's global.dagsterHome default

# A kubeconfig that dagster-k8s parses and never uses: nothing here talks to a cluster.
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""

MODEL = "churn"
BATCHES = ("2024-01", "2024-02")
NODE_SELECTOR = {"cloud.google.com/gke-accelerator": "nvidia-l4"}


def write_pipeline(root: Path) -> Path:
    """A small CSV source and a spec whose training asks for one GPU; returns the spec file."""
    data = root / "churn.csv"
    rows = [f"{batch},{i},{'ab'[i % 2]},{'yes' if i % 3 == 0 else 'no'}" for batch in BATCHES for i in range(12)]
    data.write_text("month,tenure,plan,churned\n" + "\n".join(rows) + "\n")
    spec = {
        "name": MODEL,
        "source": {"uri": str(data), "batch_column": "month"},
        "label": {"column": "churned", "positive_value": "yes"},
        "training": {"gpus": 1, "cpu": "4", "memory": "16Gi", "node_selector": NODE_SELECTOR},
    }
    path = root / "churn.yaml"
    path.write_text(json.dumps(spec))
    return path


def load_values() -> dict[str, Any]:
    return yaml.safe_load(VALUES_FILE.read_text())


def code_deployment(values: dict[str, Any]) -> dict[str, Any]:
    """The one user code deployment: this project's code location."""
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


def image_of(deployment: dict[str, Any]) -> str:
    return f"{deployment['image']['repository']}:{deployment['image']['tag']}"


def _names(sources: list[dict[str, str]] | None) -> list[str]:
    return [s["name"] for s in sources or [] if "name" in s]


def instance_config(values: dict[str, Any], *, kubeconfig: Path) -> dict[str, Any]:
    """The ``dagster.yaml`` sections that ``configmap-instance.yaml`` renders from ``values``
    (storage aside: PostgreSQL), with the run launcher pointed at ``kubeconfig`` instead of the
    in-cluster credentials.
    """
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_launcher: dict[str, Any] = {
        "load_incluster_config": False,
        "kubeconfig_file": str(kubeconfig),
        "job_namespace": launcher.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": launcher.get("imagePullPolicy", "Always"),
        "service_account_name": RELEASE,
        "dagster_home": values.get("global", {}).get("dagsterHome", DAGSTER_HOME),
        "instance_config_map": f"{RELEASE}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    optional = {
        "envConfigMaps": ("env_config_maps", _names),
        "envSecrets": ("env_secrets", _names),
        "envVars": ("env_vars", list),
        "volumeMounts": ("volume_mounts", list),
        "volumes": ("volumes", list),
        "labels": ("labels", dict),
        "resources": ("resources", dict),
        "failPodOnRunFailure": ("fail_pod_on_run_failure", bool),
        "schedulerName": ("scheduler_name", str),
        "securityContext": ("security_context", dict),
    }
    for key, (name, convert) in optional.items():
        if launcher.get(key):
            run_launcher[name] = convert(launcher[key])
    run_k8s = launcher.get("runK8sConfig") or {}
    sections = {
        "containerConfig": "container_config",
        "podSpecConfig": "pod_spec_config",
        "podTemplateSpecMetadata": "pod_template_spec_metadata",
        "jobSpecConfig": "job_spec_config",
        "jobMetadata": "job_metadata",
    }
    if run_k8s:
        run_launcher["run_k8s_config"] = {sections[k]: v for k, v in run_k8s.items() if v}

    daemon = values["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    coordinator: dict[str, Any] = {"max_concurrent_runs": queued.get("maxConcurrentRuns") or -1}
    if queued.get("tagConcurrencyLimits"):
        coordinator["tag_concurrency_limits"] = queued["tagConcurrencyLimits"]
    monitoring = daemon["runMonitoring"]
    run_monitoring = {
        "enabled": monitoring["enabled"],
        "start_timeout_seconds": monitoring["startTimeoutSeconds"],
        "poll_interval_seconds": monitoring.get("pollIntervalSeconds", 120),
    }
    if monitoring.get("cancelTimeoutSeconds") is not None:
        run_monitoring["cancel_timeout_seconds"] = monitoring["cancelTimeoutSeconds"]
    if monitoring.get("maxResumeRunAttempts") is not None:
        run_monitoring["max_resume_run_attempts"] = monitoring["maxResumeRunAttempts"]
    retries = daemon["runRetries"]
    return {
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": run_launcher},
        # The chart names the class by a module path that moved between Dagster versions; the
        # class and its config are the same.
        "run_coordinator": {"module": "dagster", "class": "QueuedRunCoordinator", "config": coordinator},
        "run_monitoring": run_monitoring,
        "run_retries": {"enabled": retries["enabled"], "max_retries": retries.get("maxRetries", 0)},
    }


def code_location_container_context(values: dict[str, Any]) -> dict[str, Any]:
    """The container context the chart gives the code server (``DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT``)
    when ``includeConfigInLaunchedRuns`` is on; Dagster stores it on every run launched from there.
    """
    deployment = code_deployment(values)
    if not deployment.get("includeConfigInLaunchedRuns", {"enabled": True})["enabled"]:
        return {}
    k8s: dict[str, Any] = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [
            f"{RELEASE}-dagster-user-deployments-{deployment['name']}-user-env",
            *_names(deployment.get("envConfigMaps")),
        ],
        "namespace": NAMESPACE,
        "service_account_name": f"{RELEASE}-dagster-user-deployments-user-deployments",
        "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
    }
    if deployment.get("envSecrets"):
        k8s["env_secrets"] = _names(deployment["envSecrets"])
    for key, name in (
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
        ("schedulerName", "scheduler_name"),
    ):
        if deployment.get(key):
            k8s[name] = deployment[key]
    if isinstance(deployment.get("env"), list) and deployment["env"]:
        k8s["env"] = deployment["env"]
    if deployment.get("annotations"):
        k8s["run_k8s_config"]["pod_template_spec_metadata"] = {"annotations": deployment["annotations"]}
    return {"k8s": k8s}
