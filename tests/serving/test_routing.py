"""Canary and shadow: who answers, what is recorded, and that the shadow stays off the response path."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest

from mlops_assets.serving.app import ServingApp
from mlops_assets.serving.holder import ModelHolder, Slot
from mlops_assets.serving.metrics import Metrics
from mlops_assets.serving.predictor import Scorer
from mlops_assets.serving.protocol import Columns
from mlops_assets.serving.routing import Background, bucket, routes
from tests.conftest import GSS_FEATURES
from tests.serving.conftest import NAME, Registered, row

COLUMNS = Columns(numeric=GSS_FEATURES["numeric"], categorical=GSS_FEATURES["categorical"], optional=["gender"])


def test_the_canary_hash_is_stable_and_takes_its_share() -> None:
    keys = [f"user-{i}" for i in range(20000)]
    first = routes(keys, 0.1)
    assert routes(keys, 0.1) == first
    assert 0.09 < first.count("canary") / len(keys) < 0.11
    # Growing the share only moves entities onto the canary, never back.
    wider = routes(keys, 0.3)
    assert all(w == "canary" for f, w in zip(first, wider, strict=True) if f == "canary")
    assert 0.29 < wider.count("canary") / len(keys) < 0.31
    assert routes(keys, 0.0) == ["champion"] * len(keys)
    # A fixed value: the hash is BLAKE2b, the same in every process and on every machine.
    assert bucket("user-1") == int.from_bytes(__import__("hashlib").blake2b(b"user-1", digest_size=8).digest()) / 2**64


class _Recorder:
    """A stand-in for the request log, in this unit test of routing only: keeps what it is given."""

    def __init__(self) -> None:
        self.batches: list[Any] = []
        self.arrived = threading.Event()

    def append(self, served: Any) -> None:
        self.batches.append(served)
        self.arrived.set()

    @staticmethod
    def make_batch(**fields: Any) -> dict[str, Any]:
        return fields


class _Gated:
    """A real model whose predict_proba waits until the test opens the gate."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.gate = threading.Event()
        self.calls = 0

    def predict_proba(self, inputs: Any) -> Any:
        self.calls += 1
        assert self.gate.wait(30), "the gate was never opened"
        return self.model.predict_proba(inputs)


async def _post(app: ServingApp, body: dict, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    sent: list[dict] = []
    data = json.dumps(body).encode()
    messages = [{"type": "http.request", "body": data, "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/invocations",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    await app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


def _app(registered: Registered, *, shadow: bool, share: float, challenger_model: Any) -> tuple[ServingApp, _Recorder]:
    holder = ModelHolder(None, NAME, COLUMNS, poll_seconds=1, follow_challenger=True)
    champion = registered.models[registered.versions[0]]
    holder.champion = Slot("1", Scorer(champion, numeric=COLUMNS.numeric, categorical=COLUMNS.categorical), 0.0)
    holder.challenger = Slot(
        "2", Scorer(challenger_model, numeric=COLUMNS.numeric, categorical=COLUMNS.categorical), 0.0
    )
    recorder = _Recorder()
    metrics = Metrics(NAME)
    background = Background(
        append=recorder.append, make_batch=recorder.make_batch, on_shadow=metrics.shadow, on_dropped=metrics.dropped
    )
    app = ServingApp(
        holder,
        metrics,
        background,
        canary_share=share,
        canary_key="request_id",
        shadow=shadow,
        max_rows=100,
        max_body_bytes=100000,
        token=None,
    )
    return app, recorder


def test_the_shadow_scores_after_the_response(registered: Registered) -> None:
    gated = _Gated(registered.models[registered.versions[1]])
    app, recorder = _app(registered, shadow=True, share=0.0, challenger_model=gated)
    rows = [row(registered.frame, i) for i in range(3)]
    started = time.perf_counter()
    status, answer = asyncio.run(_post(app, {"dataframe_records": rows}, {"X-Request-Id": "r"}))
    took = time.perf_counter() - started
    # Answered while the shadow model is still blocked: the response never waited for it.
    assert status == 200 and answer["routes"] == ["champion"] * 3
    assert not gated.gate.is_set() and took < 5
    assert recorder.batches == []
    gated.gate.set()
    assert recorder.arrived.wait(30)
    (logged,) = recorder.batches
    assert logged["request_ids"] == ["r.0", "r.1", "r.2"]
    assert logged["champion_proba"] == answer["probabilities"]
    assert logged["challenger_version"] == "2" and logged["route"] == ["champion"] * 3
    expected_shadow = _expected(registered, registered.versions[1], rows)
    assert logged["challenger_proba"] == expected_shadow
    assert logged["challenger_proba"] != logged["champion_proba"]
    app.background.close()
    assert app.metrics.shadow_rows == 3


def _expected(registered: Registered, version: str, rows: list[dict]) -> list[float]:
    import pandas as pd

    from mlops_assets.ml.trainers import prepare_inputs

    inputs = prepare_inputs(pd.DataFrame(rows), COLUMNS.numeric, COLUMNS.categorical)
    return registered.models[version].predict_proba(inputs)[:, 1].tolist()


@pytest.mark.parametrize("shadow", [False, True])
def test_canary_rows_are_answered_by_the_challenger_and_both_scores_logged(
    registered: Registered, shadow: bool
) -> None:
    challenger = registered.models[registered.versions[1]]
    app, recorder = _app(registered, shadow=shadow, share=0.5, challenger_model=challenger)
    ids = [f"user-{i}" for i in range(40)]
    canary_ids = {i for i, r in zip(ids, routes(ids, 0.5), strict=True) if r == "canary"}
    assert 10 < len(canary_ids) < 30
    record = row(registered.frame, 4)
    champion_p, challenger_p = (_expected(registered, v, [record])[0] for v in registered.versions[:2])
    for rid in ids:
        status, answer = asyncio.run(_post(app, {"dataframe_records": [record]}, {"X-Request-Id": rid}))
        canary = rid in canary_ids
        assert status == 200
        assert answer["routes"] == ["canary" if canary else "champion"]
        assert answer["model_versions"] == ["2" if canary else "1"]
        assert answer["probabilities"] == [challenger_p if canary else champion_p]
    app.background.close()
    assert len(recorder.batches) == len(ids)
    for logged in recorder.batches:
        canary = logged["request_ids"][0] in canary_ids
        assert logged["champion_proba"] == [champion_p]
        if canary or shadow:
            assert logged["challenger_proba"] == [challenger_p] and logged["challenger_version"] == "2"
        else:
            assert logged["challenger_proba"] is None and logged["challenger_version"] is None
    assert app.metrics.canary_rows == len(canary_ids)
    assert app.metrics.shadow_rows == (len(ids) if shadow else 0)
