"""Governance: rolling the champion back, a model card per version, and the explanation of a batch.

A rollback moves ``champion`` through the same compare-and-set as a promotion (``MlflowRegistry``),
so it is serialized with promotions, recorded in the champion history and materialized here with
who, when and why. Model cards and explanations are built from the same lineage as
``mlops explain`` (``mlops_assets.explain``).
"""

import dagster as dg
from pydantic import Field

from mlops_assets.assets.common import ModelPipeline, retry_on_tracking_outage, table
from mlops_assets.assets.evaluation import champion_history_table, registry_pool
from mlops_assets.contract import TAG_TRIGGER
from resources.lake import Lake
from resources.registry import MlflowRegistry


class RollbackConfig(dg.Config):
    """Where the champion goes back to, and why."""

    to_version: str = Field(
        default="",
        description="The version to make champion again; it must have been champion before. "
        "Empty: the version that was champion before the current one.",
    )
    reason: str = Field(description="Why (required, non-empty): recorded in the champion history.")


def build_governance_assets(pipeline: ModelPipeline) -> list[dg.AssetsDefinition]:
    spec = pipeline.spec

    @dg.asset(
        key=pipeline.key("champion_rollback"),
        group_name=pipeline.name,
        deps=[pipeline.key("promotion")],
        kinds={"mlflow"},
        pool=registry_pool(pipeline),
        description=(
            "A rollback of alias `champion` to an earlier champion, with its reason.\n\n"
            "Config `to_version` (empty: the previous champion) and `reason` (required). The move "
            "is a compare-and-set against the champion seen when the run starts, serialized with "
            "promotions, and recorded in the champion history; the next predictions use the "
            "version rolled back to. Each materialization is one rollback."
        ),
    )
    @retry_on_tracking_outage
    def champion_rollback(
        context: dg.AssetExecutionContext, config: RollbackConfig, lake: Lake, registry: MlflowRegistry
    ) -> dg.MaterializeResult:
        from resources.registry import CHAMPION, PromotionConflict

        if not config.reason.strip():
            raise dg.Failure(f"{spec.name}: a rollback needs a non-empty reason; the champion did not move")
        current = registry.by_alias(spec.name, CHAMPION)
        if current is None:
            raise dg.Failure(f"{spec.name}: no version is champion, so there is nothing to roll back")
        try:
            move = registry.rollback(
                name=spec.name,
                reason=config.reason.strip(),
                to_version=config.to_version.strip() or None,
                expected_champion=current.version,
                dagster_run_id=context.run_id,
            )
        except (ValueError, LookupError, PromotionConflict) as e:
            raise dg.Failure(f"{spec.name}: rollback from version {current.version} refused: {e}") from e
        context.log.warning(
            "%s: champion rolled back from version %s to %s: %s",
            spec.name,
            move.from_version,
            move.to_version,
            move.reason,
        )
        card_uri = _publish_card(spec.name, move.to_version, lake, registry, context.instance)
        return dg.MaterializeResult(
            metadata={
                "from_version": move.from_version or "(none)",
                "to_version": move.to_version,
                "reason": move.reason,
                "at": move.at.isoformat(timespec="seconds"),
                "actor": move.actor,
                "model_card": card_uri,
                "champion_history": champion_history_table(registry, spec.name),
            }
        )

    @dg.asset(
        key=pipeline.key("model_card"),
        group_name=pipeline.name,
        deps=[pipeline.key("promotion")],
        kinds={"mlflow"},
        description=(
            "A model card (markdown) for the latest candidate and the current champion: inputs, "
            "training batches with fingerprints and validation, evaluation, gates, decision and "
            "champion history. Logged to each version's MLflow run as `mlops/model_card.md` and "
            "kept in the lake as `model_card/v<version>.md`; the champion's card is shown here."
        ),
    )
    @retry_on_tracking_outage
    def model_card(context: dg.AssetExecutionContext, lake: Lake, registry: MlflowRegistry) -> dg.MaterializeResult:
        from resources.registry import CHALLENGER, CHAMPION

        aliases = {role: registry.by_alias(spec.name, role) for role in (CHALLENGER, CHAMPION)}
        # A version that is both keeps the later role: champion.
        versions = {m.version: role for role, m in aliases.items() if m is not None}
        if not versions:
            raise dg.Failure(f"{spec.name}: no challenger or champion yet; materialize model first")
        rows, champion_card = [], ""
        for version, role in versions.items():
            uri = _publish_card(spec.name, version, lake, registry, context.instance)
            rows.append(
                {
                    "version": version,
                    "alias": role,
                    "mlflow_artifact": uri,
                    "lake": lake.uri(spec.name, "model_card", f"v{version}", "md"),
                }
            )
            if role == CHAMPION:
                champion_card = lake.read_bytes(spec.name, "model_card", f"v{version}", "md").decode()
        context.log.info("%s: model cards of versions %s published", spec.name, sorted(versions))
        return dg.MaterializeResult(
            metadata={
                "cards": table(rows, ["version", "alias", "mlflow_artifact", "lake"]),
                "champion_card": dg.MetadataValue.md(champion_card or "(no champion yet)"),
            }
        )

    @dg.asset(
        key=pipeline.key("explanation"),
        group_name=pipeline.name,
        partitions_def=pipeline.partitions,
        deps=[pipeline.key("predictions")],
        kinds={"mlflow"},
        description=(
            "Which model version made a batch's predictions, what data trained it (batches, "
            "fingerprints, validation, drift), how it passed testing (metrics, gates, decision) "
            "and its champion history: what `mlops explain <model> --batch <batch>` prints."
        ),
    )
    @retry_on_tracking_outage
    def explanation(context: dg.AssetExecutionContext, lake: Lake, registry: MlflowRegistry) -> dg.MaterializeResult:
        from mlops_assets.explain import explain, render_text

        batch = context.partition_key
        try:
            doc = explain(model=spec.name, registry=registry, lake=lake, instance=context.instance, batch=batch)
        except LookupError as e:
            raise dg.Failure(str(e)) from e
        lake.write_json(spec.name, "explanation", doc, batch)
        text = render_text(doc)
        return dg.MaterializeResult(
            metadata={
                "model_version": doc["version"]["version"],
                "training_batches": dg.MetadataValue.json([b["batch"] for b in doc["training_data"]["batches"]]),
                "explanation": dg.MetadataValue.md(f"```\n{text}\n```"),
                "notes": dg.MetadataValue.json(doc["notes"]),
            }
        )

    return [champion_rollback, model_card, explanation]


def build_rollback_job(pipeline: ModelPipeline):  # noqa: ANN201 - dagster exports no name for the unresolved job type
    """``<model>_rollback_job``: the launchpad (and ``mlops rollback``) path for a rollback."""
    return dg.define_asset_job(
        f"{pipeline.name}_rollback_job",
        selection=dg.AssetSelection.assets(pipeline.key("champion_rollback")),
        tags={**pipeline.tags, TAG_TRIGGER: "manual"},
        description=f"Moves {pipeline.name}'s champion back to an earlier champion (config: to_version, reason).",
    )


def _publish_card(name: str, version: str, lake: Lake, registry: MlflowRegistry, instance: dg.DagsterInstance) -> str:
    from mlops_assets.explain import explain, render_model_card

    card = render_model_card(explain(model=name, registry=registry, lake=lake, instance=instance, version=version))
    lake.write_bytes(name, "model_card", card.encode(), f"v{version}", "md")
    return registry.log_run_text(registry.get(name, version).run_id, "mlops/model_card.md", card)
