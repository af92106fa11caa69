"""`mlops serve` with its request log on: what the clients were answered is what lands, every row
of it, in files of ``max_rows``, the last one closed when the server stops."""

from __future__ import annotations

import uuid

import pandas as pd

from mlops_assets.contract import ServedColumn
from resources.landing import LandingZone
from tests.serving.conftest import NAME, Registered, Serve, row


def test_every_answered_request_lands_with_its_answer_when_the_server_stops(
    registered: Registered, serve: Serve
) -> None:
    served = serve({"request_log": {"max_rows": 8, "interval_seconds": 600}})
    prefix = uuid.uuid4().hex[:8]
    answers: dict[str, float] = {}
    sent = []
    for i in range(20):
        record = {**row(registered.frame, i), "gender": str(registered.frame["gender"].iloc[i])}
        status, answer = served.invoke({"dataframe_records": [record]}, **{"X-Request-Id": f"{prefix}-{i}"})
        assert status == 200, answer
        answers.update(zip(answer["request_ids"], answer["probabilities"], strict=True))
        sent.append(f"{prefix}-{i}")
    records = [{**row(registered.frame, i), "gender": "Female"} for i in (20, 21, 22)]
    status, answer = served.invoke({"dataframe_records": records}, **{"X-Request-Id": f"{prefix}-many"})
    assert status == 200, answer
    answers.update(zip(answer["request_ids"], answer["probabilities"], strict=True))
    sent += answer["request_ids"]

    served.process.terminate()  # SIGTERM, as Kubernetes stops a pod
    # uvicorn re-raises the signal after its graceful shutdown: -15 is a clean stop here.
    assert served.process.wait(timeout=60) in (0, -15), served.log.read_text()

    zone = LandingZone(root=str(registered.root / "home" / "landing"))
    frames = [pd.read_parquet(f.path) for f in sorted(zone.files(NAME), key=lambda f: f.batch)]
    mine = [f for f in frames if f[ServedColumn.REQUEST_ID].str.startswith(prefix).any()]
    assert [len(f) for f in mine] == [8, 8, 7], "two files closed at max_rows, the last on shutdown"
    logged = pd.concat(mine, ignore_index=True)
    assert logged[ServedColumn.REQUEST_ID].tolist() == sent
    assert dict(zip(logged[ServedColumn.REQUEST_ID], logged[ServedColumn.CHAMPION_PROBA], strict=True)) == answers
    assert set(logged[ServedColumn.CHAMPION_VERSION]) == {registered.champion()}
    assert logged["gender"].notna().all(), "the sensitive column is logged for fairness"
