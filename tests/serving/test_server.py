"""`mlops serve` over real HTTP on 127.0.0.1, against a real registry with registered HGB versions."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from mlops_assets.contract import LakeFolder, ServedColumn
from mlops_assets.ml.trainers import prepare_inputs
from tests.conftest import GSS_FEATURES
from tests.serving.conftest import NAME, Registered, Serve, row

COLUMNS = [*GSS_FEATURES["numeric"], *GSS_FEATURES["categorical"]]
NO_LOG = {"request_log": {"enabled": False}}


def _expected(registered: Registered, version: str, rows: list[int]) -> list[float]:
    import pandas as pd

    frame = pd.DataFrame([row(registered.frame, i) for i in rows], columns=COLUMNS)
    inputs = prepare_inputs(frame, GSS_FEATURES["numeric"], GSS_FEATURES["categorical"])
    return registered.models[version].predict_proba(inputs)[:, 1].tolist()


def test_both_formats_answer_with_predictions_probabilities_and_version(registered: Registered, serve: Serve) -> None:
    served = serve(NO_LOG)
    champion = registered.versions[0]
    records = [row(registered.frame, i) for i in (0, 5, 9)]
    split = {"columns": COLUMNS, "data": [[r[c] for c in COLUMNS] for r in records]}
    expected = _expected(registered, champion, [0, 5, 9])
    for body in ({"dataframe_split": split}, {"dataframe_records": records}):
        status, answer = served.invoke(body, **{"X-Request-Id": "abc"})
        assert status == 200, answer
        assert answer["probabilities"] == expected
        assert answer["predictions"] == [int(p > 1 - p) for p in expected]
        assert answer["model_version"] == champion
        assert answer["model_versions"] == [champion] * 3
        assert answer["routes"] == ["champion"] * 3
        assert answer["request_ids"] == ["abc.0", "abc.1", "abc.2"]
    # One row: the flat path; the request id echoed as given, or generated when absent.
    status, answer = served.invoke({"dataframe_records": records[:1]}, **{"X-Request-Id": "one"})
    assert (status, answer["request_ids"], answer["probabilities"]) == (200, ["one"], expected[:1])
    status, answer = served.invoke({"dataframe_records": records[:1]})
    assert status == 200 and len(answer["request_ids"][0]) == 32
    # MLflow's own client-side shape: a pandas frame's to_json(orient="split").
    import pandas as pd

    frame = pd.DataFrame(records, columns=COLUMNS)
    status, answer = served.invoke({"dataframe_split": json.loads(frame.to_json(orient="split"))})
    assert status == 200 and answer["probabilities"] == expected


def test_health_is_ready_only_once_a_model_is_loaded(registered: Registered, serve: Serve) -> None:
    served = serve(NO_LOG, wait=False)
    seen = []
    import time

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            status, _, body = served.request("GET", "/health")
        except OSError:
            time.sleep(0.02)
            continue
        seen.append(status)
        if status == 200:
            break
        status, answer = served.invoke({"dataframe_records": [row(registered.frame, 0)]})
        if status == 200:
            # The model finished loading between the two requests: readiness says so at once.
            assert served.request("GET", "/health")[0] == 200, answer
            continue
        assert status == 503, answer
        time.sleep(0.005)
    assert seen[-1] == 200, served.log.read_text()
    assert seen.count(200) == 1 and set(seen[:-1]) == {503}, seen
    assert json.loads(body) == {
        "status": "ready",
        "model": NAME,
        "champion": registered.versions[0],
        "challenger": None,
    }


def test_bad_requests_get_4xx_naming_the_problem_and_are_counted_not_logged(
    registered: Registered, serve: Serve
) -> None:
    earlier = _log_files(registered)  # other tests of the session log to the same lake
    served = serve({"max_rows": 5, "max_body_bytes": 4000})
    good = row(registered.frame, 0)
    cases = [
        ({"dataframe_records": [{k: v for k, v in good.items() if k != "age"}]}, 400, "column 'age': missing"),
        ({"dataframe_records": [{**good, "zip": "1"}]}, 400, "column 'zip': not an input"),
        ({"dataframe_records": [{**good, "age": "old"}]}, 400, "column 'age', row 0: expected a number"),
        ({"dataframe_records": [{**good, "wrkstat": [1]}]}, 400, "column 'wrkstat', row 0: expected a string"),
        ({"dataframe_records": [good] * 6}, 413, "rows: 6 rows, at most 5"),
        ({"dataframe_records": []}, 400, "rows: the request has no rows"),
        ({"dataframe_split": {"columns": COLUMNS, "data": [[1]]}}, 400, "dataframe_split.data[0]: 1 values for 7"),
        ({"inputs": [1]}, 400, "expected exactly one of 'dataframe_split' or 'dataframe_records'"),
        ({"dataframe_records": [good, {**good, "extra": 1}]}, 400, "dataframe_records[1]: columns differ"),
    ]
    for body, status, fragment in cases:
        got, answer = served.invoke(body)
        assert (got, fragment in answer["message"]) == (status, True), (body, answer)
    status, _, data = served.request("POST", "/invocations", raw=b"{not json")
    assert status == 400 and b"body: not valid JSON" in data
    status, _, data = served.request("POST", "/invocations", raw=b" " * 5000)
    assert status == 413 and b"body: 5000 bytes, at most 4000" in data
    status, _, data = served.request("POST", "/invocations", raw=b"{}", headers={"Content-Type": "text/csv"})
    assert status == 415 and b"Content-Type" in data
    metrics = served.metrics()
    m = f'model="{NAME}"'
    assert metrics[f'mlops_serve_requests_total{{{m},code="400"}}'] == 9
    assert metrics[f'mlops_serve_requests_total{{{m},code="413"}}'] == 2
    assert metrics[f'mlops_serve_requests_total{{{m},code="415"}}'] == 1
    assert metrics[f"mlops_serve_errors_total{{{m}}}"] == 12
    assert metrics[f"mlops_serve_rows_total{{{m}}}"] == 0
    assert f'mlops_serve_requests_total{{{m},code="200"}}' not in metrics
    assert served.process.poll() is None
    # Only served requests are traffic: after two good ones, the log holds exactly their rows.
    for rid in ("good-1", "good-2"):
        assert served.invoke({"dataframe_records": [good, good]}, **{"X-Request-Id": rid})[0] == 200
    served.process.terminate()
    # uvicorn shuts down gracefully (lifespan: the log is closed), then re-raises SIGTERM.
    assert served.process.wait(timeout=30) in (0, -15), served.log.read_text()
    logged = _logged(registered, besides=earlier)
    assert sorted(logged[ServedColumn.REQUEST_ID]) == ["good-1.0", "good-1.1", "good-2.0", "good-2.1"]
    assert set(logged[ServedColumn.ROUTE]) == {"champion"}
    assert set(logged[ServedColumn.CHAMPION_VERSION]) == {registered.versions[0]}


def _log_files(registered: Registered) -> set[Path]:
    """The request log files in the lake of the test session."""
    return set((registered.root / "home" / "lake" / NAME / LakeFolder.REQUEST_LOG).glob("*.parquet"))


def _logged(registered: Registered, *, besides: set[Path]):  # noqa: ANN202 - pandas is imported lazily
    """Every row of the request log files written since ``besides`` was listed."""
    import pandas as pd

    files = sorted(_log_files(registered) - besides)
    assert files, "no request log file written"
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def test_metrics_count_requests_latency_and_versions(registered: Registered, serve: Serve) -> None:
    served = serve(NO_LOG)
    for i in range(7):
        assert served.invoke({"dataframe_records": [row(registered.frame, i)]})[0] == 200
    metrics = served.metrics()
    m = f'model="{NAME}"'
    assert metrics[f'mlops_serve_requests_total{{{m},code="200"}}'] == 7
    assert metrics[f"mlops_serve_request_duration_seconds_count{{{m}}}"] == 7
    assert metrics[f'mlops_serve_request_duration_seconds_bucket{{{m},le="+Inf"}}'] == 7
    assert 0 < metrics[f"mlops_serve_request_duration_seconds_sum{{{m}}}"] < 7
    version = registered.versions[0]
    assert metrics[f'mlops_serve_model_version{{{m},alias="champion",version="{version}"}}'] == float(version)
    assert metrics[f"mlops_serve_canary_rows_total{{{m}}}"] == 0
    assert metrics[f"mlops_serve_shadow_rows_total{{{m}}}"] == 0


def test_a_non_loopback_bind_needs_a_token(registered: Registered, serve: Serve) -> None:
    pipelines = registered.spec_file(NO_LOG)
    env = registered.env(pipelines)
    env.pop("MLOPS_SERVE_TOKEN", None)
    refused = subprocess.run(
        [sys.executable, "-m", "mlops_assets.cli", "serve", NAME, "--host", "0.0.0.0", "--port", "18080"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "refusing to serve beyond this machine without a bearer token; set MLOPS_SERVE_TOKEN" in refused.stdout
    # With the token set (on loopback here, so the test opens nothing), requests must carry it.
    served = serve(NO_LOG, MLOPS_SERVE_TOKEN="s3cret")
    body = {"dataframe_records": [row(registered.frame, 0)]}
    assert served.invoke(body)[0] == 401
    assert served.invoke(body, Authorization="Bearer wrong")[0] == 401
    assert served.invoke(body, Authorization="Bearer s3cret")[0] == 200
    assert served.request("GET", "/metrics")[0] == 401
    assert served.request("GET", "/health")[0] == 200  # the readiness probe needs no token
    assert not math.isnan(served.invoke(body, Authorization="Bearer s3cret")[1]["probabilities"][0])
