"""The models a server answers with, following the registry's ``champion`` and ``challenger`` aliases.

A background thread re-resolves both aliases every ``poll_seconds``. A moved alias is loaded
through the registry's safe loader (the same verified cache and in-process memo as batch
scoring), warmed on a few rows, and only then swapped in by one attribute assignment. A request
reads the slot once when it starts and keeps that object, so requests in flight finish on the
model they started with and no request ever sees a half-loaded one. A failed load keeps the model
that was serving and is retried at the next poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlops_assets.contract import CHALLENGER, CHAMPION
from mlops_assets.serving.predictor import Scorer
from mlops_assets.serving.protocol import Columns

log = logging.getLogger("mlops.serve")
# Warm-up calls per freshly loaded version: the first calls pay for lazy imports and allocations.
WARM_CALLS = 20


@dataclass(frozen=True)
class Slot:
    """One loaded version, ready to score."""

    version: str
    scorer: Scorer
    loaded_at: float


class ModelHolder:
    """Champion and challenger slots, kept current by a poll thread.

    Args:
        registry: an ``MlflowRegistry`` (``by_alias`` and ``load_version`` are used).
        on_swap: called with (alias, old version or None, new version) after each swap.
    """

    def __init__(
        self,
        registry: Any,
        name: str,
        columns: Columns,
        *,
        poll_seconds: float,
        follow_challenger: bool,
        on_swap: Callable[[str, str | None, str], None] | None = None,
        on_error: Callable[[str, Exception], None] | None = None,
    ) -> None:
        self.registry = registry
        self.name = name
        self.columns = columns
        self.poll_seconds = poll_seconds
        self.follow_challenger = follow_challenger
        self.champion: Slot | None = None
        self.challenger: Slot | None = None
        self._on_swap = on_swap
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mlops-serve-aliases", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def refresh(self) -> None:
        """One poll: resolves both aliases and swaps in any version that moved."""
        for alias in (CHAMPION, CHALLENGER) if self.follow_challenger else (CHAMPION,):
            try:
                self._follow(alias)
            except Exception as e:  # the serving model stays; the next poll retries
                log.warning("%s: following alias %s failed (%s); still serving what was loaded", self.name, alias, e)
                if self._on_error is not None:
                    self._on_error(alias, e)

    def _follow(self, alias: str) -> None:
        found = self.registry.by_alias(self.name, alias)
        current: Slot | None = getattr(self, alias)
        if found is None:
            if current is not None and alias == CHALLENGER:
                # No challenger any more: canary and shadow traffic stop.
                self.challenger = None
            return
        if current is not None and current.version == found.version:
            return
        model = self.registry.load_version(found)
        scorer = Scorer(model, numeric=self.columns.numeric, categorical=self.columns.categorical)
        warm_up(scorer, self.columns)
        setattr(self, alias, Slot(version=found.version, scorer=scorer, loaded_at=time.time()))
        log.warning("%s: %s is version %s (was %s)", self.name, alias, found.version, current and current.version)
        if self._on_swap is not None:
            self._on_swap(alias, current and current.version, found.version)

    def _run(self) -> None:
        from threadpoolctl import threadpool_limits

        # OpenMP's thread count is per calling thread: loading and warming here is limited too.
        with threadpool_limits(limits=1):
            self._loop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.refresh()
            self._stop.wait(max(0.0, self.poll_seconds - (time.monotonic() - started)))


def warm_up(scorer: Scorer, columns: Columns) -> None:
    """Scores a one-row and a two-row request of missing values, so the first real request does
    not pay for lazy imports, allocations and caches on either scoring path."""
    for n_rows in (1, 2):
        rows = {name: [None] * n_rows for name in columns.required}
        for _ in range(WARM_CALLS if n_rows == 1 else 2):
            scorer.score(rows, n_rows)
