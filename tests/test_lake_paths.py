"""Every path the lake and the landing zone build stays under its root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlops_assets.batches import BatchNameError
from resources.lake import Lake, contained
from resources.landing import LandingZone


@pytest.mark.parametrize("root", ["/tmp/lake", "memory://bucket/lake", "file:///tmp/lake"])
@pytest.mark.parametrize(
    "partition", ["../../x", "..", "a/../../b", "/etc/passwd", "a//b", "a\\..\\b", "c:x", "a\x00b"]
)
def test_lake_refuses_partitions_that_leave_the_root(root: str, partition: str) -> None:
    lake = Lake(root=root)
    with pytest.raises(ValueError, match="not a plain file name|leaves the root") as error:
        lake.path("m", "raw_batch", partition)
    assert "m/raw_batch" in str(error.value)


@pytest.mark.parametrize("root", ["/tmp/lake", "memory://bucket/lake"])
def test_lake_keeps_plain_partitions_and_nested_training_files(root: str) -> None:
    lake = Lake(root=root)
    assert lake.path("m", "raw_batch", "2018").endswith("/lake/m/raw_batch/2018.parquet")
    assert lake.path("m", "training_dataset", "abc123/train").endswith("/lake/m/training_dataset/abc123/train.parquet")


def test_a_traversal_write_touches_nothing(tmp_path: Path) -> None:
    import pandas as pd

    lake = Lake(root=str(tmp_path / "lake"))
    with pytest.raises(ValueError):
        lake.write_frame("m", "raw_batch", pd.DataFrame({"a": [1]}), "../../../escaped")
    assert sorted(p.name for p in tmp_path.rglob("*")) == []


def test_contained_refuses_a_model_or_asset_segment_too() -> None:
    with pytest.raises(ValueError, match="not a plain file name"):
        contained("/r", "../m/a/x.parquet", what="t")
    assert contained("/r", "m/a/x.parquet", what="t") == "/r/m/a/x.parquet"


def test_landing_scan_refuses_links_dirs_fifos_bad_names(tmp_path: Path) -> None:
    zone = LandingZone(root=str(tmp_path))
    folder = zone.folder("m")
    folder.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    (folder / "2018.parquet").write_bytes(b"x")
    (folder / "2030.csv").symlink_to(secret)
    (folder / "2031.parquet").mkdir()
    os.mkfifo(folder / "2032.csv")
    (folder / " 2019.csv").write_bytes(b"x")
    (folder / "1e9 x.csv").write_bytes(b"x")
    os.close(os.open(os.fsencode(folder) + b"/\xff2033.parquet", os.O_CREAT | os.O_WRONLY))
    (folder / "notes.txt").write_text("ignored")
    (folder / ".2034.parquet.tmp").write_bytes(b"staging")
    scan = zone.scan("m")
    assert [f.batch for f in scan.files] == ["2018"]
    reasons = {r.name: r.reason for r in scan.refused}
    assert reasons == {
        "2030.csv": "it is a symbolic link, not a regular file; only regular files are read",
        "2031.parquet": "it is a directory, not a regular file; only regular files are read",
        "2032.csv": "it is a FIFO, not a regular file; only regular files are read",
        " 2019.csv": "the batch name ' 2019' may hold only ASCII letters, digits, '_', '-' and '.', and must start "
        "with a letter or a digit",
        "1e9 x.csv": "the batch name '1e9 x' may hold only ASCII letters, digits, '_', '-' and '.', and must start "
        "with a letter or a digit",
        "b'\\xff2033.parquet'": "the file name is not valid UTF-8",
    }
    assert zone.file_for("m", "2018") == str(folder / "2018.parquet")
    with pytest.raises(ValueError, match="2030.csv: refused: it is a symbolic link"):
        zone.file_for("m", "2030")
    with pytest.raises(BatchNameError, match="'../../secret'"):
        zone.file_for("m", "../../secret")


def test_a_link_swapped_in_after_the_scan_is_not_followed(tmp_path: Path) -> None:
    from mlops_assets.ml.data import read_landed_file

    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    link = tmp_path / "2018.csv"
    link.symlink_to(secret)
    with pytest.raises(ValueError, match="2018.csv: refused"):
        read_landed_file(str(link), batch="2018", batch_column=None)
