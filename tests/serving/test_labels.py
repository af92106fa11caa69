"""``mlops label``: labels that arrive later join the request log by request id."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlops_assets.cli import main
from mlops_assets.contract import LakeFolder, ServedColumn
from mlops_assets.serving.request_log import RequestLog
from resources.landing import LandingZone
from tests.serving.test_request_log import NAME, request, spec


@pytest.fixture
def served_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An MLOPS_HOME whose request log closed two files (ids r0..r2 and r3..r5)."""
    home = tmp_path / "home"
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "spec.yaml").write_text(yaml.safe_dump(spec().model_dump(mode="json", exclude_unset=True)))
    monkeypatch.setenv("MLOPS_HOME", str(home))
    monkeypatch.setenv("MLOPS_PIPELINES", str(pipelines))
    monkeypatch.delenv("MLOPS_ENV", raising=False)
    log = RequestLog(spec(max_rows=3), str(home / "lake"))  # the landing folder of MLOPS_HOME
    log.append(request(["r0", "r1", "r2", "r3", "r4", "r5"]))
    log.close()
    assert len(log.written) == 2
    return home


def landed_labels(home: Path) -> dict[str, float]:
    out = {}
    for f in LandingZone(root=str(home / "landing")).files(NAME):
        frame = pd.read_parquet(f.path)
        if "realrinc" in frame.columns:
            out.update(dict(zip(frame[ServedColumn.REQUEST_ID], frame["realrinc"], strict=True)))
    return out


def test_labels_join_by_request_id_and_add_up(
    served_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = tmp_path / "labels.csv"
    pd.DataFrame({"request_id": ["r1", "r4", "nobody"], "realrinc": [30000, 1000, 5]}).to_csv(first, index=False)
    assert main(["label", NAME, "--file", str(first)]) == 0
    out = capsys.readouterr().out
    assert "3 labels, 2 joined, 1 match no request" in out
    labels = landed_labels(served_home)
    assert {k: v for k, v in labels.items() if pd.notna(v)} == {"r1": 30000.0, "r4": 1000.0}
    assert len(labels) == 6, "every row stays; the unlabelled ones with a null label"

    second = tmp_path / "more.csv"
    pd.DataFrame({"request_id": ["r0"], "realrinc": [40000]}).to_csv(second, index=False)
    assert main(["label", NAME, "--file", str(second)]) == 0
    labels = landed_labels(served_home)
    assert {k: v for k, v in labels.items() if pd.notna(v)} == {"r0": 40000.0, "r1": 30000.0, "r4": 1000.0}
    record = pd.read_parquet(next((served_home / "lake" / NAME / LakeFolder.REQUEST_LOG).glob("*.parquet")))
    assert "realrinc" in record.columns, "the lake record holds the labels too"


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"request_id": ["r1"], "income": [1]}), "column(s) ['realrinc'] missing"),
        (pd.DataFrame({"request_id": ["r1", "r1"], "realrinc": [1, 2]}), "repeats ['r1']"),
        (pd.DataFrame({"request_id": ["r1"], "realrinc": ["lots"]}), "request r1 has 'lots'"),
    ],
)
def test_a_bad_labels_file_is_refused_naming_the_column_and_changes_nothing(
    served_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], frame: pd.DataFrame, message: str
) -> None:
    path = tmp_path / "labels.csv"
    frame.to_csv(path, index=False)
    before = {f.path: f.identity for f in LandingZone(root=str(served_home / "landing")).files(NAME)}
    assert main(["label", NAME, "--file", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"labels file {path}" in out and message in out
    assert {f.path: f.identity for f in LandingZone(root=str(served_home / "landing")).files(NAME)} == before
