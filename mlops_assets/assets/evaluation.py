"""Evaluation of the candidate against the champion, and the promotion decision.

The decision is an asset (TFX's blessing): its materializations are the history of every
promotion attempt, with candidate, champion, deltas, fairness gaps, lineage gates, the decision
and its reasons. Both steps act on what their own run produced: the evaluation scores the version
its run trained, on that version's holdout, and the promotion decides on its run's evaluation, so
overlapping retrains never decide about each other's versions. The decision about each version is
a ``records.PromotionRecord`` kept as ``promotion/v<version>.json`` in the lake and as artifact
``mlops/decision.json`` of the version's MLflow run, which ``mlops explain`` and the model card read.
"""

import datetime as dt
import time
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from mlops_assets.assets.common import (
    ModelPipeline,
    materialization_of_run,
    recorded,
    retry_on_tracking_outage,
    table,
    upstream_materialization,
)
from mlops_assets.contract import (
    CHALLENGER,
    CHAMPION,
    FIGURES_DIR,
    Artifact,
    Asset,
    Fairness,
    LakeFolder,
    Meta,
    MlflowTag,
    TrainingFile,
    artifact_path,
    evaluation_report_file,
    figure_file,
    registry_pool,
    run_record,
    training_file,
    version_record,
)
from mlops_assets.records import (
    EvaluationReport,
    EvaluationSummary,
    OverrideRequest,
    PromotionRecord,
    ScoredVersion,
    TrainingManifest,
)
from mlops_assets.untrusted import md, md_code
from resources.lake import Lake
from resources.registry import MlflowRegistry, RegisteredModel

if TYPE_CHECKING:
    from mlops_assets.ml.evaluation import Evaluation
    from mlops_assets.ml.figures import PngFigure
    from mlops_assets.ml.promotion import BatchEvidence, Decision
    from resources.registry import ChampionMove

COMPARISON_COLUMNS = [
    "model",
    "roc_auc",
    "accuracy",
    "f1",
    "log_loss",
    "calibration_error",
    "brier",
    "parity_gap",
    "odds_gap",
]
# The lake file (``figure_file``) listing a run's evaluation figures: their names and titles.
FIGURE_INDEX = "figures"
GROUP_COLUMNS = ["feature", "group", "count", "accuracy", "selection_rate", "true_positive_rate", "false_positive_rate"]


class PromotionConfig(dg.Config):
    """An explicit, recorded override of failed promotion gates."""

    override: bool = Field(
        default=False,
        description="Promote the candidate even though gates failed. Needs override_reason; the "
        "override, its reason and the failed gates are recorded in the decision and the champion "
        "history, and the move still compares-and-sets against the champion of the evaluation.",
    )
    override_reason: str = Field(default="", description="Why the gates are overridden (required with override).")


def build_evaluation_assets(pipeline: ModelPipeline) -> list[dg.AssetsDefinition]:
    spec = pipeline.spec
    sensitive = spec.sensitive_features

    @dg.asset(
        key=pipeline.key(Asset.EVALUATION),
        group_name=pipeline.name,
        deps=[pipeline.key(Asset.MODEL), pipeline.key(Asset.TRAINING_DATASET)],
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
        candidate = candidate_of_run(context, pipeline, registry)
        report, figures = evaluate_against_champion(context, pipeline, candidate, lake=lake, registry=registry)
        lake.write_json(spec.name, Asset.EVALUATION, report.to_dict(), run_record(context.run_id))
        figure_uris = keep_figures(lake, registry, spec.name, candidate.run_id, context.run_id, figures)
        return evaluation_result(report, figure_uris)

    @dg.asset(
        key=pipeline.key(Asset.PROMOTION),
        group_name=pipeline.name,
        deps=[evaluation],
        kinds={"mlflow"},
        pool=registry_pool(pipeline.name),
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
        check_override(spec.name, config)
        report = evaluation_of_run(context, pipeline, lake)
        candidate = version_of_report(registry, spec.name, report)
        evidence = training_evidence(context.instance, registry, candidate)
        decision = decide_promotion(pipeline, report, evidence, registry=registry, candidate=candidate, config=config)
        record = promotion_record(context, spec.name, report, decision, evidence, config)
        record, move = carry_out(context, decision, record, lake=lake, registry=registry)
        lake.write_json(spec.name, Asset.PROMOTION, record.to_dict())
        # A no-op decision ("already champion") evaluates no gate; keeping it would hide the
        # decision that did, which is what explain and the model card must show.
        record_uri = keep_record(lake, registry, candidate.run_id, record) if decision.gates else "(unchanged)"
        report_uri = None
        if decision.gates:
            report_uri = keep_evaluation_report(lake, registry, candidate.run_id, report, decision, record)
        return promotion_result(registry, spec.name, decision, record, evidence, move, record_uri, report_uri)

    return [evaluation, promotion]


def candidate_of_run(
    context: dg.AssetExecutionContext, pipeline: ModelPipeline, registry: MlflowRegistry
) -> RegisteredModel:
    """The version this run's ``model`` step trained or reused; alone, the version with alias
    ``challenger`` (which another run may have moved since)."""
    record = materialization_of_run(context, pipeline.key(Asset.MODEL))
    if record is not None:
        return registry.get(pipeline.name, str(recorded(record, Meta.VERSION)))
    candidate = registry.by_alias(pipeline.name, CHALLENGER)
    if candidate is None:
        raise dg.Failure(f"{pipeline.name}: no version carries alias '{CHALLENGER}'; materialize model first")
    return candidate


def holdout_of(lake: Lake, name: str, version: RegisteredModel):  # noqa: ANN201 - pandas stays out of module imports
    """The holdout of the window ``version`` was trained on (its training fingerprint tag)."""
    fingerprint = version.tags.get(MlflowTag.TRAINING_FINGERPRINT)
    partition = training_file(fingerprint, TrainingFile.HOLDOUT) if fingerprint else None
    if partition is None or not lake.exists(name, Asset.TRAINING_DATASET, partition):
        raise dg.Failure(
            f"{name}: version {version.version}'s training data (fingerprint {fingerprint or '(no tag)'}) has no "
            "holdout in the lake; materialize training_dataset for its window again"
        )
    return lake.read_frame(name, Asset.TRAINING_DATASET, partition)


def evaluate_against_champion(
    context: dg.AssetExecutionContext,
    pipeline: ModelPipeline,
    candidate: RegisteredModel,
    *,
    lake: Lake,
    registry: MlflowRegistry,
) -> "tuple[EvaluationReport, list[PngFigure]]":
    """The candidate and the current champion scored on the candidate's holdout, and the figures
    of both on it (``ml.figures``: drawn here, where the scores are, with matplotlib's Agg canvas)."""
    from mlops_assets.ml.data import LABEL
    from mlops_assets.ml.evaluation import evaluate
    from mlops_assets.ml.figures import ScoredModel, evaluation_figures
    from mlops_assets.ml.trainers import prepare_inputs

    spec = pipeline.spec
    holdout = holdout_of(lake, spec.name, candidate)
    y = holdout[LABEL].to_numpy(dtype="int64")
    inputs = prepare_inputs(holdout, pipeline.columns.numeric, pipeline.columns.categorical)
    champion = registry.by_alias(spec.name, CHAMPION)
    scored: dict[str, ScoredVersion] = {}
    drawn: dict[str, ScoredModel] = {}
    for role, version in (("candidate", candidate), ("champion", champion)):
        if version is None:
            continue
        proba = registry.load_model(version).predict_proba(inputs)[:, 1]
        scored[role] = ScoredVersion(
            version.version,
            evaluate(y, proba, holdout[spec.sensitive_features], min_group_size=spec.gates.min_group_size),
        )
        drawn[role] = ScoredModel(role, version.version, proba, scored[role].evaluation)
        context.log.info("%s %s v%s: %s", spec.name, role, version.version, scored[role].evaluation.metrics)
    started = time.perf_counter()
    figures = evaluation_figures(y=y, candidate=drawn["candidate"], champion=drawn.get("champion"), gates=spec.gates)
    context.log.info("%s: %d evaluation figures drawn in %.2fs", spec.name, len(figures), time.perf_counter() - started)
    report = EvaluationReport(
        candidate=scored["candidate"],
        champion=scored.get("champion"),
        holdout_rows=len(holdout),
        training_fingerprint=candidate.tags.get(MlflowTag.TRAINING_FINGERPRINT),
        dagster_run_id=context.run_id,
    )
    return report, figures


def keep_figures(
    lake: Lake, registry: MlflowRegistry, name: str, mlflow_run_id: str, dagster_run_id: str, figures: "list[PngFigure]"
) -> list[str]:
    """The evaluation's figures on the candidate's MLflow run (``mlops/figures/<name>.png``) and in
    the lake beside the evaluation document, with an index of names and titles that the same
    run's promotion reads to put them into its report. Returns the run artifacts' URIs."""
    for figure in figures:
        lake.write_bytes(name, Asset.EVALUATION, figure.png, figure_file(dagster_run_id, figure.name), "png")
    index = [{"name": f.name, "title": f.title} for f in figures]
    lake.write_json(name, Asset.EVALUATION, index, figure_file(dagster_run_id, FIGURE_INDEX))
    return registry.log_run_files(mlflow_run_id, artifact_path(FIGURES_DIR), {f.filename: f.png for f in figures})


def figures_of_run(lake: Lake, name: str, dagster_run_id: str) -> "list[PngFigure]":
    """The figures the evaluation of ``dagster_run_id`` drew (none for an evaluation made before
    figures were drawn)."""
    from mlops_assets.ml.figures import PngFigure

    if not lake.exists(name, Asset.EVALUATION, figure_file(dagster_run_id, FIGURE_INDEX), "json"):
        return []
    return [
        PngFigure(
            entry["name"],
            entry["title"],
            lake.read_bytes(name, Asset.EVALUATION, figure_file(dagster_run_id, entry["name"]), "png"),
        )
        for entry in lake.read_json(name, Asset.EVALUATION, figure_file(dagster_run_id, FIGURE_INDEX))
    ]


def comparison_row(role: str, scored: ScoredVersion) -> dict[str, object]:
    result = scored.evaluation
    return {
        "model": f"{role} v{scored.version}",
        **result.metrics,
        "parity_gap": result.worst(Fairness.DEMOGRAPHIC_PARITY),
        "odds_gap": result.worst(Fairness.EQUALIZED_ODDS),
    }


def group_table(evaluation: "Evaluation") -> dg.TableMetadataValue:
    rows = [
        {"feature": f.feature, "group": group, **values}
        for f in evaluation.fairness
        for group, values in f.by_group.items()
    ]
    return table(rows, GROUP_COLUMNS)


def evaluation_result(report: EvaluationReport, figure_uris: list[str]) -> dg.MaterializeResult:
    candidate, champion = report.candidate, report.champion
    rows = [comparison_row("candidate", candidate)] + ([comparison_row("champion", champion)] if champion else [])
    return dg.MaterializeResult(
        metadata={
            "candidate_version": candidate.version,
            "champion_version": champion.version if champion else "(none)",
            "holdout_rows": report.holdout_rows,
            **{f"candidate_{k}": v for k, v in candidate.evaluation.metrics.items() if v is not None},
            "comparison": table(rows, COMPARISON_COLUMNS),
            "candidate_by_group": group_table(candidate.evaluation),
            Meta.TOO_SMALL_GROUPS: table(candidate.evaluation.too_small(), ["feature", "group", "rows"]),
            "figures": dg.MetadataValue.md("\n".join(f"- {md_code(uri)}" for uri in figure_uris) or "(none)"),
        }
    )


def check_override(name: str, config: PromotionConfig) -> None:
    """Refuses an override without a reason, and a reason without an override."""
    if config.override and not config.override_reason.strip():
        raise dg.Failure(f"{name}: override=true needs a non-empty override_reason; nothing was promoted")
    if config.override_reason.strip() and not config.override:
        raise dg.Failure(
            f"{name}: override_reason is set but override is false; set both or neither (nothing was promoted)"
        )


def evaluation_of_run(context: dg.AssetExecutionContext, pipeline: ModelPipeline, lake: Lake) -> EvaluationReport:
    """The report of this run's evaluation (else of the latest evaluation)."""
    record = upstream_materialization(context, pipeline.key(Asset.EVALUATION))
    partition = run_record(record.run_id) if record is not None else None
    if partition is None or not lake.exists(pipeline.name, Asset.EVALUATION, partition, "json"):
        raise dg.Failure(f"{pipeline.name}: no evaluation report to decide on; materialize evaluation first")
    origin = lake.uri(pipeline.name, Asset.EVALUATION, partition, "json")
    return EvaluationReport.from_dict(lake.read_json(pipeline.name, Asset.EVALUATION, partition), origin=origin)


def version_of_report(registry: MlflowRegistry, name: str, report: EvaluationReport) -> RegisteredModel:
    try:
        return registry.get(name, report.candidate.version)
    except LookupError as e:
        raise dg.Failure(f"{name}: the evaluated version no longer exists: {e}") from e


def training_evidence(
    instance: dg.DagsterInstance, registry: MlflowRegistry, candidate: RegisteredModel
) -> "list[BatchEvidence]":
    """Whether each batch the candidate was trained on is validated data (gate ``training_data_validated``)."""
    from mlops_assets.explain import suite_checks, training_batch_evidence
    from mlops_assets.explain.evidence import blocking

    path = artifact_path(Artifact.TRAINING_MANIFEST)
    manifest = TrainingManifest.from_json(
        registry.run_artifact(candidate.run_id, path), origin=f"runs:/{candidate.run_id}/{path}"
    )
    checks = suite_checks(registry.run_artifact(candidate.run_id, artifact_path(Artifact.VALIDATION_SUITE)))
    return training_batch_evidence(
        instance, model=candidate.name, fingerprints=manifest.fingerprints, blocking_checks=blocking(checks)
    )


def decide_promotion(
    pipeline: ModelPipeline,
    report: EvaluationReport,
    evidence: "list[BatchEvidence]",
    *,
    registry: MlflowRegistry,
    candidate: RegisteredModel,
    config: PromotionConfig,
) -> "Decision":
    from mlops_assets.ml.promotion import decide

    champion = report.champion
    return decide(
        candidate_version=candidate.version,
        candidate=report.candidate.evaluation,
        champion_version=champion.version if champion else None,
        champion=champion.evaluation if champion else None,
        gates=pipeline.spec.gates,
        has_signature=registry.model_signature(candidate) is not None,
        training_data=evidence,
        override_reason=config.override_reason if config.override else None,
    )


def promotion_record(
    context: dg.AssetExecutionContext,
    name: str,
    report: EvaluationReport,
    decision: "Decision",
    evidence: "list[BatchEvidence]",
    config: PromotionConfig,
) -> PromotionRecord:
    """The decision about the candidate, before it is carried out."""
    return PromotionRecord(
        model=name,
        version=decision.candidate_version,
        at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        dagster_run_id=context.run_id,
        outcome="promoted" if decision.promote else "rejected",
        decision=decision,
        training_data=tuple(evidence),
        override=OverrideRequest(config.override, config.override_reason.strip()),
        evaluation=EvaluationSummary.of(report),
    )


def carry_out(
    context: dg.AssetExecutionContext,
    decision: "Decision",
    record: PromotionRecord,
    *,
    lake: Lake,
    registry: MlflowRegistry,
) -> "tuple[PromotionRecord, ChampionMove | None]":
    """Moves the champion when the decision says so (compare-and-set against the evaluated one).

    Raises:
        Failure: the champion moved since the evaluation; the conflict is recorded.
    """
    from resources.registry import PromotionConflict

    name = str(record.model)
    if not decision.promote:
        context.log.warning("%s: version %s not promoted: %s", name, decision.candidate_version, decision.reasons)
        return record, None
    assert record.evaluation is not None
    try:
        move = registry.promote(
            name=name,
            version=decision.candidate_version,
            expected_champion=decision.champion_version,
            reason=decision.reasons[0],
            dagster_run_id=context.run_id,
            override=decision.overridden,
            record={
                "metrics": record.evaluation.candidate.metrics,
                "deltas": decision.deltas,
                "failed_gates": [g.gate for g in decision.failed_gates],
                "override_reason": decision.override_reason,
            },
        )
    except PromotionConflict as e:
        run_id = registry.get(name, record.version).run_id
        keep_record(lake, registry, run_id, record.settled("conflict", conflict=str(e)))
        raise dg.Failure(f"{name}: version {record.version} was not promoted: {e}") from e
    if decision.overridden:
        context.log.warning(
            "%s: version %s promoted by OVERRIDE despite failed gates %s: %s",
            name,
            record.version,
            [g.gate for g in decision.failed_gates],
            decision.override_reason,
        )
    else:
        context.log.info("%s: champion is now version %s", name, decision.candidate_version)
    return record.settled("promoted", champion_move=move.to_record()), move


def keep_record(lake: Lake, registry: MlflowRegistry, run_id: str, record: PromotionRecord) -> str:
    """The decision about a version, kept beside it: in the lake and on its MLflow run."""
    lake.write_json(str(record.model), Asset.PROMOTION, record.to_dict(), version_record(record.version))
    return registry.log_run_text(run_id, artifact_path(Artifact.DECISION), record.to_json())


def keep_evaluation_report(
    lake: Lake,
    registry: MlflowRegistry,
    mlflow_run_id: str,
    report: EvaluationReport,
    decision: "Decision",
    record: PromotionRecord,
) -> str:
    """The decision's self-contained HTML evaluation report (``ml.report``), in the lake at
    ``evaluation_report/v<version>/run-<run id>.html`` and as artifact ``mlops/evaluation_report.html``
    of the candidate's run. Returns the lake path (or URI on an object store)."""
    from mlops_assets.ml.evaluation import DECISION_THRESHOLD
    from mlops_assets.ml.report import evaluation_report

    name = str(record.model)
    page = evaluation_report(
        model=name,
        decision=decision,
        candidate=report.candidate.evaluation,
        champion=report.champion.evaluation if report.champion else None,
        figures=figures_of_run(lake, name, str(report.dagster_run_id)),
        threshold=DECISION_THRESHOLD,
        generated_at=record.at,
    )
    partition = evaluation_report_file(record.version, record.dagster_run_id)
    lake.write_bytes(name, LakeFolder.EVALUATION_REPORT, page.encode(), partition, "html")
    registry.log_run_text(mlflow_run_id, artifact_path(Artifact.EVALUATION_REPORT), page)
    return lake.uri(name, LakeFolder.EVALUATION_REPORT, partition, "html")


def report_link(uri: str | None) -> dg.MetadataValue:
    """A link the Dagster UI shows: a local file as a path, an object-store file as a URL."""
    if uri is None:
        return dg.MetadataValue.text("(no decision was made)")
    return dg.MetadataValue.url(uri) if "://" in uri else dg.MetadataValue.path(uri)


def promotion_result(
    registry: MlflowRegistry,
    name: str,
    decision: "Decision",
    record: PromotionRecord,
    evidence: "list[BatchEvidence]",
    move: "ChampionMove | None",
    record_uri: str,
    report_uri: str | None,
) -> dg.MaterializeResult:
    champion_after = decision.candidate_version if decision.promote else decision.champion_version
    return dg.MaterializeResult(
        metadata={
            Meta.EVALUATION_REPORT: report_link(report_uri),
            Meta.DECISION: record.outcome,
            "candidate_version": decision.candidate_version,
            "champion_before": decision.champion_version or "(none)",
            "champion_after": champion_after or "(none)",
            "overridden": decision.overridden,
            "override_reason": decision.override_reason,
            "reasons": dg.MetadataValue.md("\n".join(f"- {md(r)}" for r in decision.reasons)),
            "gates": table([g.__dict__ for g in decision.gates], ["gate", "value", "limit", "passed", "detail"]),
            "training_data": table([e.__dict__ for e in evidence], ["batch", "validated", "detail"]),
            "deltas": dg.MetadataValue.json(decision.deltas),
            "champion_move": dg.MetadataValue.json(move.to_record() if move else {}),
            "champion_history": champion_history_table(registry, name),
            "decision_record": record_uri,
        }
    )


def champion_history_table(registry: MlflowRegistry, name: str, last: int = 20) -> dg.TableMetadataValue:
    """The latest champion moves, newest first."""
    moves = registry.champion_history(name)[-last:]
    return table(
        [{**m.to_record(), "at": m.at.isoformat(timespec="seconds")} for m in reversed(moves)],
        ["at", "kind", "from_version", "to_version", "dagster_run_id", "actor", "override", "reason"],
    )
