"""The stored form: top-k per row plus one residual sum, file metadata, and one row's lookup."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_assets.ml.attribution.core import Attributions
from mlops_assets.ml.attribution.storage import (
    SCHEMA_VERSION,
    read_attributions,
    read_info,
    row_explanation,
    write_attributions,
)

COLUMNS = ("age", "prestg10", "childs", "occrecode", "wrkstat")


def attributions(n: int, seed: int = 0) -> Attributions:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, len(COLUMNS))) * np.array([1.0, 0.5, 0.1, 2.0, 0.3])
    return Attributions(
        columns=COLUMNS,
        values=values,
        base_value=-1.25,
        raw_output=-1.25 + values.sum(axis=1) + rng.normal(scale=1e-3, size=n),
        method="integrated_gradients",
    )


def write(where: str | io.BytesIO, a: Attributions, top_k: int = 3, **kwargs: object) -> object:
    return write_attributions(
        where, a, top_k=top_k, model_version="4", model_family="torch_mlp", batch="2018", **kwargs
    )


def test_each_row_keeps_its_largest_contributions_and_the_rest_as_one_sum(tmp_path: Path) -> None:
    a = attributions(50)
    path = str(tmp_path / "2018.parquet")
    write(path, a, top_k=3)
    info, frame = read_attributions(path)

    assert len(frame) == 50 and info.top_k == 3
    for r in range(50):
        by_size = sorted(range(len(COLUMNS)), key=lambda j: -abs(a.values[r, j]))
        stored = frame.iloc[r]
        assert [stored[f"top_{i}_column"] for i in (1, 2, 3)] == [COLUMNS[j] for j in by_size[:3]]
        assert [stored[f"top_{i}_value"] for i in (1, 2, 3)] == [a.values[r, j] for j in by_size[:3]]
        assert stored["rest"] == pytest.approx(sum(a.values[r, j] for j in by_size[3:]), abs=1e-12)
        assert stored["row"] == r
    rebuilt = frame[["top_1_value", "top_2_value", "top_3_value", "rest"]].sum(axis=1) + frame["base_value"]
    assert np.allclose(rebuilt + frame["residual"], frame["raw_output"], atol=1e-12, rtol=0)
    assert np.abs(frame["residual"]).max() > 1e-5, "the planted completeness error must survive storage"


def test_file_metadata_holds_importance_over_all_columns_not_only_the_top_k() -> None:
    a = attributions(200)
    buffer = io.BytesIO()
    write(buffer, a, top_k=1)
    buffer.seek(0)
    info = read_info(buffer)

    assert info.schema_version == SCHEMA_VERSION
    assert (info.model_version, info.model_family, info.batch, info.rows) == ("4", "torch_mlp", "2018", 200)
    assert info.columns == list(COLUMNS)
    for j, column in enumerate(COLUMNS):
        assert info.importance[column] == pytest.approx(float(np.mean(np.abs(a.values[:, j]))), rel=1e-12)
    assert info.max_abs_residual == pytest.approx(float(np.max(np.abs(a.residual))), rel=1e-12)


def test_one_row_is_found_by_its_number_in_a_file_of_many_row_groups(tmp_path: Path) -> None:
    a = attributions(40_000)
    path = str(tmp_path / "big.parquet")
    rows = np.arange(40_000) + 1000
    write(path, a, rows=rows)

    explanation = row_explanation(path, 37_017)
    index = 36_017
    assert explanation.row == 37_017
    assert explanation.raw_output == a.raw_output[index]
    assert explanation.probability == pytest.approx(1 / (1 + np.exp(-a.raw_output[index])), rel=1e-12)
    largest = int(np.argmax(np.abs(a.values[index])))
    assert explanation.top[0].column == COLUMNS[largest]
    assert explanation.top[0].value == a.values[index, largest]
    assert (explanation.model_version, explanation.base_value, explanation.other_columns) == ("4", -1.25, 2)
    with pytest.raises(KeyError, match="batch 2018: no explained row 5; it has 40000 rows"):
        row_explanation(path, 5)


def test_k_beyond_the_columns_keeps_them_all_and_ties_keep_column_order(tmp_path: Path) -> None:
    values = np.array([[0.5, -0.5, 0.25, 0.0, 0.5]])
    a = Attributions(
        columns=COLUMNS, values=values, base_value=0.0, raw_output=values.sum(axis=1), method="linear_exact"
    )
    path = str(tmp_path / "tie.parquet")
    info = write(path, a, top_k=10)
    explanation = row_explanation(path, 0)

    assert info.top_k == len(COLUMNS) and explanation.other_columns == 0
    assert [c.column for c in explanation.top] == ["age", "prestg10", "wrkstat", "childs", "occrecode"]
    assert explanation.rest == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_k": 0}, "explain.top_k: must be at least 1"),
        ({"rows": [0, 1]}, "rows: 2 row numbers for 3 explained rows"),
        ({"rows": [0, 1, 1]}, "rows: row numbers repeat"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write(str(tmp_path / "x.parquet"), attributions(3), **kwargs)
    assert not (tmp_path / "x.parquet").exists()


def test_a_file_that_is_not_ours_or_of_another_version_is_refused(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    other = tmp_path / "predictions.parquet"
    pd.DataFrame({"row": [0]}).to_parquet(other)
    with pytest.raises(ValueError, match="predictions.parquet: not an attributions file"):
        read_info(str(other))

    path = tmp_path / "old.parquet"
    write(str(path), attributions(3))
    table = pq.read_table(path)
    metadata = {k: v.replace(b'"schema_version": 1', b'"schema_version": 0') for k, v in table.schema.metadata.items()}
    pq.write_table(table.replace_schema_metadata(metadata), path)
    with pytest.raises(ValueError, match="old.parquet: attributions schema_version 0, this code reads 1"):
        row_explanation(str(path), 0)


def test_writing_and_reading_a_row_loads_no_ml_library(tmp_path: Path) -> None:
    """What ``mlops explain --row`` will run: numpy and pyarrow only, no model library."""
    import subprocess
    import sys

    probe = f"""
import sys, numpy as np
from mlops_assets.ml.attribution.core import Attributions
from mlops_assets.ml.attribution import row_explanation, write_attributions
v = np.ones((3, 2))
a = Attributions(columns=("a", "b"), values=v, base_value=0.0, raw_output=v.sum(1), method="linear_exact")
write_attributions({str(tmp_path / "b.parquet")!r}, a, top_k=1, model_version="1", model_family="f", batch="b")
assert row_explanation({str(tmp_path / "b.parquet")!r}, 2).row == 2
print([m for m in ("sklearn", "torch", "scipy", "mlflow", "shap") if m in sys.modules])
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
