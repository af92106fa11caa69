"""What the sensors decide, as pure functions of what assets already recorded.

No Dagster and no I/O here: a tick gathers plain facts (landed files, check records, runs in
progress), these functions decide, and the sensor turns the decision into a ``RunRequest`` or a
``SkipReason``. Every skip explains itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from mlops_assets.batches import batch_sort_key
from resources.landing import LandedFile


@dataclass(frozen=True)
class LandingPlan:
    ingest: list[LandedFile]
    settling: list[LandedFile]
    seen: dict[str, str]

    def skip_reason(self, folder: str) -> str:
        if self.settling:
            names = ", ".join(f.path.rsplit("/", 1)[-1] for f in self.settling)
            return f"waiting for {names} in {folder} to stop changing before ingesting"
        return f"no new or changed file in {folder}"


def plan_landing(
    files: Iterable[LandedFile], *, seen: dict[str, str], now: float, settle_seconds: float
) -> LandingPlan:
    """New or changed files that have not been modified for ``settle_seconds`` are ingested.

    ``seen`` maps a file path to the identity (name, size, mtime) last ingested, so a file is
    ingested once per version: a malformed file fails once and stays where it is until replaced.
    """
    ingest, settling = [], []
    for f in files:
        if seen.get(f.path) == f.identity:
            continue
        if now - f.mtime < settle_seconds:
            settling.append(f)
        else:
            ingest.append(f)
    return LandingPlan(ingest, settling, {**seen, **{f.path: f.identity for f in ingest}})


Outcome = Literal["planned", "passed", "failed"]


@dataclass(frozen=True)
class CheckRecord:
    """One execution record of a monitored asset check, as the tick read it.

    Dagster creates the record when the run is planned (``planned``) and fills in the outcome when
    the evaluation arrives, so record ids follow planning order, not completion order.
    """

    record_id: int
    key: str
    check: str
    outcome: Outcome
    batch: str = ""
    run_id: str = ""
    # Only meaningful while planned: the run has ended, so no evaluation will ever arrive.
    run_ended: bool = False
    description: str = ""

    @property
    def finished(self) -> bool:
        return self.outcome != "planned"

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"


@dataclass(frozen=True)
class CheckCursor:
    """What a check-watching sensor has handled: bounded, whatever order evaluations arrive in.

    Every record with an id up to ``after`` has been read; of those, ``pending`` (record id and
    check key) are not acted on yet: still planned, or finished and waiting for their action (a
    retrain while another runs, an alert the webhook did not take). The pending list holds only
    in-flight or waiting records, never the history.
    """

    after: int = 0
    pending: tuple[tuple[int, str], ...] = ()

    def encode(self) -> str:
        return json.dumps({"after": self.after, "pending": [list(p) for p in self.pending]}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | None) -> CheckCursor:
        """Reads a stored cursor; a bare integer is the earlier format (highest record id seen).

        Raises:
            ValueError: the cursor is neither, naming what it holds.
        """
        if not text:
            return cls()
        try:
            value = json.loads(text)
            if isinstance(value, int):
                return cls(after=value)
            return cls(
                after=int(value["after"]),
                pending=tuple(sorted((int(i), str(k)) for i, k in value["pending"])),
            )
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"sensor cursor {text[:200]!r} is not a check cursor: {e}") from e


@dataclass(frozen=True)
class Settled:
    """The records of one tick, sorted out against the cursor."""

    # Finished and not acted on yet, oldest record first.
    completed: list[CheckRecord]
    # Planned, and their runs are still going: looked at again next tick.
    waiting: list[CheckRecord]
    # Planned, but their runs ended without an evaluation (a failed step, a run that died).
    abandoned: list[CheckRecord]
    after: int

    def cursor(self, keep: Iterable[CheckRecord] = ()) -> CheckCursor:
        """The cursor once every completed record except ``keep`` has been acted on."""
        pending = {(r.record_id, r.key) for r in (*self.waiting, *keep)}
        return CheckCursor(self.after, tuple(sorted(pending)))


def settle(cursor: CheckCursor, records: Iterable[CheckRecord]) -> Settled:
    """Sorts the records a tick read: those above ``cursor.after`` and the current state of the
    cursor's pending ones (a pending record that is gone, e.g. a wiped asset, is dropped).
    """
    unique = {r.record_id: r for r in records}
    ordered = [unique[i] for i in sorted(unique)]
    return Settled(
        completed=[r for r in ordered if r.finished],
        waiting=[r for r in ordered if not r.finished and not r.run_ended],
        abandoned=[r for r in ordered if not r.finished and r.run_ended],
        after=max([cursor.after, *unique]),
    )


@dataclass(frozen=True)
class RetrainDecision:
    """A retrain to request (``run_key`` set) or the reason there is none.

    ``acted_on`` are the completed records this decision settles: they leave the cursor. A failed
    record that is not in it waits for a later decision.
    """

    acted_on: tuple[CheckRecord, ...] = ()
    run_key: str | None = None
    batch: str | None = None
    until: str | None = None
    reason: str = ""
    # The failed records the requested retrain acts on (its run tag).
    records: tuple[int, ...] = ()


def _batches(records: Iterable[CheckRecord]) -> str:
    return ", ".join(sorted({r.batch for r in records}, key=batch_sort_key))


def retrain_run_key(model: str, trigger: str, batch: str, records: Sequence[int]) -> str:
    """Names the model, trigger, newest failed batch and every record acted on (hashed past four)."""
    ids = sorted(records)
    named = (
        "+".join(map(str, ids))
        if len(ids) <= 4
        else f"{ids[0]}..{ids[-1]}~" + hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()[:12]
    )
    return f"{model}:{trigger}:{batch}:{named}"


def decide_retrain(
    *,
    model: str,
    trigger: str,
    completed: Sequence[CheckRecord],
    retrain_in_progress: str | None,
    trained_until: str | None,
    covered: Collection[int] = (),
) -> RetrainDecision:
    """One retrain for the failed evaluations not acted on yet, whatever order they finished in.

    Every failed record is acted on exactly once: by the one request that covers it, or, while a
    retrain is queued or running, by a later one (it waits in the cursor). ``covered`` are the
    records earlier retrain runs already name (their tag): after a lost cursor they are not
    retrained on again. The window ends at the newest failed batch, never before the window of
    the last retrain (a late-finishing check of an older batch must not move training back). The
    run key names the records, so a repeated tick requests the same run, which Dagster starts at
    most once.
    """
    if not completed:
        return RetrainDecision(reason=f"no new {trigger} check result")
    failed = [r for r in completed if r.failed and r.record_id not in covered]
    done = tuple(r for r in completed if r not in failed)
    if not failed:
        if any(r.failed for r in completed):
            return RetrainDecision(done, reason=f"retrain runs already cover the failed {trigger} checks")
        return RetrainDecision(done, reason=f"{trigger} checks passed for batch {_batches(done)}")
    newest = max(failed, key=lambda r: (batch_sort_key(r.batch), r.record_id))
    what = f"{newest.check} failed on batch {_batches(failed)}"
    if retrain_in_progress is not None:
        return RetrainDecision(
            done,
            reason=f"{what}, but retrain run {retrain_in_progress} is still queued or running; deciding again after it",
        )
    until = newest.batch
    if trained_until is not None and batch_sort_key(trained_until) > batch_sort_key(until):
        until = trained_until
    records = tuple(r.record_id for r in failed)
    return RetrainDecision(
        tuple(completed),
        run_key=retrain_run_key(model, trigger, newest.batch, records),
        batch=newest.batch,
        until=until,
        reason=what,
        records=records,
    )


def decide_cadence(
    *,
    model: str,
    every: int | None,
    scored: Sequence[str],
    trained_until: str | None,
    retrain_in_progress: str | None,
) -> RetrainDecision | None:
    """A retrain when ``every`` batches were scored after the last training window ended.

    None while a retrain is queued or running: its window moves ``trained_until`` forward.
    """
    if every is None or trained_until is None or retrain_in_progress is not None:
        return None
    newer = sorted((b for b in scored if batch_sort_key(b) > batch_sort_key(trained_until)), key=batch_sort_key)
    if len(newer) < every:
        return None
    until = newer[every - 1]
    return RetrainDecision(
        run_key=f"{model}:schedule:{until}",
        batch=until,
        until=until,
        reason=f"{len(newer)} batches scored since the last training window ended at {trained_until} "
        f"(retrain_every={every})",
    )


def alert_text(model: str, record: CheckRecord) -> str:
    """The one-line alert for a failed check (escaped for Slack by the sink, not here)."""
    where = f"batch {record.batch}" if record.batch else "(unpartitioned)"
    text = f"{model}: check {record.check} failed on {where}"
    return f"{text}: {record.description}" if record.description else text
