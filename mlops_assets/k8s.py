"""Kubernetes placement of the training step (dagster-k8s ``dagster-k8s/config`` op tags).

Under ``k8s_job_executor`` every step runs in its own pod and op tags are the one place that
reaches that pod on every launch path (UI, CLI, sensors, backfills); job-level tags do not reach
step pods (docs/kubernetes.md, from dagster-k8s 0.29.27's executor.py).
"""

from __future__ import annotations

from typing import Any

from mlops_assets.spec import TrainingSpec

K8S_CONFIG_TAG = "dagster-k8s/config"


def training_op_tags(training: TrainingSpec, *, on_kubernetes: bool) -> dict[str, Any]:
    """The op tags of the training step: GPU requests, node selector and tolerations."""
    if not on_kubernetes:
        return {}
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if training.cpu:
        requests["cpu"] = training.cpu
    if training.memory:
        requests["memory"] = limits["memory"] = training.memory
    pod_spec: dict[str, Any] = {}
    if training.gpus > 0:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(training.gpus)
        if training.tolerations:
            pod_spec["tolerations"] = [dict(t) for t in training.tolerations]
    if training.node_selector:
        pod_spec["node_selector"] = dict(training.node_selector)
    config: dict[str, Any] = {}
    if requests or limits:
        config["container_config"] = {"resources": {"requests": requests, "limits": limits}}
    if pod_spec:
        config["pod_spec_config"] = pod_spec
    return {K8S_CONFIG_TAG: config} if config else {}
