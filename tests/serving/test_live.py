"""A live server following the registry: canary and shadow traffic, and hot swaps under load."""

from __future__ import annotations

import threading
import time

import pytest

from mlops_assets.serving.routing import routes
from tests.serving.conftest import NAME, Registered, Serve, row

NO_LOG = {"request_log": {"enabled": False}}
M = f'model="{NAME}"'


@pytest.mark.slow
def test_canary_is_sticky_per_key_and_the_shadow_counted(registered: Registered, serve: Serve, challenger: str) -> None:
    served = serve({**NO_LOG, "canary": {"share": 0.3, "key": "request_id"}, "shadow": True, "poll_seconds": 0.2})
    deadline = time.monotonic() + 30
    while served.request("GET", "/health")[2].find(b'"challenger": "' + challenger.encode()) < 0:
        assert time.monotonic() < deadline, "the challenger was never loaded"
        time.sleep(0.1)
    ids = [f"entity-{i}" for i in range(80)]
    expected = routes(ids, 0.3)
    record = {"dataframe_records": [row(registered.frame, 3)]}
    for _ in range(2):
        for rid, route in zip(ids, expected, strict=True):
            status, answer = served.invoke(record, **{"X-Request-Id": rid})
            assert status == 200
            assert answer["routes"] == [route], rid
            assert answer["model_versions"] == [challenger if route == "canary" else registered.versions[0]]
    canary = expected.count("canary")
    assert 10 < canary < 40
    deadline = time.monotonic() + 20
    while served.metrics()[f"mlops_serve_shadow_rows_total{{{M}}}"] < 160 and time.monotonic() < deadline:
        time.sleep(0.1)
    metrics = served.metrics()
    assert metrics[f"mlops_serve_canary_rows_total{{{M}}}"] == 2 * canary
    assert metrics[f"mlops_serve_shadow_rows_total{{{M}}}"] == 160
    assert metrics[f'mlops_serve_model_version{{{M},alias="challenger",version="{challenger}"}}'] == float(challenger)


@pytest.mark.slow
def test_twenty_alias_moves_under_load_fail_no_request(registered: Registered, serve: Serve) -> None:
    served = serve({**NO_LOG, "poll_seconds": 0.5})
    body = {"dataframe_records": [row(registered.frame, 7)]}
    stop = threading.Event()
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()

    def load() -> None:
        connection = served.connect()
        import json

        while not stop.is_set():
            try:
                connection.request("POST", "/invocations", json.dumps(body), {"Content-Type": "application/json"})
                reply = connection.getresponse()
                reply.read()
                ok = reply.status == 200
            except OSError:
                ok = False
                connection.close()
                connection = served.connect()
            with lock:
                counts["ok" if ok else "failed"] += 1
            time.sleep(0.002)

    workers = [threading.Thread(target=load) for _ in range(3)]
    for w in workers:
        w.start()
    first, second = registered.versions[0], registered.versions[1]
    slow_moves = 0
    worst = 0.0
    try:
        current = registered.champion()
        assert current == first
        for move in range(20):
            target = second if current == first else first
            registered.registry.promote(
                name=NAME, version=target, expected_champion=current, record={}, reason=f"swap {move}"
            )
            moved = time.monotonic()
            while True:
                status, answer = served.invoke(body)
                if status == 200 and answer["model_version"] == target:
                    break
                assert time.monotonic() - moved < 30, f"version {target} never answered"
                time.sleep(0.01)
            took = time.monotonic() - moved
            worst = max(worst, took)
            slow_moves += took > 2.0
            current = target
    finally:
        stop.set()
        for w in workers:
            w.join()
        if registered.champion() != first:
            registered.registry.promote(name=NAME, version=first, expected_champion=registered.champion(), record={})
    assert counts["failed"] == 0
    assert counts["ok"] > 200, counts
    assert slow_moves == 0, f"{slow_moves} of 20 moves took over 2 s to answer (worst {worst:.2f} s)"
    metrics = served.metrics()
    assert metrics[f'mlops_serve_model_swaps_total{{{M},alias="champion"}}'] == 21  # the first load and 20 moves
    assert metrics[f"mlops_serve_errors_total{{{M}}}"] == 0
