"""Evaluation of the challenger against the champion, and the promotion decision.

The decision is an asset (TFX's blessing): its materializations are the history of every
promotion attempt, with candidate, champion, deltas, fairness gaps, the decision and its reasons.
"""

import dagster as dg

from mlops_assets.assets.common import ModelPipeline, table
from resources.lake import Lake
from resources.registry import MlflowRegistry


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
            rows.append({"model": f"{role} v{version.version}", **result.metrics,
                         "parity_gap": result.worst("demographic_parity_difference"),
                         "odds_gap": result.worst("equalized_odds_difference")})  # fmt: skip
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
                    ["model", "roc_auc", "accuracy", "f1", "log_loss", "calibration_error", "brier",
                     "parity_gap", "odds_gap"],
                ),  # fmt: skip
                "candidate_by_group": _group_table(report["candidate"]["evaluation"]),  # type: ignore[index]
            }
        )

    @dg.asset(
        key=pipeline.key("promotion"),
        group_name=pipeline.name,
        deps=[evaluation],
        kinds={"mlflow"},
        description=(
            "The decision whether the challenger replaces the champion, and its execution.\n\n"
            "Every gate of the spec (metric floors, allowed regression against the champion, "
            "fairness limits) is listed with its value, limit and margin. Only a blessed "
            "candidate moves alias `champion`, and only if the champion is still the version the "
            "decision was made against (compare-and-set). A first model needs only the absolute gates."
        ),
    )
    def promotion(context: dg.AssetExecutionContext, lake: Lake, registry: MlflowRegistry) -> dg.MaterializeResult:
        from mlops_assets.ml.evaluation import Evaluation
        from mlops_assets.ml.promotion import decide

        report = lake.read_json(spec.name, "evaluation")
        candidate = report["candidate"]
        champion = report.get("champion")
        decision = decide(
            candidate_version=candidate["version"],
            candidate=Evaluation.from_dict(candidate["evaluation"]),
            champion_version=champion["version"] if champion else None,
            champion=Evaluation.from_dict(champion["evaluation"]) if champion else None,
            gates=spec.gates,
        )
        if decision.promote:
            registry.promote(
                name=spec.name,
                version=decision.candidate_version,
                expected_champion=decision.champion_version,
                record={"dagster_run_id": context.run_id, "reasons": decision.reasons,
                        "deltas": decision.deltas},  # fmt: skip
            )
            context.log.info("%s: champion is now version %s", spec.name, decision.candidate_version)
        else:
            context.log.warning("%s: version %s not promoted: %s", spec.name, decision.candidate_version, decision.reasons)
        lake.write_json(spec.name, "promotion", decision.to_dict())
        champion_after = decision.candidate_version if decision.promote else decision.champion_version
        return dg.MaterializeResult(
            metadata={
                "decision": "promoted" if decision.promote else "rejected",
                "candidate_version": decision.candidate_version,
                "champion_before": decision.champion_version or "(none)",
                "champion_after": champion_after or "(none)",
                "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
                "gates": table([g.__dict__ for g in decision.gates], ["gate", "value", "limit", "passed", "detail"]),
                "deltas": dg.MetadataValue.json(decision.deltas),
            }
        )

    return [evaluation, promotion]


def _group_table(evaluation: dict) -> dg.TableMetadataValue:
    rows = [
        {"feature": f["feature"], "group": group, **values}
        for f in evaluation["fairness"]
        for group, values in f["by_group"].items()
    ]
    return table(rows, ["feature", "group", "count", "accuracy", "selection_rate", "true_positive_rate",
                        "false_positive_rate"])  # fmt: skip
