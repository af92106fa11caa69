"""Validation: a Great Expectations suite learned from the first training data, run on every batch.

Each expectation is its own blocking asset check on ``validated_batch``, run on the batch's newest
landed raw content version. A batch that fails an error-severity expectation fails the step after
its check results are recorded: nothing is written, so the batch's last good ``validated_batch``
(if any, with the content version it came from) stays as it was, and nothing downstream runs.
"""

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import dagster as dg

from mlops_assets.assets.common import BatchEvents, BatchRun, ModelPipeline, table
from mlops_assets.assets.ingestion import landed_version
from mlops_assets.contract import Asset, Meta, raw_version_file
from mlops_assets.ml.validation import planned_checks
from resources.lake import Lake

if TYPE_CHECKING:
    import pandas as pd

    from mlops_assets.ml.validation import Outcome, Suite
    from mlops_assets.records import RawVersion


def build_validation_assets(pipeline: ModelPipeline) -> list[dg.AssetsDefinition]:
    spec = pipeline.spec
    until = spec.training.initial_until

    @dg.asset(
        key=pipeline.key(Asset.VALIDATION_SUITE),
        group_name=pipeline.name,
        deps=[pipeline.key(Asset.SOURCE_BATCHES)],
        kinds={"great_expectations"},
        description=(
            "The expectations every batch must meet, learned from the first training data "
            f"(the source's batches up to {until if until is not None else 'the last'}) plus the spec's own.\n\n"
            "Numeric columns get a type, a null share and a range (the training range widened "
            "by `validation.range_margin`); categorical columns a null share and their known "
            "categories. The label gets the same (a type and range, or its known values, and a null "
            "share), checked only on batches with labelled rows; only its type blocks. "
            "Rematerialize it to re-learn the suite."
        ),
    )
    def validation_suite(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
        from mlops_assets.ml.data import initial_window, read_source
        from mlops_assets.ml.validation import infer_suite

        reference = initial_window(spec, read_source(spec.source))
        if reference.empty:
            raise dg.Failure(f"{spec.name}: the source has no rows up to training.initial_until={until}")
        suite = infer_suite(spec, pipeline.columns, reference)
        lake.write_bytes(spec.name, Asset.VALIDATION_SUITE, suite.to_json().encode(), ext="json")
        context.log.info("%s: %d expectations learned from %d rows", spec.name, len(suite.expectations), len(reference))
        return suite_result(pipeline, suite, reference)

    @dg.asset(
        key=pipeline.key(Asset.VALIDATED_BATCH),
        group_name=pipeline.name,
        partitions_def=pipeline.partitions,
        deps=[pipeline.key(Asset.RAW_BATCH), validation_suite],
        check_specs=expectation_check_specs(pipeline),
        kinds={"great_expectations", "parquet"},
        description=(
            "A batch that met every error-severity expectation of the validation suite.\n\n"
            "Each expectation is an asset check of this asset. A failed batch is not written and "
            "blocks everything downstream; its failure names the column and the row count."
        ),
    )
    def validated_batch(context: dg.AssetExecutionContext, lake: Lake) -> BatchEvents:
        yield from validated_batch_work(pipeline, BatchRun.of(pipeline, context), lake=lake)

    return [validation_suite, validated_batch]


def validated_batch_work(pipeline: ModelPipeline, run: BatchRun, *, lake: Lake) -> BatchEvents:
    """Checks the batch's newest landed raw version against the suite; writes it only when no
    error-severity expectation failed."""
    from mlops_assets.ml.validation import Suite, validate

    spec, batch = pipeline.spec, run.batch
    landed = landed_version(lake, spec.name, batch)
    if landed is None:
        raise dg.Failure(f"{spec.name}: batch {batch} has no landed raw version; materialize raw_batch first")
    version = landed.content_version
    frame = lake.read_frame(spec.name, Asset.RAW_BATCH, raw_version_file(batch, version))
    suite = Suite.from_json(lake.read_bytes(spec.name, Asset.VALIDATION_SUITE, ext="json").decode())
    outcomes = validate(frame, suite, batch=batch)
    yield from check_results(outcomes, batch=batch, rows=len(frame))
    stop_if_blocked(spec.name, batch, outcomes, landed=landed, kept=validated_version(lake, spec.name, batch))
    for outcome in outcomes:
        if not outcome.success:
            run.log.warning("%s", outcome.message)
    # The content version travels in the file itself, so features and training can never
    # attribute these rows to another version.
    lake.write_frame(spec.name, Asset.VALIDATED_BATCH, frame, batch, tags={Meta.CONTENT_VERSION: version})
    yield validated_result(frame, outcomes, lake.uri(spec.name, Asset.VALIDATED_BATCH, batch), version=version)


def expectation_check_specs(pipeline: ModelPipeline) -> list[dg.AssetCheckSpec]:
    """One check per planned expectation; error-severity ones block everything downstream."""
    return [
        dg.AssetCheckSpec(
            name=name,
            asset=pipeline.key(Asset.VALIDATED_BATCH),
            description=description,
            blocking=severity == "error",
        )
        for name, description, severity in planned_checks(pipeline.spec, pipeline.columns)
    ]


def suite_result(pipeline: ModelPipeline, suite: "Suite", reference: "pd.DataFrame") -> dg.MaterializeResult:
    from mlops_assets.ml.data import batch_values

    rows = [
        {
            "check": e.check,
            "expectation": e.type,
            "severity": e.severity,
            "kwargs": {k: v for k, v in e.kwargs.items() if k != "column"},
        }
        for e in suite.expectations
    ]
    return dg.MaterializeResult(
        metadata={
            "learned_from_batches": dg.MetadataValue.json(batch_values(reference, pipeline.spec.source.batch_column)),
            "learned_from_rows": len(reference),
            "expectations": table(rows, ["check", "expectation", "severity", "kwargs"]),
        }
    )


def check_results(outcomes: "Sequence[Outcome]", *, batch: str, rows: int) -> Iterator[dg.AssetCheckResult]:
    """One check result per expectation, each naming its batch."""
    for outcome in outcomes:
        yield dg.AssetCheckResult(
            check_name=outcome.expectation.check,
            passed=outcome.success,
            severity=(
                dg.AssetCheckSeverity.ERROR if outcome.expectation.severity == "error" else dg.AssetCheckSeverity.WARN
            ),
            description=outcome.message,
            metadata={
                Meta.BATCH: batch,
                "expectation": outcome.expectation.type,
                "unexpected_count": outcome.unexpected_count if outcome.unexpected_count is not None else -1,
                "rows": outcome.element_count if outcome.element_count is not None else rows,
                "observed": _observed_metadata(outcome.observed),
            },
        )


def validated_version(lake: Lake, name: str, batch: str) -> str | None:
    """The raw content version the batch's current validated data came from (None: the batch has
    none, or it was validated before content versions were recorded)."""
    if not lake.exists(name, Asset.VALIDATED_BATCH, batch):
        return None
    return lake.frame_tags(name, Asset.VALIDATED_BATCH, batch).get(Meta.CONTENT_VERSION)


def stop_if_blocked(
    name: str,
    batch: str,
    outcomes: "Sequence[Outcome]",
    *,
    landed: "RawVersion | None" = None,
    kept: str | None = None,
) -> None:
    """Fails the step, before anything is written, when an error-severity expectation failed;
    the message names the landed file and version, and the version downstream keeps reading."""
    blocking = [o for o in outcomes if o.blocking_failure]
    if blocking:
        source = f" ({landed.origin}, content version {landed.content_version})" if landed else ""
        keeps = (
            f"; downstream keeps content version {kept}" if kept else "; downstream keeps its earlier outputs, if any"
        )
        raise dg.Failure(
            description=f"{name} batch {batch}{source} failed validation; nothing was written{keeps}:\n"
            + "\n".join(f"- {o.message}" for o in blocking),
            metadata={
                "failed_checks": dg.MetadataValue.json([o.expectation.check for o in blocking]),
                **({"file": landed.origin, Meta.CONTENT_VERSION: landed.content_version} if landed else {}),
                **({"kept_content_version": kept} if kept else {}),
            },
        )


def validated_result(
    frame: "pd.DataFrame", outcomes: "Sequence[Outcome]", path: str, *, version: str
) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            Meta.CONTENT_VERSION: version,
            Meta.EXPECTATIONS_PASSED: sum(o.success for o in outcomes),
            Meta.EXPECTATIONS_TOTAL: len(outcomes),
            "path": dg.MetadataValue.path(path),
        }
    )


def _observed_metadata(value: object) -> dg.MetadataValue:
    """What the expectation observed, as a bounded sample: values come from the data (unexpected
    values, a file's column names), and the event log keeps every check result."""
    from mlops_assets.untrusted import bounded

    if isinstance(value, list | tuple | dict):
        return dg.MetadataValue.json(_jsonable(value))
    return dg.MetadataValue.text("" if value is None else str(bounded(value)))


def _jsonable(value: object, depth: int = 0) -> object:
    from mlops_assets.untrusted import SAMPLE_VALUES, bounded

    if value is None or isinstance(value, str | int | float | bool):
        return bounded(value)
    if depth > 2:
        return bounded(str(value))
    if isinstance(value, list | tuple):
        return [_jsonable(v, depth + 1) for v in list(value)[:SAMPLE_VALUES]]
    if isinstance(value, dict):
        return {str(bounded(k)): _jsonable(v, depth + 1) for k, v in list(value.items())[:SAMPLE_VALUES]}
    return bounded(str(value))
