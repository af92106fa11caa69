"""Landed files over the spec's limits are refused, from the Parquet footer or a bounded read
where the format allows, naming the limit, the file and the value."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_assets.ml.data import read_landed_file
from mlops_assets.ml.limits import LimitExceeded
from mlops_assets.spec import LimitsSpec


def dictionary_bomb(path: Path, *, rows: int, value_bytes: int) -> Path:
    """A Parquet file whose one string column holds the same long value in every row,
    dictionary-encoded: a few kB on disk, ``rows * value_bytes`` decoded."""
    values = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype="int32")), pa.array(["x" * value_bytes]))
    pq.write_table(pa.table({"occupation": values, "age": np.full(rows, 30)}), path, compression="zstd")
    return path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_dictionary_bomb_is_refused_without_decoding_it(tmp_path: Path) -> None:
    # 100k rows of a 10 kB value: a ~15 kB file that would decode to 1 GB
    bomb = dictionary_bomb(tmp_path / "2030.parquet", rows=100_000, value_bytes=10_000)
    assert bomb.stat().st_size < 50_000
    before = _peak_rss_mb()
    with pytest.raises(LimitExceeded, match=r"limits\.max_decoded_bytes") as refused:
        read_landed_file(str(bomb), batch="2030", batch_column=None)
    assert str(bomb) in str(refused.value)
    assert refused.value.value >= 100_000 * 10_000
    assert _peak_rss_mb() - before < 200  # a decode would have taken a GB


def test_a_bomb_under_the_limit_is_read(tmp_path: Path) -> None:
    small = dictionary_bomb(tmp_path / "2030.parquet", rows=1_000, value_bytes=100)
    frame = read_landed_file(str(small), batch="2030", batch_column=None)
    assert len(frame) == 1_000 and frame["occupation"].iloc[0] == "x" * 100


@pytest.mark.parametrize(
    ("limit", "value", "frame"),
    [
        ("max_rows", 11, pd.DataFrame({"a": range(11)})),
        ("max_columns", 6, pd.DataFrame({f"c{i}": [1] for i in range(6)})),
        ("max_cell_bytes", 2_000, pd.DataFrame({"a": ["y" * 2_000, "z"]})),
    ],
)
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_each_limit_names_itself_the_file_and_the_value(
    tmp_path: Path, limit: str, value: int, frame: pd.DataFrame, suffix: str
) -> None:
    path = tmp_path / f"2030{suffix}"
    frame.to_parquet(path) if suffix == ".parquet" else frame.to_csv(path, index=False)
    limits = LimitsSpec(max_rows=10, max_columns=5, max_cell_bytes=1_000)
    with pytest.raises(LimitExceeded) as refused:
        read_landed_file(str(path), batch="2030", batch_column=None, limits=limits)
    assert refused.value.limit == limit
    assert refused.value.value == value
    assert f"limits.{limit}" in str(refused.value) and str(path) in str(refused.value)
    at_limit = LimitsSpec(max_rows=value, max_columns=value, max_cell_bytes=value).model_copy(
        update={k: v for k, v in limits.model_dump().items() if k != limit}
    )
    assert len(read_landed_file(str(path), batch="2030", batch_column=None, limits=at_limit)) == len(frame)


def test_file_bytes(tmp_path: Path) -> None:
    path = tmp_path / "2030.csv"
    pd.DataFrame({"a": range(1000)}).to_csv(path, index=False)
    with pytest.raises(LimitExceeded, match=r"limits\.max_file_bytes = 100"):
        read_landed_file(str(path), batch="2030", batch_column=None, limits=LimitsSpec(max_file_bytes=100))


def test_a_csv_header_without_end_is_refused_from_a_bounded_sniff(tmp_path: Path) -> None:
    path = tmp_path / "2030.csv"
    path.write_bytes(b"a" * (2 << 20))
    with pytest.raises(LimitExceeded, match="header line"):
        read_landed_file(str(path), batch="2030", batch_column=None)


def test_not_parquet_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "2030.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match=r"2030\.parquet: cannot be read as parquet"):
        read_landed_file(str(path), batch="2030", batch_column=None)


def test_the_landing_scan_refuses_a_file_over_max_file_bytes(tmp_path: Path) -> None:
    from resources.landing import LandingZone

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "2030.csv").write_bytes(b"a\n" + b"1\n" * 100)
    (folder / "2031.csv").write_bytes(b"a\n1\n")
    scan = LandingZone(root=str(tmp_path)).scan("m", max_bytes=100)
    assert [f.batch for f in scan.files] == ["2031"]
    assert [(r.name, r.reason) for r in scan.refused] == [
        ("2030.csv", "it is 202 bytes, over limits.max_file_bytes = 100")
    ]
