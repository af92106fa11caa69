"""Ingestion: the source's batches become Dagster partitions, each batch a stored raw table."""

import dagster as dg

from mlops_assets.assets.common import ModelPipeline, frame_schema, table
from resources.lake import Lake
from resources.landing import LandingZone


def build_ingestion_assets(pipeline: ModelPipeline) -> list[dg.AssetsDefinition]:
    spec = pipeline.spec

    @dg.asset(
        key=pipeline.key("source_batches"),
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
        from mlops_assets.ml.data import batch_key, read_source, sorted_batches

        frame = read_source(spec.source)
        if spec.source.batch_column is None:
            counts = {"all": len(frame)}
        else:
            counts = frame[spec.source.batch_column].dropna().map(batch_key).value_counts().to_dict()
        batches = sorted_batches(counts)
        known = set(context.instance.get_dynamic_partitions(pipeline.partitions.name))
        new = [b for b in batches if b not in known]
        if new:
            context.instance.add_dynamic_partitions(pipeline.partitions.name, new)
        context.log.info("%s: %d batches in the source, %d newly registered", spec.name, len(batches), len(new))
        return dg.MaterializeResult(
            metadata={
                "batches": len(batches),
                "newly_registered": dg.MetadataValue.json(new),
                "rows": len(frame),
                "rows_per_batch": table([{"batch": b, "rows": int(counts[b])} for b in batches], ["batch", "rows"]),
            }
        )

    @dg.asset(
        key=pipeline.key("raw_batch"),
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
        from mlops_assets.ml.data import frame_fingerprint, read_batch, read_landed_file

        batch = context.partition_key
        landed = landing.file_for(spec.name, batch)
        if landed is not None:
            try:
                frame = read_landed_file(landed, batch=batch, batch_column=spec.source.batch_column)
            except ValueError as e:
                raise dg.Failure(str(e), metadata={"file": landed}) from e
            origin = landed
        else:
            frame = read_batch(spec.source, batch)
            origin = spec.source.uri
        if frame.empty and landed is None:
            raise dg.Failure(f"{spec.name}: batch {batch} is neither in the source nor in {landing.folder(spec.name)}")
        fingerprint = frame_fingerprint(frame)
        lake.write_frame(spec.name, "raw_batch", frame, batch)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(frame),
                "dagster/column_schema": frame_schema(frame),
                "fingerprint": fingerprint,
                "source": origin,
                "path": dg.MetadataValue.path(lake.uri(spec.name, "raw_batch", batch)),
            },
            data_version=dg.DataVersion(fingerprint),
        )

    return [source_batches, raw_batch]
