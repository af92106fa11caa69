"""The request log on real files: rotation by rows and by interval, nothing lost on close or
crash, append off the response path, and no half-written file ever in the landing folder."""

from __future__ import annotations

import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from mlops_assets.contract import LakeFolder, ServedColumn
from mlops_assets.serving import request_log as request_log_module
from mlops_assets.serving.request_log import RequestLog, ServedBatch
from mlops_assets.spec import PipelineSpec
from resources.lake import Lake
from resources.landing import LandingZone
from tests.conftest import GSS_FEATURES

NAME = "served_model"


def spec(max_rows: int = 10_000, interval_seconds: float = 3600.0) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "name": NAME,
            "source": {"uri": "/nonexistent.parquet", "batch_column": "year"},
            "label": {"column": "realrinc", "threshold": 25000},
            "features": GSS_FEATURES,
            "sensitive_features": ["gender"],
            "serving": {"request_log": {"max_rows": max_rows, "interval_seconds": interval_seconds}},
        }
    )


def request(ids: list[str], *, canary: bool = False) -> ServedBatch:
    n = len(ids)
    features = {
        "age": [30.0 + i for i in range(n)],
        "prestg10": [40] * n,
        "childs": [None] * n,
        "occrecode": ["Professional"] * n,
        "wrkstat": ["Full-Time"] * n,
        "educcat": ["Bachelor"] * n,
        "maritalcat": ["Married"] * n,
        "gender": ["Female"] * n,
    }
    return ServedBatch(
        request_ids=ids,
        received_at=time.time(),
        features=features,
        champion_version="3",
        champion_proba=[0.25] * n,
        route=["canary" if canary else "champion"] * n,
        challenger_version="4" if canary else None,
        challenger_proba=[0.75] * n if canary else None,
    )


def landed(tmp_path: Path) -> list[pd.DataFrame]:
    """The landed request-log files, oldest batch first, as the landing zone lists them."""
    zone = LandingZone(root=str(tmp_path / "landing"))
    files = sorted(zone.files(NAME), key=lambda f: f.batch)
    return [pd.read_parquet(f.path) for f in files]


def make_log(tmp_path: Path, **settings: float) -> RequestLog:
    return RequestLog(spec(**settings), str(tmp_path / "lake"), landing_root=str(tmp_path / "landing"))


def wait_until(condition: Callable[[], bool], within: float) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < within, f"not within {within}s"
        time.sleep(0.01)
    return time.monotonic() - start


def test_files_rotate_by_row_count_and_keep_every_row_in_order(tmp_path: Path) -> None:
    log = make_log(tmp_path, max_rows=5)
    ids = [f"r{i}" for i in range(12)]
    # Requests of 1 and 3 rows: a file boundary falls inside a request.
    for chunk in (ids[0:1], ids[1:4], ids[4:7], ids[7:8], ids[8:11], ids[11:12]):
        log.append(request(chunk))
    # Closed by the row count while the log is open (the interval is an hour away).
    wait_until(lambda: len(log.written) == 2, within=30)
    assert [len(f) for f in landed(tmp_path)] == [5, 5]
    log.close()
    frames = landed(tmp_path)
    assert [len(f) for f in frames] == [5, 5, 2]
    assert [r for f in frames for r in f[ServedColumn.REQUEST_ID]] == ids
    lake = sorted((tmp_path / "lake" / NAME / LakeFolder.REQUEST_LOG).glob("*.parquet"))
    assert [p.stem for p in lake] == sorted(log.written)
    assert all(p.name.startswith("served-") for p in lake)


def test_a_file_closes_after_the_interval_without_more_traffic(tmp_path: Path) -> None:
    log = make_log(tmp_path, interval_seconds=0.5)
    try:
        log.append(request(["a", "b"]))
        log.append(request(["c"]))
        waited = wait_until(lambda: len(log.written) == 1, within=10)
        assert waited >= 0.4, "closed before the interval"
        assert [len(f) for f in landed(tmp_path)] == [3]
        log.append(request(["d"]))
        wait_until(lambda: len(log.written) == 2, within=10)
        assert [list(f[ServedColumn.REQUEST_ID]) for f in landed(tmp_path)] == [["a", "b", "c"], ["d"]]
    finally:
        log.close()


def test_the_file_holds_training_dtypes_and_the_served_outputs(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    log.append(request(["a"]))
    log.append(request(["b", "c"], canary=True))
    log.close()
    (frame,) = landed(tmp_path)
    assert frame["age"].dtype == "float64" and frame["prestg10"].dtype == "float64"
    assert frame["childs"].isna().all()
    assert frame["occrecode"].tolist() == ["Professional"] * 3
    assert frame[ServedColumn.ROUTE].tolist() == ["champion", "canary", "canary"]
    assert frame[ServedColumn.CHALLENGER_VERSION].tolist() == [None, "4", "4"]
    assert frame[ServedColumn.CHALLENGER_PROBA].isna().tolist() == [True, False, False]
    assert frame[ServedColumn.CHAMPION_VERSION].tolist() == ["3"] * 3
    assert "realrinc" not in frame.columns, "no label column: features keeps every unlabelled row"


def test_nothing_is_lost_on_close(tmp_path: Path) -> None:
    log = make_log(tmp_path, max_rows=700)
    ids = [f"r{i}" for i in range(3000)]
    for i in range(0, len(ids), 3):
        log.append(request(ids[i : i + 3]))
    log.close()  # immediately: most rows are still queued
    frames = landed(tmp_path)
    assert sum(len(f) for f in frames) == 3000
    assert [r for f in frames for r in f[ServedColumn.REQUEST_ID]] == ids
    assert max(len(f) for f in frames) == 700


def test_a_crash_loses_only_the_open_files_rows(tmp_path: Path) -> None:
    """A process killed without close(): the closed files are whole, the open one is absent."""
    script = textwrap.dedent(
        f"""
        import os, time
        from tests.serving.test_request_log import make_log, request
        from pathlib import Path
        log = make_log(Path({str(tmp_path)!r}), max_rows=4)
        for i in range(10):
            log.append(request([f"r{{i}}"]))
        while len(log.written) < 2:
            time.sleep(0.01)
        os._exit(9)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    frames = landed(tmp_path)
    assert [list(f[ServedColumn.REQUEST_ID]) for f in frames] == [
        [f"r{i}" for i in range(4)],
        [f"r{i}" for i in range(4, 8)],
    ]


def test_a_half_written_file_is_never_landed_and_its_rows_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename into the landing folder fails (a crash between write and rename): only the
    hidden staging file exists, which the landing zone does not list; the file recorded in the
    lake lands whole on the next try, under its own name, and its rows are recorded once."""
    real_replace = request_log_module.os.replace
    calls = []

    def failing_once(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) == 1:
            raise OSError("simulated crash before the rename")
        real_replace(src, dst)

    monkeypatch.setattr(request_log_module.os, "replace", failing_once)
    log = make_log(tmp_path, interval_seconds=0.3)
    log.append(request(["a", "b"]))
    wait_until(lambda: len(calls) == 1, within=10)
    folder = tmp_path / "landing" / NAME
    staging = [p.name for p in folder.iterdir()]
    assert len(staging) == 1 and staging[0].startswith(".served-"), staging
    assert LandingZone(root=str(tmp_path / "landing")).scan(NAME).files == []
    wait_until(lambda: len(calls) >= 2, within=10)  # retried within the interval, without traffic
    log.close()
    assert [list(f[ServedColumn.REQUEST_ID]) for f in landed(tmp_path)] == [["a", "b"]]
    lake = Lake(root=str(tmp_path / "lake"))
    assert lake.partitions(NAME, LakeFolder.REQUEST_LOG) == log.written
    assert [f.batch for f in LandingZone(root=str(tmp_path / "landing")).files(NAME)] == log.written


def test_a_file_recorded_while_the_landing_folder_is_unusable_lands_once_it_is_usable(tmp_path: Path) -> None:
    """The landing folder is unusable for a while (here its model folder is a file): the closed
    file is in the lake only, not landed and not yet counted as written; once the folder is
    usable it lands under its own batch name, its rows recorded once."""
    (tmp_path / "landing").mkdir()
    blocker = tmp_path / "landing" / NAME
    blocker.write_text("not a folder")
    log = make_log(tmp_path, interval_seconds=0.3)
    log.append(request(["a", "b", "c"]))
    lake = Lake(root=str(tmp_path / "lake"))
    wait_until(lambda: len(lake.partitions(NAME, LakeFolder.REQUEST_LOG)) == 1, within=10)
    time.sleep(1.0)  # a few retries while the folder is still unusable
    assert log.written == []
    blocker.unlink()
    wait_until(lambda: len(log.written) == 1, within=10)
    log.close()
    assert [list(f[ServedColumn.REQUEST_ID]) for f in landed(tmp_path)] == [["a", "b", "c"]]
    assert lake.partitions(NAME, LakeFolder.REQUEST_LOG) == log.written


def test_append_returns_in_microseconds_while_the_writer_writes(tmp_path: Path) -> None:
    """Measured against what the response path would pay without the queue: one file write."""
    log = make_log(tmp_path, max_rows=200)
    durations = []
    for i in range(4000):
        served = request([f"r{i}"])
        start = time.perf_counter()
        log.append(served)
        durations.append(time.perf_counter() - start)
    close_start = time.perf_counter()
    log.close()
    files = len(log.written)
    per_file = (time.perf_counter() - close_start) / max(1, files)
    assert files == 20
    p50, p99 = statistics.median(durations), statistics.quantiles(durations, n=100)[98]
    print(f"append p50 {p50 * 1e6:.1f} us, p99 {p99 * 1e6:.1f} us; one file write about {per_file * 1e3:.1f} ms")
    assert p50 < 50e-6, f"append p50 {p50 * 1e6:.1f} us"
    assert p99 < 2e-3, f"append p99 {p99 * 1e6:.1f} us"


def test_a_malformed_request_is_refused_naming_the_field_and_nothing_is_logged(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    bad = request(["a", "b"])
    short = ServedBatch(**{**bad.__dict__, "champion_proba": [0.1]})
    with pytest.raises(ValueError, match="champion_proba has 1 values for 2 request ids"):
        log.append(short)
    extra = ServedBatch(**{**bad.__dict__, "features": {**bad.features, "shoe_size": [1, 2]}})
    with pytest.raises(ValueError, match="shoe_size"):
        log.append(extra)
    with pytest.raises(ValueError, match="route holds"):
        log.append(ServedBatch(**{**bad.__dict__, "route": ["champion", "sideways"]}))
    log.close()
    assert log.written == [] and landed(tmp_path) == []
    with pytest.raises(RuntimeError, match="closed"):
        log.append(bad)


def test_a_feature_named_like_a_log_column_is_refused(tmp_path: Path) -> None:
    clashing = spec().model_copy(update={"features": spec().features.model_copy(update={"numeric": ["age", "route"]})})
    with pytest.raises(ValueError, match=r"\['route'\]"):
        RequestLog(clashing, str(tmp_path / "lake"), landing_root=str(tmp_path / "landing"))
