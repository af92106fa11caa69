"""Governance: rolling the champion back, a model card per version, and the explanation of a batch.

A rollback moves ``champion`` through the same compare-and-set as a promotion (``MlflowRegistry``),
so it is serialized with promotions, recorded in the champion history and materialized here with
who, when and why. Model cards and explanations are built from the same lineage as
``mlops explain`` (``mlops_assets.explain``).
"""

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from mlops_assets.assets.common import ModelPipeline, retry_on_tracking_outage, table
from mlops_assets.assets.evaluation import champion_history_table
from mlops_assets.contract import (
    CHALLENGER,
    CHAMPION,
    MANUAL,
    TAG_TRIGGER,
    Artifact,
    Asset,
    Job,
    Meta,
    artifact_path,
    registry_pool,
    version_record,
)
from mlops_assets.untrusted import md_code_block
from resources.lake import Lake
from resources.registry import MlflowRegistry

if TYPE_CHECKING:
    from resources.registry import ChampionMove


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
        key=pipeline.key(Asset.CHAMPION_ROLLBACK),
        group_name=pipeline.name,
        deps=[pipeline.key(Asset.PROMOTION)],
        kinds={"mlflow"},
        pool=registry_pool(pipeline.name),
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
        move = roll_back(context, spec.name, config, registry)
        card_uri = publish_card(spec.name, move.to_version, lake, registry, context.instance)
        return rollback_result(registry, spec.name, move, card_uri)

    @dg.asset(
        key=pipeline.key(Asset.MODEL_CARD),
        group_name=pipeline.name,
        deps=[pipeline.key(Asset.PROMOTION)],
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
        versions = carded_versions(registry, spec.name)
        rows = [card_row(spec.name, v, role, lake, registry, context.instance) for v, role in versions.items()]
        champion = next((v for v, role in versions.items() if role == CHAMPION), None)
        context.log.info("%s: model cards of versions %s published", spec.name, sorted(versions))
        return dg.MaterializeResult(
            metadata={
                "cards": table(rows, ["version", "alias", "mlflow_artifact", "lake"]),
                "champion_card": dg.MetadataValue.md(read_card(lake, spec.name, champion) or "(no champion yet)"),
            }
        )

    @dg.asset(
        key=pipeline.key(Asset.EXPLANATION),
        group_name=pipeline.name,
        partitions_def=pipeline.partitions,
        deps=[pipeline.key(Asset.PREDICTIONS), pipeline.key(Asset.ATTRIBUTIONS)],
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

        batch = pipeline.batch(context)
        try:
            doc = explain(model=spec.name, registry=registry, lake=lake, instance=context.instance, batch=batch)
        except LookupError as e:
            raise dg.Failure(str(e)) from e
        lake.write_json(spec.name, Asset.EXPLANATION, doc.to_dict(), batch)
        return dg.MaterializeResult(
            metadata={
                Meta.MODEL_VERSION: doc.version.version,
                "training_batches": dg.MetadataValue.json([b.batch for b in doc.training_data.batches]),
                "explanation": dg.MetadataValue.md(md_code_block(render_text(doc))),
                "notes": dg.MetadataValue.json(list(doc.notes)),
                # Why each row got its score: the batch's per-row attributions, linked by `row`.
                "attributions": dg.MetadataValue.path(lake.uri(spec.name, Asset.ATTRIBUTIONS, batch))
                if lake.exists(spec.name, Asset.ATTRIBUTIONS, batch)
                else dg.MetadataValue.text(f"(none yet: materialize attributions for batch {batch})"),
            }
        )

    return [champion_rollback, model_card, explanation]


def build_rollback_job(pipeline: ModelPipeline):  # noqa: ANN201 - dagster exports no name for the unresolved job type
    """``<model>_rollback_job``: the launchpad (and ``mlops rollback``) path for a rollback."""
    return dg.define_asset_job(
        Job.rollback(pipeline.name),
        # The deployment record follows the move in the same run.
        selection=dg.AssetSelection.assets(pipeline.key(Asset.CHAMPION_ROLLBACK), pipeline.key(Asset.DEPLOYMENT)),
        tags={**pipeline.tags, TAG_TRIGGER: MANUAL},
        description=f"Moves {pipeline.name}'s champion back to an earlier champion (config: to_version, reason).",
    )


def roll_back(
    context: dg.AssetExecutionContext, name: str, config: RollbackConfig, registry: MlflowRegistry
) -> "ChampionMove":
    """The rollback the config asks for, compare-and-set against the champion seen now.

    Raises:
        Failure: no reason, no champion, or the registry refused the move (it says why).
    """
    from resources.registry import PromotionConflict

    if not config.reason.strip():
        raise dg.Failure(f"{name}: a rollback needs a non-empty reason; the champion did not move")
    current = registry.by_alias(name, CHAMPION)
    if current is None:
        raise dg.Failure(f"{name}: no version is champion, so there is nothing to roll back")
    try:
        move = registry.rollback(
            name=name,
            reason=config.reason.strip(),
            to_version=config.to_version.strip() or None,
            expected_champion=current.version,
            dagster_run_id=context.run_id,
        )
    except (ValueError, LookupError, PromotionConflict) as e:
        raise dg.Failure(f"{name}: rollback from version {current.version} refused: {e}") from e
    context.log.warning(
        "%s: champion rolled back from version %s to %s: %s", name, move.from_version, move.to_version, move.reason
    )
    return move


def rollback_result(registry: MlflowRegistry, name: str, move: "ChampionMove", card_uri: str) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={
            Meta.FROM_VERSION: move.from_version or "(none)",
            Meta.TO_VERSION: move.to_version,
            Meta.REASON: move.reason,
            "at": move.at.isoformat(timespec="seconds"),
            "actor": move.actor,
            Meta.MODEL_CARD: card_uri,
            "champion_history": champion_history_table(registry, name),
        }
    )


def carded_versions(registry: MlflowRegistry, name: str) -> dict[str, str]:
    """Version -> alias of the versions that get a card: the challenger and the champion."""
    aliases = {role: registry.by_alias(name, role) for role in (CHALLENGER, CHAMPION)}
    # A version that is both keeps the later role: champion.
    versions = {m.version: role for role, m in aliases.items() if m is not None}
    if not versions:
        raise dg.Failure(f"{name}: no challenger or champion yet; materialize model first")
    return versions


def card_row(
    name: str, version: str, role: str, lake: Lake, registry: MlflowRegistry, instance: dg.DagsterInstance
) -> dict[str, str]:
    return {
        "version": version,
        "alias": role,
        "mlflow_artifact": publish_card(name, version, lake, registry, instance),
        "lake": lake.uri(name, Asset.MODEL_CARD, version_record(version), "md"),
    }


def read_card(lake: Lake, name: str, version: str | None) -> str:
    if version is None:
        return ""
    return lake.read_bytes(name, Asset.MODEL_CARD, version_record(version), "md").decode()


def publish_card(name: str, version: str, lake: Lake, registry: MlflowRegistry, instance: dg.DagsterInstance) -> str:
    """The version's model card, written to the lake and logged to its MLflow run; returns its URI."""
    from mlops_assets.explain import explain, render_model_card
    from mlops_assets.explain.attributions import render_importance, version_importance

    card = render_model_card(explain(model=name, registry=registry, lake=lake, instance=instance, version=version))
    # What the version relies on, from its training-time attribution baseline.
    importance = version_importance(registry, registry.get(name, version).run_id)
    card = f"{card.rstrip()}\n\n{render_importance(importance, markdown=True)}"
    lake.write_bytes(name, Asset.MODEL_CARD, card.encode(), version_record(version), "md")
    return registry.log_run_text(registry.get(name, version).run_id, artifact_path(Artifact.MODEL_CARD), card)
