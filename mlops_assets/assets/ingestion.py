"""Ingestion: the source's batches become Dagster partitions, each batch a stored raw table."""

from typing import TYPE_CHECKING

import dagster as dg

from mlops_assets.assets.common import ModelPipeline, frame_schema, table
from mlops_assets.contract import Asset, Meta
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
        kinds={"pandas", "parquet"},
        description=(
            "One batch exactly as it arrived: every column, every row.\n\n"
            "A file in the landing folder named after the batch takes precedence over the source. "
            "Stored as Parquet in the lake with its row count, schema and a content fingerprint; "
            "the fingerprint is what later decides whether a model must be retrained."
        ),
    )
    def raw_batch(context: dg.AssetExecutionContext, lake: Lake, landing: LandingZone) -> dg.MaterializeResult:
        batch = pipeline.batch(context)
        frame, origin = read_raw_batch(spec, batch, landing)
        lake.write_frame(spec.name, Asset.RAW_BATCH, frame, batch)
        return raw_batch_result(frame, origin, lake.uri(spec.name, Asset.RAW_BATCH, batch))

    return [source_batches, raw_batch]


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


def raw_batch_result(frame: "pd.DataFrame", origin: str, path: str) -> dg.MaterializeResult:
    from mlops_assets.ml.data import frame_fingerprint

    fingerprint = frame_fingerprint(frame)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "dagster/column_schema": frame_schema(frame),
            Meta.FINGERPRINT: fingerprint,
            "source": origin,
            "path": dg.MetadataValue.path(path),
        },
        data_version=dg.DataVersion(fingerprint),
    )
