"""Backfills: the per-batch assets of many batches in one run, one step per batch.

A backfill of N batches as N asset runs pays N times for a process that imports Dagster, pandas
and the product: a GSS year took 3.5 s as its own ``dagster asset materialize`` process and 0.5 s
as a step here (``make demo``'s history, two cores). One asset run
over a partition range does not fit either (dagster 1.13): its single step materializes every
partition of the range or none, so one bad batch would fail them all, and check results yielded
there carry no partition.

So ``<model>_backfill_job`` fans out one step per batch (``DynamicOut``) on the in-process
executor: the libraries are imported once, each step does the same work as the assets' own runs
(the ``*_work`` functions beside each asset) and records its materializations and check
evaluations against the batch's partition, and a bad batch fails its own step only: the other
batches are recorded, and its earlier outputs stay as they were (the work writes nothing for a
batch that fails validation).
"""

import re
import traceback
from collections.abc import Callable, Iterator, Sequence

import dagster as dg
from pydantic import Field

from mlops_assets.assets.attributions import attributions_work
from mlops_assets.assets.common import BatchEvents, BatchRun, ModelPipeline, retry_on_tracking_outage
from mlops_assets.assets.deployment import drift_report_work, predictions_work
from mlops_assets.assets.features import features_work
from mlops_assets.assets.ingestion import raw_batch_work
from mlops_assets.assets.validation import validated_batch_work
from mlops_assets.contract import TAG_MAX_RUNTIME, Asset, Job
from resources.lake import Lake
from resources.landing import LandingZone
from resources.registry import MlflowRegistry, is_tracking_outage

# The per-batch assets, in the order one batch goes through them: a score-batch run's selection.
BATCH_ASSETS = (
    Asset.RAW_BATCH,
    Asset.VALIDATED_BATCH,
    Asset.FEATURES,
    Asset.PREDICTIONS,
    Asset.DRIFT_REPORT,
    # Its own step after predictions: explaining never holds up scoring.
    Asset.ATTRIBUTIONS,
)
# What the history needs before a first model can train.
INGESTION = (Asset.RAW_BATCH, Asset.VALIDATED_BATCH, Asset.FEATURES)
BACKFILL_MAX_RUNTIME_SECONDS = 12 * 3600

Work = Callable[[BatchRun], BatchEvents]


class BackfillConfig(dg.Config):
    """Which batches, through which per-batch assets."""

    batches: list[str] = Field(
        default_factory=list, description="The batches, each a registered partition. Empty: every registered batch."
    )
    assets: list[str] = Field(
        default_factory=lambda: list(INGESTION),
        description=f"The per-batch assets to materialize for each batch, of {list(BATCH_ASSETS)}; "
        "they run in that order.",
    )


def step_key(index: int, batch: str) -> str:
    """The mapping key of a batch's step: Dagster allows letters, digits and underscores only, so
    the batch's position keeps two batches that differ in other characters apart."""
    return f"b{index}_{re.sub(r'[^A-Za-z0-9_]', '_', batch)}"


def chosen_assets(assets: Sequence[str]) -> list[str]:
    """The selection in chain order.

    Raises:
        Failure: a name is no per-batch asset (names it), or the selection is empty.
    """
    unknown = sorted(set(assets) - set(BATCH_ASSETS))
    if unknown:
        raise dg.Failure(f"assets: {unknown} are not per-batch assets; choose from {list(BATCH_ASSETS)}")
    if not assets:
        raise dg.Failure(f"assets: empty; choose from {list(BATCH_ASSETS)}")
    return [a for a in BATCH_ASSETS if a in assets]


def build_backfill_job(pipeline: ModelPipeline, assets: Sequence[dg.AssetsDefinition]) -> dg.JobDefinition:
    """``<model>_backfill_job``: the chosen per-batch assets of the chosen batches, a step per batch."""
    name = pipeline.name
    upstream = _upstream_within_chain(pipeline, assets)
    blocking = {(spec.asset_key, spec.name): spec.blocking for a in assets for spec in a.check_specs}

    @dg.op(name=plan_op(name), out=dg.DynamicOut(dict), description="One step per batch.")
    def plan_backfill(context: dg.OpExecutionContext, config: BackfillConfig) -> Iterator[dg.DynamicOutput]:
        from mlops_assets.batches import BatchNameError, check_batch_name, sorted_batches

        nouns = chosen_assets(config.assets)
        registered = context.instance.get_dynamic_partitions(pipeline.partitions.name)
        batches = list(config.batches) or sorted_batches(registered)
        try:
            for batch in batches:
                check_batch_name(batch, where="batches")
        except BatchNameError as e:
            raise dg.Failure(str(e), allow_retries=False) from e
        missing = sorted(set(batches) - set(registered))
        if missing:
            raise dg.Failure(f"batches: {missing[:20]} are not registered partitions of {name}; land them first")
        context.log.info("%s: %d batches through %s", name, len(batches), ", ".join(nouns))
        for i, batch in enumerate(batches):
            yield dg.DynamicOutput({"batch": batch, "assets": nouns}, mapping_key=step_key(i, batch))

    @dg.op(name=batch_op(name), description="One batch through the chosen per-batch assets.")
    @retry_on_tracking_outage
    def backfill_batch(
        context: dg.OpExecutionContext, work: dict, lake: Lake, landing: LandingZone, registry: MlflowRegistry
    ) -> str:
        batch, nouns = work["batch"], work["assets"]
        run = BatchRun(batch, context.log, context.instance)
        works = _works(pipeline, lake=lake, landing=landing, registry=registry)
        failed: dict[str, str] = {}
        for noun in nouns:
            waiting_on = sorted(upstream[noun] & set(failed))
            if waiting_on:
                context.log.warning("%s batch %s: %s not materialized: %s failed", name, batch, noun, waiting_on)
                failed[noun] = f"skipped: {', '.join(waiting_on)} failed"
                continue
            try:
                for event in works[noun](run):
                    _record(context, pipeline.key(noun), batch, event, blocking)
            except Exception as error:
                if isinstance(error, dg.RetryRequested) or is_tracking_outage(error):
                    raise  # the whole step is retried (retry_on_tracking_outage); the work is idempotent
                if isinstance(error, dg.Failure):
                    reason = error.description or "failed"
                    context.log.error("%s batch %s: %s failed: %s", name, batch, noun, reason)
                else:  # a bug, not bad data: the trace goes to the log
                    reason = f"{type(error).__name__}: {error}"
                    context.log.error("%s batch %s: %s failed:\n%s", name, batch, noun, traceback.format_exc())
                failed[noun] = reason
        if failed:
            raise dg.Failure(
                description=f"{name} batch {batch}: "
                + "; ".join(f"{noun}: {reason}" for noun, reason in failed.items()),
                metadata={"batch": batch, "failed_assets": dg.MetadataValue.json(list(failed))},
                allow_retries=False,
            )
        return batch

    @dg.job(
        name=Job.backfill(name),
        executor_def=dg.in_process_executor,
        tags={**pipeline.tags, TAG_MAX_RUNTIME: str(BACKFILL_MAX_RUNTIME_SECONDS)},
        description=(
            f"Materializes per-batch assets of many {name} batches in one run, a step per batch "
            "(config: batches, assets; default: every registered batch through raw_batch, validated_batch "
            "and features). A bad batch fails its own step only."
        ),
    )
    def backfill_job() -> None:
        plan_backfill().map(backfill_batch)

    return backfill_job


def plan_op(model: str) -> str:
    """The op that takes the backfill's run config (``BackfillConfig``)."""
    return f"{model}_plan_backfill"


def batch_op(model: str) -> str:
    return f"{model}_backfill_batch"


def backfill_step(model: str, index: int, batch: str) -> str:
    """The step key of a batch's step in a backfill run (the demo reads each batch's outcome)."""
    return f"{batch_op(model)}[{step_key(index, batch)}]"


def _works(pipeline: ModelPipeline, *, lake: Lake, landing: LandingZone, registry: MlflowRegistry) -> "dict[str, Work]":
    return {
        Asset.RAW_BATCH: lambda run: raw_batch_work(pipeline, run, lake=lake, landing=landing),
        Asset.VALIDATED_BATCH: lambda run: validated_batch_work(pipeline, run, lake=lake),
        Asset.FEATURES: lambda run: features_work(pipeline, run, lake=lake),
        Asset.PREDICTIONS: lambda run: predictions_work(pipeline, run, lake=lake, registry=registry),
        Asset.DRIFT_REPORT: lambda run: drift_report_work(pipeline, run, lake=lake, registry=registry),
        Asset.ATTRIBUTIONS: lambda run: attributions_work(pipeline, run, lake=lake, registry=registry),
    }


def _upstream_within_chain(pipeline: ModelPipeline, assets: Sequence[dg.AssetsDefinition]) -> dict[str, set[str]]:
    """Per chain asset, the chain assets it depends on, directly or not (read from the asset
    definitions, so the backfill skips exactly what a failed upstream would skip in an asset run)."""
    keys = {pipeline.key(noun): noun for noun in BATCH_ASSETS}
    direct: dict[str, set[str]] = {noun: set() for noun in BATCH_ASSETS}
    for a in assets:
        for key, deps in a.asset_deps.items():
            if key in keys:
                direct[keys[key]] = {keys[d] for d in deps if d in keys}
    closed: dict[str, set[str]] = {}
    for noun in BATCH_ASSETS:  # in chain order: every upstream is closed first
        closed[noun] = set(direct[noun]).union(*(closed[d] for d in direct[noun]))
    return closed


def _record(
    context: dg.OpExecutionContext,
    key: dg.AssetKey,
    batch: str,
    event: dg.MaterializeResult | dg.AssetCheckResult,
    blocking: dict[tuple[dg.AssetKey, str], bool],
) -> None:
    """An asset's result as the event an asset run would record, against the batch's partition."""
    from dagster._core.definitions.data_version import DATA_VERSION_IS_USER_PROVIDED_TAG, DATA_VERSION_TAG

    if isinstance(event, dg.AssetCheckResult):
        check_key = event.asset_key or key
        context.log_event(
            dg.AssetCheckEvaluation(
                asset_key=check_key,
                check_name=event.check_name,
                passed=event.passed,
                metadata=event.metadata,
                severity=event.severity,
                description=event.description,
                blocking=blocking.get((check_key, event.check_name), False),
                partition=batch,
            )
        )
        return
    tags = {}
    if event.data_version is not None:
        tags = {DATA_VERSION_TAG: event.data_version.value, DATA_VERSION_IS_USER_PROVIDED_TAG: "true"}
    context.log_event(dg.AssetMaterialization(asset_key=key, partition=batch, metadata=event.metadata, tags=tags))
    for check_result in event.check_results or []:
        _record(context, key, batch, check_result, blocking)
