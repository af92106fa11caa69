"""What the sensors decide, as pure functions of what assets already recorded.

No Dagster and no I/O here: a tick gathers plain facts (landed files, check results, runs in
progress), these functions decide, and the sensor turns the decision into a ``RunRequest`` or a
``SkipReason``. Every skip explains itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mlops_assets.ml.data import batch_sort_key
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


@dataclass(frozen=True)
class CheckEvent:
    """One recorded evaluation of a monitored asset check."""

    record_id: int
    batch: str
    passed: bool
    check: str


@dataclass(frozen=True)
class RetrainDecision:
    """A retrain to request (``run_key`` set) or the reason there is none."""

    cursor: int
    run_key: str | None = None
    batch: str | None = None
    reason: str = ""


def decide_retrain(
    *,
    model: str,
    trigger: str,
    events: Sequence[CheckEvent],
    cursor: int,
    retrain_in_progress: str | None,
) -> RetrainDecision:
    """Retrain when a monitored check failed since ``cursor``, once per failure.

    The run key names the model, trigger, newest failed batch and its record, so any number of
    ticks over the same failure request one run. While a retrain is queued or running, the
    cursor stays put and the failure is looked at again after it.
    """
    new = sorted((e for e in events if e.record_id > cursor), key=lambda e: e.record_id)
    if not new:
        return RetrainDecision(cursor, reason=f"no new {trigger} check result since record {cursor}")
    failed = [e for e in new if not e.passed]
    newest = max(e.record_id for e in new)
    if not failed:
        batches = ", ".join(sorted({e.batch for e in new}, key=batch_sort_key))
        return RetrainDecision(newest, reason=f"{trigger} checks passed for batch {batches}")
    latest = max(failed, key=lambda e: (batch_sort_key(e.batch), e.record_id))
    if retrain_in_progress is not None:
        return RetrainDecision(
            cursor,
            reason=f"{latest.check} failed on batch {latest.batch}, but retrain run {retrain_in_progress} "
            "is still queued or running; deciding again after it",
        )
    return RetrainDecision(
        newest,
        run_key=f"{model}:{trigger}:{latest.batch}:{latest.record_id}",
        batch=latest.batch,
        reason=f"{latest.check} failed on batch {latest.batch}",
    )


def decide_cadence(
    *, model: str, every: int | None, scored: Sequence[str], trained_until: str | None
) -> RetrainDecision | None:
    """A retrain when ``every`` batches were scored after the champion's last training batch."""
    if every is None or trained_until is None:
        return None
    newer = sorted((b for b in scored if batch_sort_key(b) > batch_sort_key(trained_until)), key=batch_sort_key)
    if len(newer) < every:
        return None
    until = newer[every - 1]
    return RetrainDecision(
        0,
        run_key=f"{model}:schedule:{until}",
        batch=until,
        reason=f"{len(newer)} batches scored since the champion's training data ended at {trained_until} "
        f"(retrain_every={every})",
    )
