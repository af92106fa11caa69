"""deploy/: the image's Dockerfile and the Helm values parse, use only keys the chart knows, load
into a real Dagster instance, and agree with the environment variables the code reads.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster_k8s import K8sRunLauncher
from dagster_postgres.utils import get_conn_string
from sqlalchemy.engine import make_url

from mlops_assets.definitions import build_definitions
from resources.settings import Settings, build_resources
from tests.k8s import (
    DEPLOY,
    DOCKERFILE,
    KUBECONFIG,
    MODEL,
    ROOT,
    VALUES_FILE,
    code_deployment,
    image_of,
    instance_config,
    load_values,
    write_pipeline,
)

# The chart's values schema (helm/dagster/schema/schema/charts/... in dagster-io/dagster) for the
# sections our values touch. runMonitoring and runRetries are free-form maps there: their keys are
# the ones configmap-instance.yaml reads, and a misspelt one would be silently ignored.
CHART_KEYS: dict[str, set[str]] = {
    "": {
        "dagsterWebserver",
        "dagster-user-deployments",
        "postgresql",
        "generatePostgresqlPasswordSecret",
        "generateCeleryConfigSecret",
        "rabbitmq",
        "redis",
        "flower",
        "ingress",
        "imagePullSecrets",
        "computeLogManager",
        "scheduler",
        "runLauncher",
        "pythonLogs",
        "dagsterDaemon",
        "busybox",
        "migrate",
        "telemetry",
        "serviceAccount",
        "global",
        "retention",
        "additionalInstanceConfig",
    },
    "global": {"postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName"},
    "dagster-user-deployments": {"enabled", "enableSubchart", "imagePullSecrets", "deployments"},
    "dagster-user-deployments.deployments[]": {
        "name",
        "image",
        "dagsterApiGrpcArgs",
        "codeServerArgs",
        "includeConfigInLaunchedRuns",
        "port",
        "env",
        "envConfigMaps",
        "envSecrets",
        "annotations",
        "nodeSelector",
        "affinity",
        "tolerations",
        "podSecurityContext",
        "securityContext",
        "resources",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "labels",
        "volumeMounts",
        "volumes",
        "schedulerName",
    },
    "dagster-user-deployments.deployments[].image": {"repository", "tag", "pullPolicy"},
    "dagster-user-deployments.deployments[].includeConfigInLaunchedRuns": {"enabled"},
    "runLauncher": {"type", "config"},
    "runLauncher.config": {"celeryK8sRunLauncher", "k8sRunLauncher", "customRunLauncher"},
    "runLauncher.config.k8sRunLauncher": {
        "image",
        "imagePullPolicy",
        "jobNamespace",
        "loadInclusterConfig",
        "kubeconfigFile",
        "envConfigMaps",
        "envSecrets",
        "envVars",
        "volumeMounts",
        "volumes",
        "labels",
        "failPodOnRunFailure",
        "resources",
        "schedulerName",
        "securityContext",
        "runK8sConfig",
    },
    "runLauncher.config.k8sRunLauncher.runK8sConfig": {
        "containerConfig",
        "podSpecConfig",
        "podTemplateSpecMetadata",
        "jobSpecConfig",
        "jobMetadata",
    },
    "postgresql": {
        "image",
        "enabled",
        "postgresqlHost",
        "postgresqlUsername",
        "postgresqlPassword",
        "postgresqlDatabase",
        "postgresqlParams",
        "postgresqlScheme",
        "service",
    },
    "postgresql.service": {"port"},
    "dagsterDaemon": {
        "enabled",
        "image",
        "runCoordinator",
        "heartbeatTolerance",
        "env",
        "envConfigMaps",
        "envSecrets",
        "deploymentLabels",
        "labels",
        "nodeSelector",
        "affinity",
        "tolerations",
        "podSecurityContext",
        "securityContext",
        "resources",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "annotations",
        "runMonitoring",
        "runRetries",
        "sensors",
        "schedules",
        "schedulerName",
        "volumeMounts",
        "volumes",
    },
    "dagsterDaemon.runCoordinator": {"enabled", "type", "config"},
    "dagsterDaemon.runCoordinator.config": {"queuedRunCoordinator", "customRunCoordinator"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator": {
        "maxConcurrentRuns",
        "tagConcurrencyLimits",
        "dequeueIntervalSeconds",
        "dequeueNumWorkers",
        "dequeueUseThreads",
    },
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[]": {"key", "value", "limit"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[].value": {
        "applyLimitPerUniqueValue"
    },
    "dagsterDaemon.runMonitoring": {
        "enabled",
        "startTimeoutSeconds",
        "cancelTimeoutSeconds",
        "maxResumeRunAttempts",
        "pollIntervalSeconds",
        "freeSlotsAfterRunEndSeconds",
    },
    "dagsterDaemon.runRetries": {"enabled", "maxRetries"},
}

# Read by MLflow itself (authenticated tracking servers), not by our code.
MLFLOW_OWN = {"MLFLOW_TRACKING_TOKEN"}
SECRET_NAME = re.compile(r"\b(?:MLOPS|MLFLOW)_[A-Z0-9_]+\b")
PACKAGES = ("mlops_assets", "resources", "sensors")


def checked_paths(node: Any, path: str = "") -> list[tuple[str, str]]:
    """(section, key) for every key of ``node`` that lies in a section CHART_KEYS describes."""
    found = []
    if isinstance(node, dict):
        described = path in CHART_KEYS
        for k, v in node.items():
            if described:
                found.append((path, k))
            if described or path == "":
                found += checked_paths(v, f"{path}.{k}" if path else k)
    elif isinstance(node, list):
        for item in node:
            found += checked_paths(item, f"{path}[]")
    return found


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in logical]


def env_assignments(instructions: list[tuple[str, str]], kind: str) -> dict[str, str]:
    pairs = [word.split("=", 1) for op, args in instructions if op == kind for word in shlex.split(args)]
    return {p[0]: p[1] if len(p) > 1 else "" for p in pairs}


def prod_env_vars() -> set[str]:
    """What the production resources read from the environment: every ``dg.EnvVar`` field of them,
    with the alert webhook configured (resources/settings.py, resources/alerts.py).
    """
    resources = build_resources(Settings(env="prod", home=Path("."), pipelines=None, alert_webhook=True))
    return {
        value.env_var_name
        for resource in resources.values()
        for name in type(resource).model_fields
        if isinstance(value := getattr(resource, name), dg.EnvVar)
    }


def read_in_code(name: str) -> bool:
    return any(name in path.read_text() for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_values_parse_and_use_only_keys_the_chart_knows() -> None:
    values = load_values()
    unknown = [f"{section}.{k}".lstrip(".") for section, k in checked_paths(values) if k not in CHART_KEYS[section]]
    assert unknown == []
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert code_deployment(values)["dagsterApiGrpcArgs"] == ["-m", "mlops_assets.definitions"]
    assert "1.13.27" in VALUES_FILE.read_text().split("---")[0], "say which chart version the values target"


def test_values_configure_a_real_dagster_instance(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    with dg.instance_for_test(overrides=instance_config(load_values(), kubeconfig=kubeconfig)) as instance:
        assert isinstance(instance.run_launcher, K8sRunLauncher)
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds >= 300
        assert instance.run_monitoring_cancel_timeout_seconds > 0
        assert instance.run_retries_enabled and instance.run_retries_max_retries >= 1


def test_dagster_storage_url_uses_an_installed_postgres_driver() -> None:
    """The chart renders ``postgres_db`` from these values; the URL dagster-postgres builds from it
    must name a driver this image has (a bare postgresql:// means psycopg 3 under SQLAlchemy 2.1).
    """
    pg = load_values()["postgresql"]
    url = get_conn_string(
        username=pg["postgresqlUsername"],
        password="secret",
        hostname=pg["postgresqlHost"],
        db_name=pg["postgresqlDatabase"],
        port=str(pg["service"]["port"]),
        params=pg.get("postgresqlParams"),
        scheme=pg.get("postgresqlScheme") or "postgresql",
    )
    dialect = make_url(url).get_dialect()
    dialect.import_dbapi()  # raises ModuleNotFoundError naming the missing driver


def test_one_retrain_per_model_at_a_time(tmp_path: Path) -> None:
    limits = load_values()["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    per_model = [lim for lim in limits if lim.get("value") == {"applyLimitPerUniqueValue": True} and lim["limit"] == 1]
    assert per_model, "no tag limit of one run per unique value"
    spec = write_pipeline(tmp_path)
    settings = Settings.from_env({"MLOPS_HOME": str(tmp_path / "home"), "MLOPS_PIPELINES": str(spec)})
    retrain = build_definitions(settings).resolve_job_def(f"{MODEL}_retrain_job")
    # The limit's tag is on the retrain job itself, so every run of it (sensor, launchpad, retry)
    # carries it, with a value of its own per model.
    assert any(retrain.tags.get(lim["key"]) == MODEL for lim in per_model), retrain.tags


def test_the_secret_documents_what_the_code_reads() -> None:
    text = VALUES_FILE.read_text()
    deployment = code_deployment(load_values())
    (secret,) = [s["name"] for s in deployment["envSecrets"]]
    read = prod_env_vars()
    assert read >= {"MLOPS_LAKE_URI", "MLFLOW_TRACKING_URI", "MLOPS_LANDING_DIR", "MLOPS_ALERT_WEBHOOK"}
    secret_doc = text[text.index(f"#   {secret}") : text.index("---")]
    assert sorted(n for n in read if n not in secret_doc) == []
    documented = set(SECRET_NAME.findall(secret_doc))
    assert sorted(n for n in documented - MLFLOW_OWN if not read_in_code(n)) == [], "documented but never read"
    # Credentials reach pods only from Secrets, never as literals in the values.
    assert not {e.get("name") for e in deployment.get("env") or []} & documented
    assert "postgresqlPassword" not in load_values()["postgresql"]


def test_dockerfile_builds_a_non_root_prod_image_without_secrets() -> None:
    instructions = dockerfile_instructions()
    ops = [op for op, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert ops.count("FROM") == 1
    assert "ENTRYPOINT" not in ops, "the chart and dagster-k8s start every container through its args"
    runs = [args for op, args in instructions if op == "RUN"]
    torch = next(r for r in runs if "torch==" in r)
    assert '--index-url "${TORCH_INDEX}"' in torch
    assert any(re.search(r"\bpip install \.(\s|$)", r) for r in runs)
    assert runs.index(torch) < next(i for i, r in enumerate(runs) if "pip install ." in r), "torch before the project"
    args = env_assignments(instructions, "ARG")
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    env = env_assignments(instructions, "ENV")
    assert env["MLOPS_ENV"] == "prod"
    read_at_load = set(re.findall(r'environ\.get\("(\w+)"', (ROOT / "resources" / "settings.py").read_text()))
    assert {n for n in env if n.startswith("MLOPS_")} <= read_at_load, "the image sets a variable nothing reads"
    baked = (set(env) | set(args)) & (prod_env_vars() | MLFLOW_OWN | {"MLOPS_REGISTRY_LOCK_URI"})
    assert baked == set(), "secrets must come from the cluster, not the image"
    user = [a for op, a in instructions if op == "USER"][-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root user, so that runAsNonRoot can verify it"
    last_build_step = max(i for i, op in enumerate(ops) if op in ("RUN", "COPY"))
    assert ops.index("USER") > last_build_step, "the build runs as root, the image does not"
    cmd = next(a for op, a in instructions if op == "CMD")
    assert cmd.endswith('"-m", "mlops_assets.definitions"]')


def test_dockerignore_lets_in_what_the_dockerfile_copies() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [p.strip() for p in lines if p.strip() and not p.startswith("#")]

    def sent(path: str) -> bool:
        included = True
        for pattern in patterns:  # the last matching pattern wins, as in Docker
            negated = pattern.startswith("!")
            body = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, body) or path.startswith(body + "/"):
                included = negated
        return included

    copied = [src for op, a in dockerfile_instructions() if op == "COPY" for src in shlex.split(a)[:-1]]
    assert copied and all((ROOT / src).exists() and sent(src) for src in copied), copied
    assert not sent(".venv") and not sent(".mlops") and not sent(".env")


SERVE_FILE = DEPLOY / "k8s" / "serve.yaml"


def serve_manifests() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(SERVE_FILE.read_text()) if d]
    return {d["kind"]: d for d in docs}


def test_the_serve_deployment_runs_a_real_mlops_serve_behind_its_probes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlops_assets.cli as cli
    from mlops_assets.contract import SERVE_HEALTH_PATH, serve_service
    from mlops_assets.serving.server import ServeError, bearer_token
    from mlops_assets.spec import load_specs

    manifests = serve_manifests()
    assert sorted(manifests) == ["Deployment", "Service"]
    deployment, service = manifests["Deployment"], manifests["Service"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    command = container["command"]

    # The command is what the real CLI parses as `mlops serve <model> --host --port`.
    served = []
    monkeypatch.setattr(cli, "serve_command", lambda settings, spec, host, port: served.append((spec, host, port)) or 0)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.delenv("MLOPS_PIPELINES", raising=False)
    monkeypatch.delenv("MLOPS_ENV", raising=False)
    assert command[0] == "mlops" and command[1] == "serve"
    assert cli.main(command[1:]) == 0
    ((spec, host, port),) = served
    (shipped,) = load_specs(None)
    assert spec.name == shipped.name
    assert host == "0.0.0.0", "bound beyond loopback: the Service reaches it"

    # Probes and the Service hit the port the server listens on and the path it serves.
    (http,) = container["ports"]
    assert http["containerPort"] == port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == SERVE_HEALTH_PATH, probe
        assert get["port"] in (http["name"], port), probe
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in (http["name"], port)
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == serve_service(shipped.name)
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()

    # Replicas each follow the alias: nothing pins a version.
    assert deployment["spec"]["replicas"] >= 2
    assert not [e for e in container["env"] if "VERSION" in e["name"]]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    # The token comes from a Secret through the variable the server reads; without it a
    # non-loopback bind refuses to start.
    env = {e["name"]: e for e in container["env"]}
    token = env[shipped.serving.token_env]["valueFrom"]["secretKeyRef"]
    assert token["name"] and token["key"]
    assert bearer_token(host, shipped.serving.token_env, {shipped.serving.token_env: "t"}) == "t"
    with pytest.raises(ServeError):
        bearer_token(host, shipped.serving.token_env, {})
    assert [s["secretRef"]["name"] for s in container["envFrom"]] == [
        s["name"] for s in code_deployment(load_values())["envSecrets"]
    ]

    # The image of the Helm values, resources set, non-root like the chart's pods.
    assert container["image"] == image_of(code_deployment(load_values()))
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert "memory" in container["resources"]["limits"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # The request log lands files in the landing folder: a mounted volume, named by MLOPS_LANDING_DIR.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert env["MLOPS_LANDING_DIR"]["value"] in mounts.values()
    (landing,) = [n for n, path in mounts.items() if path == env["MLOPS_LANDING_DIR"]["value"]]
    assert "persistentVolumeClaim" in volumes[landing]


def test_the_code_server_and_run_pods_mount_the_landing_folder_the_replicas_land_in() -> None:
    """The landing sensor runs in the code server and raw_batch in run pods (which get the code
    server's volumes): both see the claim the serve replicas write their request logs to, at the
    path the replicas name as MLOPS_LANDING_DIR, which the Secret must then hold too."""
    pod = serve_manifests()["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    landing_dir = {e["name"]: e for e in container["env"]}["MLOPS_LANDING_DIR"]["value"]
    (serve_mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == landing_dir]
    claim = {v["name"]: v for v in pod["spec"]["volumes"]}[serve_mount["name"]]["persistentVolumeClaim"]["claimName"]

    deployment = code_deployment(load_values())
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True, "run pods get the volumes"
    volumes = [v for v in deployment["volumes"] if "persistentVolumeClaim" in v]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in volumes}
    mounted = [m for m in deployment["volumeMounts"] if claims.get(m["name"]) == claim]
    assert [m["mountPath"] for m in mounted] == [landing_dir]
    secret_doc = VALUES_FILE.read_text().split("---")[0]
    assert f"MLOPS_LANDING_DIR\n#                               ({landing_dir}" in secret_doc
