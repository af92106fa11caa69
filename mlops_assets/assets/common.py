"""What every asset builder of one model shares: the spec, its columns and its partitions."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import dagster as dg

from mlops_assets.contract import TAG_MODEL, partitions_name
from mlops_assets.ml.data import ResolvedColumns
from mlops_assets.spec import PipelineSpec

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ModelPipeline:
    """One spec, resolved: the feature columns are known and the partitions defined."""

    spec: PipelineSpec
    columns: ResolvedColumns

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def partitions(self) -> dg.DynamicPartitionsDefinition:
        return dg.DynamicPartitionsDefinition(name=partitions_name(self.name))

    def key(self, noun: str) -> dg.AssetKey:
        return dg.AssetKey([self.name, noun])

    def batch(self, context: dg.AssetExecutionContext | dg.OpExecutionContext) -> str:
        """The run's partition key, held to the batch grammar: a key added from the UI or over
        GraphQL reaches the assets unchecked by Dagster.

        Raises:
            Failure: the key is no batch name; the message names it.
        """
        from mlops_assets.batches import BatchNameError, check_batch_name

        try:
            return check_batch_name(context.partition_key, where=f"{self.name}: partition key")
        except BatchNameError as e:
            raise dg.Failure(str(e), allow_retries=False) from e

    @property
    def tags(self) -> dict[str, str]:
        return {TAG_MODEL: self.name}


@dataclass(frozen=True)
class BatchRun:
    """What the work of a per-batch asset needs of the run doing it: the batch, the run's log and
    the instance. A run of the asset does one batch (its partition); a backfill run
    (``assets/backfill.py``) does one step per batch and calls the same work."""

    batch: str
    log: Any  # the run's DagsterLogManager
    instance: dg.DagsterInstance

    @classmethod
    def of(cls, pipeline: ModelPipeline, context: dg.AssetExecutionContext) -> BatchRun:
        return cls(pipeline.batch(context), context.log, context.instance)


# What a per-batch asset's work yields: its materialization and its check results, in order.
BatchEvents = Iterator["dg.MaterializeResult | dg.AssetCheckResult"]


def materialization_in_run(instance: dg.DagsterInstance, run_id: str, key: dg.AssetKey) -> dg.EventLogRecord | None:
    """``key``'s materialization by run ``run_id`` (its last one), if the run made one."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    found = [r for r in records if r.event_log_entry.dagster_event and r.event_log_entry.dagster_event.asset_key == key]
    return found[-1] if found else None


def materialization_of_run(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dg.EventLogRecord | None:
    """``key``'s materialization by this run or, for a re-execution, by the run it re-executes
    (whose successful steps it skips); None when neither made one."""
    run: dg.DagsterRun | None = context.dagster_run
    while run is not None:
        found = materialization_in_run(context.instance, run.run_id, key)
        if found is not None:
            return found
        run = context.instance.get_run_by_id(run.parent_run_id) if run.parent_run_id else None
    return None


def upstream_materialization(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dg.EventLogRecord | None:
    """What a step reads of an upstream asset: the materialization its own run made (see
    ``materialization_of_run``), else the latest.

    A retrain's steps thereby act on what their own run produced, even while another retrain of
    the same model runs; a step materialized on its own takes the latest, as it always did.
    """
    own = materialization_of_run(context, key)
    if own is not None:
        return own
    latest = context.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1).records
    return latest[0] if latest else None


def recorded(record: dg.EventLogRecord, key: str) -> object:
    """A metadata value of a materialization record; None when it has no such entry."""
    materialization = record.event_log_entry.asset_materialization
    entry = materialization.metadata.get(key) if materialization else None
    return None if entry is None else entry.value


# Columns of a landed file listed in its schema metadata: names come from whoever wrote the file.
SCHEMA_COLUMNS = 200


def frame_schema(frame) -> dg.TableSchema:  # noqa: ANN001 - pandas stays out of module imports
    """The frame's columns and dtypes, the first ``SCHEMA_COLUMNS`` of them, each name bounded."""
    from mlops_assets.untrusted import bounded

    return dg.TableSchema(
        columns=[dg.TableColumn(str(bounded(str(c))), str(t)) for c, t in list(frame.dtypes.items())[:SCHEMA_COLUMNS]]
    )


def table(rows: list[dict], columns: list[str]) -> dg.TableMetadataValue:
    """A metadata table; None becomes an empty cell rather than the string 'None'. The UI renders
    string cells as markdown, so each is bounded and escaped (``mlops_assets.untrusted``)."""
    schema = dg.TableSchema(columns=[dg.TableColumn(c) for c in columns])
    records = [dg.TableRecord({c: ("" if r.get(c) is None else _cell(r.get(c))) for c in columns}) for r in rows]
    return dg.MetadataValue.table(records, schema=schema)


def _cell(value: object) -> str | int | float | bool:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, int | bool):
        return value
    from mlops_assets.untrusted import bounded, md

    return md(bounded(value))


def retry_on_tracking_outage(compute: F) -> F:
    """Retry the step, with Dagster's ``RetryRequested``, when it fails because the MLflow
    tracking server cannot be reached (a restart, a network blip); fail at once on anything else.

    A Dagster ``RetryPolicy`` would retry every failure, and retrying a refused gate or a bad batch
    only repeats it. The registry resource sets the policy (``outage_retries`` times, waiting
    ``outage_wait_s`` doubled each time); the compute function must take ``registry``. Steps are
    safe to repeat: a model trained on the same data reuses its version, torch training resumes
    from its last checkpoint, and a champion move left pending is finished by the next one.
    """

    @contextmanager
    def outage_becomes_retry(context: dg.AssetExecutionContext, registry: Any) -> Iterator[None]:
        from resources.registry import is_tracking_outage

        try:
            yield
        except Exception as error:
            if not is_tracking_outage(error) or registry.outage_retries == 0:
                raise
            wait = registry.outage_wait_s * 2**context.retry_number
            if context.retry_number < registry.outage_retries:
                context.log.warning(
                    "MLflow tracking server %s unreachable (%s); retry %d of %d in %.0fs",
                    registry.tracking_uri,
                    type(error).__name__,
                    context.retry_number + 1,
                    registry.outage_retries,
                    wait,
                )
            raise dg.RetryRequested(max_retries=registry.outage_retries, seconds_to_wait=wait) from error

    if inspect.isgeneratorfunction(compute):

        @functools.wraps(compute)
        def events(context: dg.AssetExecutionContext, **kwargs: Any) -> Iterator[Any]:
            with outage_becomes_retry(context, kwargs["registry"]):
                yield from compute(context, **kwargs)

        return events  # type: ignore[return-value]

    @functools.wraps(compute)
    def result(context: dg.AssetExecutionContext, **kwargs: Any) -> Any:
        with outage_becomes_retry(context, kwargs["registry"]):
            return compute(context, **kwargs)

    return result  # type: ignore[return-value]
