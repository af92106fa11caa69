"""Ingestion: the source's batches become Dagster partitions, each batch a stored raw table."""

from typing import TYPE_CHECKING

import dagster as dg

from mlops_assets.assets.common import BatchEvents, BatchRun, ModelPipeline, frame_schema, table
from mlops_assets.assets.training import trained_content
from mlops_assets.contract import RELANDING_CHECK, Asset, Meta, raw_landed_record, raw_version_file
from mlops_assets.records import RawVersion
from mlops_assets.spec import PipelineSpec
from resources.lake import Lake
from resources.landing import LandingZone

if TYPE_CHECKING:
    import pandas as pd


def build_ingestion_assets(pipeline: ModelPipeline) -> list[dg.AssetsDefinition]:
    spec = pipeline.spec

    @dg.asset(
        key=pipeline.key(Asset.SOURCE_BATCHES),
        group_name=pipeline.name,
        kinds={"pandas"},
        description=(
            f"The batches in {spec.source.uri}, one per distinct `{spec.source.batch_column or '(whole source)'}`.\n\n"
            "Materializing it registers every batch as a partition of the per-batch assets, so "
            "they can be materialized from the UI, the CLI or a backfill. It lists each batch's "
            "row count; batches already registered are left as they are."
        ),
    )
    def source_batches(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from mlops_assets.ml.data import read_source

        frame = read_source(spec.source)
        counts, refused = batch_counts(spec, frame)
        new = register_batches(context.instance, pipeline, list(counts))
        context.log.info("%s: %d batches in the source, %d newly registered", spec.name, len(counts), len(new))
        if refused:
            # The valid batches are registered first: one bad value never stops the others.
            raise dg.Failure(
                f"{spec.name}: {spec.source.uri}: column {spec.source.batch_column!r} holds "
                f"{len(refused)} value(s) that are no batch name, their rows are not ingested: "
                + "; ".join(refused[:10]),
                metadata={"refused_batches": dg.MetadataValue.json(refused[:50]), "registered": len(counts)},
            )
        return source_batches_result(counts, new, rows=len(frame))

    @dg.asset(
        key=pipeline.key(Asset.RAW_BATCH),
        group_name=pipeline.name,
        partitions_def=pipeline.partitions,
        deps=[source_batches],
        check_specs=[
            dg.AssetCheckSpec(
                RELANDING_CHECK,
                asset=pipeline.key(Asset.RAW_BATCH),
                description="The landing does not change the content of a batch that a registered model "
                "version was trained on (that version's lineage keeps naming the content it trained on).",
            )
        ],
        kinds={"pandas", "parquet"},
        description=(
            "One batch exactly as it arrived: every column, every row.\n\n"
            "A file in the landing folder named after the batch takes precedence over the source. "
            "Each content version (a hash of the rows) is stored on its own, "
            "`raw_batch/<batch>/<content version>.parquet`, and never overwritten: a batch landed "
            "again is a new version that `validated_batch` checks, while everything downstream "
            "keeps the earlier version's outputs until the new one passes. Its metadata has the row "
            "count, schema and the content version; the check flags a landing that changes a batch "
            "a registered model version was trained on."
        ),
    )
    def raw_batch(context: dg.AssetExecutionContext, lake: Lake, landing: LandingZone) -> BatchEvents:
        yield from raw_batch_work(pipeline, BatchRun.of(pipeline, context), lake=lake, landing=landing)

    return [source_batches, raw_batch]


def raw_batch_work(pipeline: ModelPipeline, run: BatchRun, *, lake: Lake, landing: LandingZone) -> BatchEvents:
    """Reads the batch (landed file, else source) and stores it as a new content version."""
    spec, batch = pipeline.spec, run.batch
    frame, origin = read_raw_batch(spec, batch, landing)
    landed, previous = store_raw_version(lake, spec.name, batch, frame, origin)
    trained = trained_content(run.instance, pipeline, lake, batch)
    path = lake.uri(spec.name, Asset.RAW_BATCH, raw_version_file(batch, landed.content_version))
    yield raw_batch_result(frame, landed, previous, trained, path=path)


def batch_counts(spec: PipelineSpec, frame: "pd.DataFrame") -> tuple[dict[str, int], list[str]]:
    """Rows per batch of the source, in batch order, and why each refused value is no batch name."""
    from mlops_assets.batches import BatchNameError, batch_key, check_batch_name, sorted_batches

    if spec.source.batch_column is None:
        counts = {"all": len(frame)}
    else:
        counts = frame[spec.source.batch_column].dropna().map(batch_key).value_counts().to_dict()
    refused = []
    for value in list(counts):
        try:
            check_batch_name(value, where="value")
        except BatchNameError as e:
            refused.append(str(e))
            del counts[value]
    return {b: int(counts[b]) for b in sorted_batches(counts)}, sorted(refused)


def register_batches(instance: dg.DagsterInstance, pipeline: ModelPipeline, batches: list[str]) -> list[str]:
    """Adds the batches not yet registered as partitions; returns them."""
    known = set(instance.get_dynamic_partitions(pipeline.partitions.name))
    new = [b for b in batches if b not in known]
    if new:
        instance.add_dynamic_partitions(pipeline.partitions.name, new)
    return new


def source_batches_result(counts: dict[str, int], new: list[str], *, rows: int) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={
            "batches": len(counts),
            "newly_registered": dg.MetadataValue.json(new),
            "rows": rows,
            "rows_per_batch": table([{"batch": b, "rows": n} for b, n in counts.items()], ["batch", "rows"]),
        }
    )


def read_raw_batch(spec: PipelineSpec, batch: str, landing: LandingZone) -> "tuple[pd.DataFrame, str]":
    """The batch's rows and where they came from: a landed file named after it, else the source.

    Raises:
        Failure: the landed file cannot be read (names it), or the batch is nowhere.
    """
    from mlops_assets.ml.data import read_batch, read_landed_file
    from mlops_assets.ml.limits import LimitExceeded

    try:
        landed = landing.file_for(spec.name, batch)
    except ValueError as e:  # a refused entry (a symlink, ...) named after the batch: never the source instead
        raise dg.Failure(str(e), allow_retries=False) from e
    if landed is not None:
        try:
            frame = read_landed_file(landed, batch=batch, batch_column=spec.source.batch_column, limits=spec.limits)
        except LimitExceeded as e:
            raise dg.Failure(
                str(e),
                metadata={"file": landed, "limit": f"limits.{e.limit}", "value": e.value, "allowed": e.allowed},
                allow_retries=False,
            ) from e
        except ValueError as e:
            raise dg.Failure(str(e), metadata={"file": landed}) from e
        return frame, landed
    frame = read_batch(spec.source, batch)
    if frame.empty:
        raise dg.Failure(f"{spec.name}: batch {batch} is neither in the source nor in {landing.folder(spec.name)}")
    return frame, spec.source.uri


def landed_version(lake: Lake, name: str, batch: str) -> RawVersion | None:
    """The batch's newest landed raw version, None before its first landing."""
    partition = raw_landed_record(batch)
    if not lake.exists(name, Asset.RAW_BATCH, partition, "json"):
        return None
    origin = lake.uri(name, Asset.RAW_BATCH, partition, "json")
    return RawVersion.from_dict(lake.read_json(name, Asset.RAW_BATCH, partition), origin=origin)


def store_raw_version(
    lake: Lake, name: str, batch: str, frame: "pd.DataFrame", origin: str
) -> tuple[RawVersion, RawVersion | None]:
    """Stores ``frame`` as a content version of ``batch`` (unless that version is stored already)
    and makes it the landed one; returns it and the version landed before (None: none was).

    The version's file is written before the record that names it: a step that fails between the
    two leaves the earlier version landed, never a record of data that is not there.
    """
    from mlops_assets.ml.data import frame_fingerprint

    previous = landed_version(lake, name, batch)
    landed = RawVersion(batch=batch, content_version=frame_fingerprint(frame), origin=origin)
    file = raw_version_file(batch, landed.content_version)
    if not lake.exists(name, Asset.RAW_BATCH, file):
        lake.write_frame(name, Asset.RAW_BATCH, frame, file)
    lake.write_json(name, Asset.RAW_BATCH, landed.to_dict(), raw_landed_record(batch))
    return landed, previous


def relanding_check(
    landed: RawVersion, previous: RawVersion | None, trained: dict[str, str | None]
) -> dg.AssetCheckResult:
    """Fails when this landing changes the batch's content while a registered version was trained
    on other content of it: once per such landing (landing the same content again passes)."""
    batch, version = landed.batch, landed.content_version
    other = {v: c for v, c in trained.items() if c != version}
    unchanged = previous is not None and previous.content_version == version
    if not other or unchanged:
        why = (
            f"batch {batch}: content version {version} is the one landed before"
            if unchanged
            else f"batch {batch}: no registered version was trained on other content of it"
        )
        return dg.AssetCheckResult(
            check_name=RELANDING_CHECK, passed=True, description=why, metadata={Meta.BATCH: batch}
        )
    trained_on = ", ".join(
        f"v{v} on {c if c is not None else 'an unrecorded content version'}" for v, c in sorted(other.items())
    )
    return dg.AssetCheckResult(
        check_name=RELANDING_CHECK,
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"batch {batch} landed again from {landed.origin} as content version {version}, "
            f"replacing {previous.content_version if previous else 'the version trained on'}; registered "
            f"version(s) trained on it: {trained_on}. Their lineage keeps the content they were trained "
            "on (still stored); a retrain would use the new content once it passes validation"
        ),
        metadata={
            Meta.BATCH: batch,
            Meta.CONTENT_VERSION: version,
            Meta.TRAINED_VERSIONS: dg.MetadataValue.json({v: c for v, c in sorted(other.items())}),
        },
    )


def raw_batch_result(
    frame: "pd.DataFrame",
    landed: RawVersion,
    previous: RawVersion | None,
    trained: dict[str, str | None],
    *,
    path: str,
) -> dg.MaterializeResult:
    version = landed.content_version
    other = {v: c for v, c in sorted(trained.items()) if c != version}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "dagster/column_schema": frame_schema(frame),
            Meta.FINGERPRINT: version,
            Meta.CONTENT_VERSION: version,
            Meta.PREVIOUS_CONTENT_VERSION: previous.content_version if previous else "",
            Meta.TRAINED_VERSIONS: dg.MetadataValue.json(other),
            "source": landed.origin,
            "path": dg.MetadataValue.path(path),
        },
        data_version=dg.DataVersion(version),
        check_results=[relanding_check(landed, previous, trained)],
    )
