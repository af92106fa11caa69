"""What every asset builder of one model shares: the spec, its columns and its partitions."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from mlops_assets.ml.data import ResolvedColumns
from mlops_assets.spec import PipelineSpec

TAG_MODEL = "mlops/model"
TAG_TRIGGER = "mlops/trigger"


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
        return dg.DynamicPartitionsDefinition(name=f"{self.name}_batches")

    def key(self, noun: str) -> dg.AssetKey:
        return dg.AssetKey([self.name, noun])

    @property
    def tags(self) -> dict[str, str]:
        return {TAG_MODEL: self.name}


def frame_schema(frame) -> dg.TableSchema:  # noqa: ANN001 - pandas stays out of module imports
    return dg.TableSchema(columns=[dg.TableColumn(str(c), str(t)) for c, t in frame.dtypes.items()])


def table(rows: list[dict], columns: list[str]) -> dg.TableMetadataValue:
    """A metadata table; None becomes an empty cell rather than the string 'None'."""
    schema = dg.TableSchema(columns=[dg.TableColumn(c) for c in columns])
    records = [dg.TableRecord({c: ("" if r.get(c) is None else _cell(r.get(c))) for c in columns}) for r in rows]
    return dg.MetadataValue.table(records, schema=schema)


def _cell(value: object) -> str | int | float | bool:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, int | bool | str):
        return value
    return str(value)
