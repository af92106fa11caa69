"""Evaluation of the challenger against the champion, and the promotion decision.

The decision is an asset (TFX's blessing): its materializations are the history of every
promotion attempt, with candidate, champion, deltas, fairness gaps, lineage gates, the decision
and its reasons. The decision about each version is also kept as ``promotion/v<version>.json``
in the lake and as artifact ``mlops/decision.json`` of the version's MLflow run, which is what
``mlops explain`` and the model card read.
"""

import json

import dagster as dg
from pydantic import Field

from mlops_assets.assets.common import ModelPipeline, retry_on_tracking_outage, table
from resources.lake import Lake
from resources.registry import MlflowRegistry


class PromotionConfig(dg.Config):
    """An explicit, recorded override of failed promotion gates."""

    override: bool = Field(
        default=False,
        description="Promote the candidate even though gates failed. Needs override_reason; the "
        "override, its reason and the failed gates are recorded in the decision and the champion "
        "history, and the move still compares-and-sets against the champion of the evaluation.",
    )
    override_reason: str = Field(default="", description="Why the gates are overridden (required with override).")


def registry_pool(pipeline: ModelPipeline) -> str:
    """The Dagster pool of every step that moves a model's champion (limit it to 1)."""
    return f"{pipeline.name}_registry"


def build_evaluation_assets(pipeline: ModelPipeline) -> list[dg.AssetsDefinition]:
    spec = pipeline.spec
    sensitive = spec.sensitive_features

    @dg.asset(
        key=pipeline.key("evaluation"),
        group_name=pipeline.name,
        deps=[pipeline.key("model"), pipeline.key("training_dataset")],
        kinds={"fairlearn"},
        description=(
            "The challenger and the current champion scored on the same holdout: ROC AUC, "
            "accuracy, F1, log loss, calibration error and Brier score; per group of "
            f"{', '.join(sensitive) or '(no sensitive feature)'} through fairlearn's MetricFrame, "
            "with demographic parity and equalized odds differences."
        ),
    )
    @retry_on_tracking_outage
    def evaluation(context: dg.AssetExecutionContext, lake: Lake, registry: MlflowRegistry) -> dg.MaterializeResult:
        from mlops_assets.ml.data import LABEL
        from mlops_assets.ml.evaluation import evaluate
        from mlops_assets.ml.trainers import prepare_inputs
        from resources.registry import CHALLENGER, CHAMPION

        holdout = lake.read_frame(spec.name, "training_dataset", "holdout")
        y = holdout[LABEL].to_numpy(dtype="int64")
        inputs = prepare_inputs(holdout, pipeline.columns.numeric, pipeline.columns.categorical)
        candidate = registry.by_alias(spec.name, CHALLENGER)
        if candidate is None:
            raise dg.Failure(f"{spec.name}: no version carries alias '{CHALLENGER}'; materialize model first")
        champion = registry.by_alias(spec.name, CHAMPION)
        report: dict[str, object] = {"holdout_rows": len(holdout), "champion": None}
        rows = []
        for role, version in (("candidate", candidate), ("champion", champion)):
            if version is None:
                continue
            proba = registry.load_model(version).predict_proba(inputs)[:, 1]
            result = evaluate(y, proba, holdout[sensitive])
            report[role] = {"version": version.version, "evaluation": result.to_dict()}
            rows.append(
                {
                    "model": f"{role} v{version.version}",
                    **result.metrics,
                    "parity_gap": result.worst("demographic_parity_difference"),
                    "odds_gap": result.worst("equalized_odds_difference"),
                }
            )
            context.log.info("%s %s v%s: %s", spec.name, role, version.version, result.metrics)
        lake.write_json(spec.name, "evaluation", report)
        metrics = report["candidate"]["evaluation"]["metrics"]  # type: ignore[index]
        return dg.MaterializeResult(
            metadata={
                "candidate_version": candidate.version,
                "champion_version": champion.version if champion else "(none)",
                "holdout_rows": len(holdout),
                **{f"candidate_{k}": v for k, v in metrics.items() if v is not None},
                "comparison": table(
                    rows,
                    [
                        "model",
                        "roc_auc",
                        "accuracy",
                        "f1",
                        "log_loss",
                        "calibration_error",
                        "brier",
                        "parity_gap",
                        "odds_gap",
                    ],
                ),
                "candidate_by_group": _group_table(report["candidate"]["evaluation"]),  # type: ignore[index]
            }
        )

    @dg.asset(
        key=pipeline.key("promotion"),
        group_name=pipeline.name,
        deps=[evaluation],
        kinds={"mlflow"},
        pool=registry_pool(pipeline),
        description=(
            "The decision whether the challenger replaces the champion, and its execution.\n\n"
            "Every gate is listed with its value, limit and margin: the candidate has a signature; "
            "every training batch is validated data (validated in this Dagster instance, no later "
            "failed validation, fingerprint equal to a features materialization); the spec's metric "
            "floors, allowed regression against the champion and fairness limits. Only a blessed "
            "candidate moves alias `champion`, and only if the champion is still the version the "
            "decision was made against (compare-and-set under the registry lock). Config `override` "
            "(with a non-empty `override_reason`) promotes despite failed gates; the override, its "
            "reason and the failed gates are recorded in the decision and the champion history."
        ),
    )
    @retry_on_tracking_outage
    def promotion(
        context: dg.AssetExecutionContext, config: PromotionConfig, lake: Lake, registry: MlflowRegistry
    ) -> dg.MaterializeResult:
        import datetime as dt

        from mlops_assets.explain import suite_checks, training_batch_evidence
        from mlops_assets.ml.evaluation import Evaluation
        from mlops_assets.ml.promotion import decide
        from resources.registry import CHALLENGER, PromotionConflict

        if config.override and not config.override_reason.strip():
            raise dg.Failure(f"{spec.name}: override=true needs a non-empty override_reason; nothing was promoted")
        if config.override_reason.strip() and not config.override:
            raise dg.Failure(
                f"{spec.name}: override_reason is set but override is false; set both or neither (nothing was promoted)"
            )
        report = lake.read_json(spec.name, "evaluation")
        candidate_report, champion_report = report["candidate"], report.get("champion")
        challenger = registry.by_alias(spec.name, CHALLENGER)
        if challenger is None or challenger.version != candidate_report["version"]:
            raise dg.Failure(
                f"{spec.name}: the evaluation is of version {candidate_report['version']} but the challenger is "
                f"version {challenger.version if challenger else '(none)'}; materialize evaluation again"
            )
        candidate = registry.get(spec.name, candidate_report["version"])
        manifest = json.loads(registry.run_artifact(candidate.run_id, "mlops/training_manifest.json"))
        checks = suite_checks(registry.run_artifact(candidate.run_id, "mlops/validation_suite.json"))
        evidence = training_batch_evidence(
            context.instance,
            model=spec.name,
            fingerprints=manifest["fingerprints"],
            blocking_checks=[c for c, severity in checks.items() if severity == "error"],
        )
        decision = decide(
            candidate_version=candidate.version,
            candidate=Evaluation.from_dict(candidate_report["evaluation"]),
            champion_version=champion_report["version"] if champion_report else None,
            champion=Evaluation.from_dict(champion_report["evaluation"]) if champion_report else None,
            gates=spec.gates,
            has_signature=registry.model_signature(candidate) is not None,
            training_data=evidence,
            override_reason=config.override_reason if config.override else None,
        )
        candidate_metrics = candidate_report["evaluation"]["metrics"]
        record: dict[str, object] = {
            "model": spec.name,
            "version": candidate.version,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "dagster_run_id": context.run_id,
            "outcome": "promoted" if decision.promote else "rejected",
            "decision": decision.to_dict(),
            "training_data": [e.__dict__ for e in evidence],
            "override": {"requested": config.override, "reason": config.override_reason.strip()},
            "evaluation": {
                "holdout_rows": report.get("holdout_rows"),
                "candidate": {"version": candidate.version, "metrics": candidate_metrics},
                "champion": (
                    {"version": champion_report["version"], "metrics": champion_report["evaluation"]["metrics"]}
                    if champion_report
                    else None
                ),
            },
        }
        move = None
        if decision.promote:
            try:
                move = registry.promote(
                    name=spec.name,
                    version=decision.candidate_version,
                    expected_champion=decision.champion_version,
                    reason=decision.reasons[0],
                    dagster_run_id=context.run_id,
                    override=decision.overridden,
                    record={
                        "metrics": candidate_metrics,
                        "deltas": decision.deltas,
                        "failed_gates": [g.gate for g in decision.failed_gates],
                        "override_reason": decision.override_reason,
                    },
                )
            except PromotionConflict as e:
                _keep_record(lake, registry, candidate.run_id, {**record, "outcome": "conflict", "conflict": str(e)})
                raise dg.Failure(f"{spec.name}: version {candidate.version} was not promoted: {e}") from e
            record["champion_move"] = move.to_record()
            if decision.overridden:
                context.log.warning(
                    "%s: version %s promoted by OVERRIDE despite failed gates %s: %s",
                    spec.name,
                    candidate.version,
                    [g.gate for g in decision.failed_gates],
                    decision.override_reason,
                )
            else:
                context.log.info("%s: champion is now version %s", spec.name, decision.candidate_version)
        else:
            context.log.warning(
                "%s: version %s not promoted: %s", spec.name, decision.candidate_version, decision.reasons
            )
        latest = {**decision.to_dict(), **{k: record[k] for k in ("outcome", "at", "dagster_run_id")}}
        lake.write_json(spec.name, "promotion", latest)
        # A no-op decision ("already champion") evaluates no gate; keeping it would hide the
        # decision that did, which is what explain and the model card must show.
        record_uri = _keep_record(lake, registry, candidate.run_id, record) if decision.gates else "(unchanged)"
        champion_after = decision.candidate_version if decision.promote else decision.champion_version
        return dg.MaterializeResult(
            metadata={
                "decision": record["outcome"],
                "candidate_version": decision.candidate_version,
                "champion_before": decision.champion_version or "(none)",
                "champion_after": champion_after or "(none)",
                "overridden": decision.overridden,
                "override_reason": decision.override_reason,
                "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
                "gates": table([g.__dict__ for g in decision.gates], ["gate", "value", "limit", "passed", "detail"]),
                "training_data": table([e.__dict__ for e in evidence], ["batch", "validated", "detail"]),
                "deltas": dg.MetadataValue.json(decision.deltas),
                "champion_move": dg.MetadataValue.json(move.to_record() if move else {}),
                "champion_history": champion_history_table(registry, spec.name),
                "decision_record": record_uri,
            }
        )

    return [evaluation, promotion]


def champion_history_table(registry: MlflowRegistry, name: str, last: int = 20) -> dg.TableMetadataValue:
    """The latest champion moves, newest first."""
    moves = registry.champion_history(name)[-last:]
    return table(
        [{**m.to_record(), "at": m.at.isoformat(timespec="seconds")} for m in reversed(moves)],
        ["at", "kind", "from_version", "to_version", "dagster_run_id", "actor", "override", "reason"],
    )


def _keep_record(lake: Lake, registry: MlflowRegistry, run_id: str, record: dict) -> str:
    """The decision about a version, kept beside it: in the lake and on its MLflow run."""
    lake.write_json(str(record["model"]), "promotion", record, f"v{record['version']}")
    return registry.log_run_text(run_id, "mlops/decision.json", json.dumps(record, indent=1, default=str))


def _group_table(evaluation: dict) -> dg.TableMetadataValue:
    rows = [
        {"feature": f["feature"], "group": group, **values}
        for f in evaluation["fairness"]
        for group, values in f["by_group"].items()
    ]
    return table(
        rows, ["feature", "group", "count", "accuracy", "selection_rate", "true_positive_rate", "false_positive_rate"]
    )
