"""The sensors' decisions as tables."""

from __future__ import annotations

import pytest

from resources.landing import LandedFile
from sensors.policy import CheckEvent, decide_cadence, decide_retrain, plan_landing

NOW = 1_000_000.0


def landed(batch: str, *, age: float, size: int = 100) -> LandedFile:
    return LandedFile(f"/landing/m/{batch}.parquet", batch, size, NOW - age)


def test_settled_new_files_are_ingested_once() -> None:
    files = [landed("2010", age=60), landed("2012", age=1)]
    plan = plan_landing(files, seen={}, now=NOW, settle_seconds=5)
    assert [f.batch for f in plan.ingest] == ["2010"]
    assert [f.batch for f in plan.settling] == ["2012"]
    again = plan_landing(files, seen=plan.seen, now=NOW + 10, settle_seconds=5)
    assert [f.batch for f in again.ingest] == ["2012"]
    assert plan_landing(files, seen=again.seen, now=NOW + 20, settle_seconds=5).ingest == []


def test_a_replaced_file_is_ingested_again() -> None:
    first = plan_landing([landed("2010", age=60)], seen={}, now=NOW, settle_seconds=5)
    replaced = plan_landing([landed("2010", age=30, size=200)], seen=first.seen, now=NOW, settle_seconds=5)
    assert [f.size for f in replaced.ingest] == [200]


def test_skip_reasons_explain_themselves() -> None:
    plan = plan_landing([landed("2012", age=1)], seen={}, now=NOW, settle_seconds=5)
    assert plan.skip_reason("/landing/m") == "waiting for 2012.parquet in /landing/m to stop changing before ingesting"
    assert plan_landing([], seen={}, now=NOW, settle_seconds=5).skip_reason("/l") == "no new or changed file in /l"


def ev(record: int, batch: str, passed: bool) -> CheckEvent:
    return CheckEvent(record, batch, passed, "drift_within_tolerance")


@pytest.mark.parametrize(
    ("events", "cursor", "in_progress", "run_key", "new_cursor", "reason"),
    [
        ([], 0, None, None, 0, "no new drift check result since record 0"),
        ([ev(5, "2010", True)], 0, None, None, 5, "drift checks passed for batch 2010"),
        ([ev(5, "2010", False)], 0, None, "m:drift:2010:5", 5, "drift_within_tolerance failed on batch 2010"),
        ([ev(5, "2010", False)], 5, None, None, 5, "no new drift check result since record 5"),
        ([ev(5, "2010", False), ev(9, "2012", False)], 0, None, "m:drift:2012:9", 9, "failed on batch 2012"),
        ([ev(5, "2010", False)], 0, "run-1", None, 0, "retrain run run-1 is still queued or running"),
        ([ev(5, "2010", False), ev(7, "2012", True)], 0, None, "m:drift:2010:5", 7, "failed on batch 2010"),
    ],
)
def test_retrain_decisions(events, cursor, in_progress, run_key, new_cursor, reason) -> None:  # noqa: ANN001
    decision = decide_retrain(model="m", trigger="drift", events=events, cursor=cursor, retrain_in_progress=in_progress)
    assert decision.run_key == run_key
    assert decision.cursor == new_cursor
    assert reason in decision.reason


@pytest.mark.parametrize(
    ("every", "scored", "trained_until", "until"),
    [
        (None, ["1991", "1993"], "1990", None),
        (3, ["1991", "1993"], "1990", None),
        (2, ["1989", "1991", "1993", "1994"], "1990", "1993"),
        (2, ["1991", "1993"], None, None),
    ],
)
def test_cadence(every, scored, trained_until, until) -> None:  # noqa: ANN001
    decision = decide_cadence(model="m", every=every, scored=scored, trained_until=trained_until)
    assert (decision.batch if decision else None) == until
