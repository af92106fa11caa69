"""Which model answers a row (the canary), and the work done after the response (shadow, log).

The canary is chosen per row by a stable hash of its key (the request id, or the entity column the
spec names), so one entity always sees the same model while the share is unchanged: BLAKE2b of
the key, read as a number in [0, 1), against ``serving.canary.share``.

Everything that is not the answer runs in one background thread, after the response is sent:
the shadow (the challenger on every row), the champion's score of canary rows (so the log holds
both models' outputs), and handing the request to the request log. Its queue is bounded; when it
is full a request's follow-up is dropped and counted rather than ever delaying a response.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlops_assets.contract import ROUTE_CANARY as CANARY_ROUTE
from mlops_assets.contract import ROUTE_CHAMPION as CHAMPION_ROUTE

log = logging.getLogger("mlops.serve")
_SCALE = float(1 << 64)


def bucket(key: str) -> float:
    """A stable number in [0, 1) for ``key``: the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / _SCALE


def routes(keys: list[str], share: float) -> list[str]:
    """Per row, ``canary`` when its key falls in the first ``share`` of the hash range."""
    if share <= 0.0:
        return [CHAMPION_ROUTE] * len(keys)
    return [CANARY_ROUTE if bucket(k) < share else CHAMPION_ROUTE for k in keys]


@dataclass
class FollowUp:
    """One answered request, with what is still to be scored off the response path."""

    request_ids: list[str]
    received_at: float
    features: dict[str, list[Any]]
    n_rows: int
    route: list[str]
    champion: Any  # the Slot that answered champion rows
    challenger: Any  # the Slot of canary rows or the shadow; None when neither
    proba: list[float]  # the answer per row (champion's or challenger's, as routed)
    shadow: bool


class Background:
    """One worker thread completing follow-ups: shadow and champion scores, then the request log."""

    def __init__(
        self,
        *,
        append: Callable[[Any], None] | None,
        make_batch: Callable[..., Any],
        on_shadow: Callable[[int], None],
        on_dropped: Callable[[], None],
        capacity: int = 10000,
    ) -> None:
        self._append = append
        self._make_batch = make_batch
        self._on_shadow = on_shadow
        self._on_dropped = on_dropped
        self._queue: queue.Queue[FollowUp | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="mlops-serve-background", daemon=True)
        self._thread.start()

    def submit(self, job: FollowUp) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._on_dropped()

    def close(self, timeout: float = 30.0) -> None:
        """Finishes the queued follow-ups, then stops the thread."""
        self._queue.put(None)
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        from threadpoolctl import threadpool_limits

        # OpenMP's thread count is per calling thread: this one is limited too.
        with threadpool_limits(limits=1):
            self._loop()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._complete(job)
            except Exception:  # one bad follow-up must not stop the worker
                log.exception("serving follow-up of request %s failed", job.request_ids[:1])

    def _complete(self, job: FollowUp) -> None:
        canary = [r == CANARY_ROUTE for r in job.route]
        champion_proba = list(job.proba)
        challenger_proba: list[float] | None = None
        if any(canary):
            # The answer of canary rows is the challenger's; the champion's is computed here.
            challenger_proba = [p if c else float("nan") for p, c in zip(job.proba, canary, strict=True)]
            scores = job.champion.scorer.score(job.features, job.n_rows)
            champion_proba = [s if c else p for p, s, c in zip(job.proba, scores, canary, strict=True)]
        if job.shadow and job.challenger is not None:
            challenger_proba = job.challenger.scorer.score(job.features, job.n_rows)
            self._on_shadow(job.n_rows)
        if self._append is None:
            return
        self._append(
            self._make_batch(
                request_ids=job.request_ids,
                received_at=job.received_at,
                features=job.features,
                champion_version=job.champion.version,
                champion_proba=champion_proba,
                route=job.route,
                challenger_version=job.challenger.version if challenger_proba is not None else None,
                challenger_proba=challenger_proba,
            )
        )
