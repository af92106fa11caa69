"""Which batch an asset check result is about: one answer for the sensors and for ``mlops explain``.

Results yielded by a partitioned asset's body carry no ``partition`` in daemon-launched runs, so
every per-batch check of the product also records its batch as metadata (``Meta.BATCH``); a run's
partition tag is the last resort, for results recorded before that metadata existed. No ML import:
sensor ticks use this.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from mlops_assets.contract import TAG_PARTITION, Meta


class RunPartitions:
    """The partition tag of runs, each read once (or many at once with ``prefetch``)."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self._instance = instance
        self._known: dict[str, str | None] = {}

    def prefetch(self, run_ids: Iterable[str]) -> None:
        """Reads the tags of every run in ``run_ids`` not read yet, in one query."""
        missing = sorted(set(run_ids) - set(self._known))
        if not missing:
            return
        records = self._instance.get_run_records(filters=dg.RunsFilter(run_ids=missing))
        found = {r.dagster_run.run_id: r.dagster_run.tags.get(TAG_PARTITION) or None for r in records}
        self._known.update({run_id: found.get(run_id) for run_id in missing})

    def __call__(self, run_id: str) -> str | None:
        if run_id not in self._known:
            self.prefetch([run_id])
        return self._known[run_id]


def check_result_batch(evaluation: dg.AssetCheckEvaluation, run_id: str, *, runs: RunPartitions) -> str | None:
    """The batch ``evaluation`` (recorded by run ``run_id``) is about; None for an unpartitioned one.

    In order: the evaluation's own partition, the batch the check recorded as metadata, the
    partition of the run that evaluated it. ``runs`` is consulted only when the first two are empty.
    """
    if evaluation.partition:
        return evaluation.partition
    batch = evaluation.metadata.get(Meta.BATCH)
    if batch is not None and batch.value not in (None, ""):
        return str(batch.value)
    return runs(run_id)
