"""The online deployment as an asset: which version serves, where, with what canary and shadow.

``mlops serve`` replicas follow the registry's aliases by themselves; this asset records what
they serve after each promotion or rollback, so the lineage reads promotion -> deployment and the
UI answers "what is live?" without asking a server. It reads two aliases and the spec: no model is
loaded and no ML library imported.
"""

import os

import dagster as dg

from mlops_assets.assets.common import ModelPipeline, retry_on_tracking_outage
from mlops_assets.contract import (
    CHALLENGER,
    CHAMPION,
    SERVE_PORT,
    SERVE_URL_ENV,
    Asset,
    Meta,
    serve_service,
)
from resources.lake import Lake
from resources.registry import MlflowRegistry


def serving_endpoint(model: str, environ: dict[str, str] | None = None) -> str:
    """Where clients reach ``model``: ``$MLOPS_SERVE_URL`` when set, else the default of the
    environment (the Kubernetes Service of deploy/k8s/ under ``MLOPS_ENV=prod``, loopback locally)."""
    env = os.environ if environ is None else environ
    if env.get(SERVE_URL_ENV):
        return env[SERVE_URL_ENV]
    if env.get("MLOPS_ENV") == "prod":
        return f"http://{serve_service(model)}:{SERVE_PORT}"
    return f"http://127.0.0.1:{SERVE_PORT}"


def build_online_assets(pipeline: ModelPipeline) -> list[dg.AssetsDefinition]:
    spec = pipeline.spec
    serving = spec.serving

    @dg.asset(
        key=pipeline.key(Asset.DEPLOYMENT),
        group_name=pipeline.name,
        deps=[pipeline.key(Asset.PROMOTION), pipeline.key(Asset.CHAMPION_ROLLBACK)],
        kinds={"mlflow", "kubernetes"},
        description=(
            f"What `mlops serve {spec.name}` answers with: the version behind alias `{CHAMPION}`, "
            f"the `{CHALLENGER}` that canary and shadow traffic go to, the endpoint (`{SERVE_URL_ENV}`, "
            f"else Service `{serve_service(spec.name)}` under MLOPS_ENV=prod, else loopback) and the "
            "spec's `serving` settings. Materialized by every retrain and rollback; the servers "
            "themselves follow the aliases within `serving.poll_seconds`."
        ),
    )
    @retry_on_tracking_outage
    def deployment(context: dg.AssetExecutionContext, lake: Lake, registry: MlflowRegistry) -> dg.MaterializeResult:
        record = deployment_record(pipeline, registry)
        lake.write_json(spec.name, Asset.DEPLOYMENT, record)
        context.log.info(
            "%s: version %s serves at %s", spec.name, record["champion_version"] or "(none)", record["endpoint"]
        )
        return dg.MaterializeResult(
            metadata={
                Meta.MODEL_VERSION: record["champion_version"] or "",
                "challenger_version": record["challenger_version"] or "",
                "endpoint": dg.MetadataValue.url(record["endpoint"]),
                "canary_share": serving.canary.share,
                "canary_key": serving.canary.key,
                "shadow": serving.shadow,
                "challenger_traffic": record["challenger_traffic"],
                "request_log": dg.MetadataValue.json(record["request_log"]),
                "lake": dg.MetadataValue.path(lake.uri(spec.name, Asset.DEPLOYMENT, None, "json")),
            }
        )

    return [deployment]


def deployment_record(pipeline: ModelPipeline, registry: MlflowRegistry) -> dict[str, object]:
    """The deployment as a JSON document (also in the lake as ``deployment/latest.json``)."""
    spec = pipeline.spec
    serving = spec.serving
    champion = registry.by_alias(spec.name, CHAMPION)
    challenger = registry.by_alias(spec.name, CHALLENGER)
    wants = serving.canary.share > 0 or serving.shadow
    if not wants:
        traffic = "none: serving.canary.share is 0 and serving.shadow is off"
    elif challenger is None or champion is None or challenger.version == champion.version:
        traffic = "idle: no challenger distinct from the champion"
    else:
        parts = [f"canary {serving.canary.share:.0%} by {serving.canary.key}"] if serving.canary.share > 0 else []
        parts += ["shadow on every request"] if serving.shadow else []
        traffic = f"version {challenger.version}: " + ", ".join(parts)
    return {
        "model": spec.name,
        "champion_version": champion.version if champion else None,
        "champion_uri": champion.uri if champion else None,
        "challenger_version": challenger.version if challenger else None,
        "endpoint": serving_endpoint(spec.name),
        "canary": {"share": serving.canary.share, "key": serving.canary.key},
        "shadow": serving.shadow,
        "challenger_traffic": traffic,
        "request_log": serving.request_log.model_dump(),
    }
