"""The sensors' decisions as tables, and the check cursor over many random finishing orders."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from resources.alerts import slack_escape
from resources.landing import LandedFile
from sensors.policy import (
    CheckCursor,
    CheckRecord,
    alert_text,
    decide_cadence,
    decide_retrain,
    plan_landing,
    settle,
)

NOW = 1_000_000.0
KEY = "m/drift_report:drift_within_tolerance"


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


def rec(record_id: int, outcome: str, batch: str = "2010", *, run_ended: bool = False) -> CheckRecord:
    return CheckRecord(record_id, KEY, "drift_within_tolerance", outcome, batch, f"run-{record_id}", run_ended)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "cursor"),
    [
        (None, CheckCursor()),
        ("", CheckCursor()),
        ("812", CheckCursor(after=812)),  # the earlier format: highest record id seen
        ('{"after":9,"pending":[[7,"k"],[3,"k"]]}', CheckCursor(9, ((3, "k"), (7, "k")))),
    ],
)
def test_cursor_reads_every_format(text: str | None, cursor: CheckCursor) -> None:
    assert CheckCursor.decode(text) == cursor
    assert CheckCursor.decode(cursor.encode()) == cursor


def test_a_foreign_cursor_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"sensor cursor '\{\"seen\": 1\}' is not a check cursor"):
        CheckCursor.decode('{"seen": 1}')


@pytest.mark.parametrize(
    ("cursor", "records", "completed", "pending", "after"),
    [
        # Record 5 was planned first and is still running when 6 finished: 5 waits, 6 is handled.
        (CheckCursor(), [rec(5, "planned"), rec(6, "failed")], [6], [5], 6),
        # Next tick: 5 finished late; it is handled now although 6 is above it.
        (CheckCursor(6, ((5, KEY),)), [rec(5, "failed")], [5], [], 6),
        # Its run ended without an evaluation (a failed step, a dead run): nothing will come.
        (CheckCursor(6, ((5, KEY),)), [rec(5, "planned", run_ended=True)], [], [], 6),
        # A pending record that is gone (a wiped asset) is dropped.
        (CheckCursor(6, ((5, KEY),)), [], [], [], 6),
        (CheckCursor(6), [rec(8, "passed"), rec(7, "planned")], [8], [7], 8),
    ],
)
def test_settle_keeps_unfinished_records_until_they_finish(cursor, records, completed, pending, after) -> None:  # noqa: ANN001
    settled = settle(cursor, records)
    assert [r.record_id for r in settled.completed] == completed
    assert settled.cursor() == CheckCursor(after, tuple((i, KEY) for i in pending))


def test_settle_keeps_completed_records_that_wait_for_their_action() -> None:
    settled = settle(CheckCursor(), [rec(5, "failed"), rec(6, "planned"), rec(7, "passed")])
    assert settled.cursor(keep=[settled.completed[0]]) == CheckCursor(7, ((5, KEY), (6, KEY)))


@pytest.mark.parametrize(
    ("completed", "in_progress", "trained_until", "run_key", "until", "acted", "reason"),
    [
        ([], None, "1976", None, None, [], "no new drift check result"),
        ([rec(5, "passed")], None, "1976", None, None, [5], "drift checks passed for batch 2010"),
        (
            [rec(5, "failed")],
            None,
            "1976",
            "m:drift:2010:5",
            "2010",
            [5],
            "drift_within_tolerance failed on batch 2010",
        ),
        (
            [rec(5, "failed"), rec(9, "failed", "2012")],
            None,
            "1976",
            "m:drift:2012:5+9",
            "2012",
            [5, 9],
            "failed on batch 2010, 2012",
        ),
        # Planned first, finished last: an older batch's late failure never moves the window back.
        ([rec(5, "failed")], None, "2012", "m:drift:2010:5", "2012", [5], "failed on batch 2010"),
        ([rec(5, "failed"), rec(7, "passed")], "run-1", "1976", None, None, [7], "run-1 is still queued or running"),
        ([rec(5, "failed"), rec(7, "passed", "2012")], None, None, "m:drift:2010:5", "2010", [5, 7], "batch 2010"),
    ],
)
def test_retrain_decisions(completed, in_progress, trained_until, run_key, until, acted, reason) -> None:  # noqa: ANN001
    decision = decide_retrain(
        model="m", trigger="drift", completed=completed, retrain_in_progress=in_progress, trained_until=trained_until
    )
    assert decision.run_key == run_key
    assert decision.until == until
    assert [r.record_id for r in decision.acted_on] == acted
    assert decision.records == tuple(r.record_id for r in completed if r.failed and run_key)
    assert reason in decision.reason


@pytest.mark.parametrize(
    ("every", "scored", "trained_until", "in_progress", "until"),
    [
        (None, ["1991", "1993"], "1990", None, None),
        (3, ["1991", "1993"], "1990", None, None),
        (2, ["1989", "1991", "1993", "1994"], "1990", None, "1993"),
        (2, ["1991", "1993"], None, None, None),
        # A retrain under way moves the window: decide after it.
        (2, ["1991", "1993"], "1990", "run-1", None),
    ],
)
def test_cadence(every, scored, trained_until, in_progress, until) -> None:  # noqa: ANN001
    decision = decide_cadence(
        model="m", every=every, scored=scored, trained_until=trained_until, retrain_in_progress=in_progress
    )
    assert (decision.batch if decision else None) == until
    if decision:
        assert decision.run_key == f"m:schedule:{until}"


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("<!channel>", "&lt;!channel&gt;"),
        ("a & b", "a &amp; b"),
        ("&lt;", "&amp;lt;"),  # already-escaped text shows as typed, too
        ("<https://x|click>", "&lt;https://x|click&gt;"),
        ("plain 2010", "plain 2010"),
    ],
)
def test_slack_escape(text: str, escaped: str) -> None:
    assert slack_escape(text) == escaped


def test_alert_text_names_model_check_batch_and_what_failed() -> None:
    record = CheckRecord(5, KEY, "drift_within_tolerance", "failed", "2010", "r", description="62% drifted")
    assert alert_text("m", record) == "m: check drift_within_tolerance failed on batch 2010: 62% drifted"
    assert alert_text("m", CheckRecord(6, KEY, "c", "failed")) == "m: check c failed on (unpartitioned)"


def test_records_already_covered_by_a_retrain_run_are_not_retrained_on_again() -> None:
    """After a lost cursor (``dagster sensor cursor --delete``) the tick sees old failures again."""
    completed = [rec(5, "failed"), rec(9, "failed", "2012")]
    again = decide_retrain(
        model="m", trigger="drift", completed=completed, retrain_in_progress=None, trained_until=None, covered={5}
    )
    assert (again.run_key, again.records) == ("m:drift:2012:9", (9,))
    done = decide_retrain(
        model="m", trigger="drift", completed=completed, retrain_in_progress=None, trained_until=None, covered={5, 9}
    )
    assert done.run_key is None and [r.record_id for r in done.acted_on] == [5, 9]


def test_run_keys_name_every_record_and_stay_short() -> None:
    assert (
        decide_retrain(
            model="m",
            trigger="drift",
            completed=[rec(i, "failed") for i in (3, 4)],
            retrain_in_progress=None,
            trained_until=None,
        ).run_key
        == "m:drift:2010:3+4"
    )
    many = decide_retrain(
        model="m",
        trigger="drift",
        completed=[rec(i, "failed") for i in range(1, 500)],
        retrain_in_progress=None,
        trained_until=None,
    ).run_key
    assert many is not None and many.startswith("m:drift:2010:1..499~") and len(many) < 60


def simulate(seed: int, *, lose_cursor: float) -> tuple[Counter[int], Counter[int], set[int]]:
    """One random history: checks planned in order, finishing in random order, ticks in between,
    retrains that take a few ticks, a webhook that fails at random, and (with ``lose_cursor``)
    retrain-sensor cursors that are lost now and then. Returns how often each record was
    retrained on and alerted, and which records failed.

    What Dagster does is modelled, not called: one run per run key, and a tick interrupted by a
    daemon restart resumed with the requests and cursor it had (so it counts as finished).
    """
    rng = random.Random(seed)
    n = rng.randint(2, 12)
    outcome = {i: rng.choice(["passed", "failed"]) for i in range(1, n + 1)}
    finish_at = {i: rng.randint(0, 30) for i in outcome}
    abandoned = {i for i in outcome if rng.random() < 0.1}
    retrain_cursor, alert_cursor = CheckCursor().encode(), CheckCursor().encode()
    runs: dict[str, tuple[int, ...]] = {}
    running_until = -1
    alerted: Counter[int] = Counter()
    for t in range(60):
        visible = [
            CheckRecord(
                i,
                KEY,
                "drift_within_tolerance",
                outcome[i] if finish_at[i] <= t and i not in abandoned else "planned",  # type: ignore[arg-type]
                str(2000 + i),
                f"run-{i}",
                run_ended=t >= finish_at[i],
            )
            for i in outcome
        ]
        # The retrain sensor.
        cursor = CheckCursor.decode(retrain_cursor)
        seen = [r for r in visible if r.record_id > cursor.after or r.record_id in {i for i, _ in cursor.pending}]
        settled = settle(cursor, seen)
        decision = decide_retrain(
            model="m",
            trigger="drift",
            completed=settled.completed,
            retrain_in_progress="run" if t < running_until else None,
            trained_until=None,
            covered={i for records in runs.values() for i in records},
        )
        acted = {r.record_id for r in decision.acted_on}
        retrain_cursor = settled.cursor(r for r in settled.completed if r.record_id not in acted).encode()
        if decision.run_key is not None and decision.run_key not in runs:
            runs[decision.run_key] = decision.records
            running_until = t + rng.randint(1, 5)
        if rng.random() < lose_cursor:
            retrain_cursor = CheckCursor().encode()
        # The alert sensor, with a webhook that takes each alert with probability 0.7.
        cursor = CheckCursor.decode(alert_cursor)
        seen = [r for r in visible if r.record_id > cursor.after or r.record_id in {i for i, _ in cursor.pending}]
        settled = settle(cursor, seen)
        failed = [r for r in settled.completed if r.failed]
        delivered = []
        for r in failed:
            if rng.random() > 0.7:
                break
            delivered.append(r)
        if delivered or not failed:  # a tick that delivered nothing fails: its cursor is not stored
            alerted.update(r.record_id for r in delivered)
            alert_cursor = settled.cursor(r for r in failed if r not in delivered).encode()
    retrained = Counter(i for records in runs.values() for i in records)
    failed_records = {i for i, o in outcome.items() if o == "failed" and i not in abandoned}
    return retrained, alerted, failed_records


@pytest.mark.parametrize("lose_cursor", [0.0, 0.1])
def test_every_failed_evaluation_is_retrained_on_and_alerted_exactly_once_in_any_order(lose_cursor: float) -> None:
    trials, lost, duplicated = 2000, Counter(), Counter()
    for seed in range(trials):
        retrained, alerted, failed = simulate(seed, lose_cursor=lose_cursor)
        for what, counts in (("retrain", retrained), ("alert", alerted)):
            assert set(counts) <= failed, seed
            lost[what] += len(failed - set(counts))
            duplicated[what] += sum(1 for c in counts.values() if c > 1)
    assert (lost, duplicated) == (Counter(), Counter())
