"""Materializes a pipeline in-process with real resources on tmp_path: the lake on disk and
MLflow on a SQLite file."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from mlops_assets.contract import Asset, Job, Meta, Sensor, op_name, partitions_name, training_file
from mlops_assets.definitions import build_definitions
from resources.settings import Settings

if TYPE_CHECKING:
    import pandas as pd


class Harness:
    def __init__(
        self,
        home: Path,
        pipelines: Path,
        name: str,
        instance: dg.DagsterInstance | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.settings = Settings.from_env({"MLOPS_HOME": str(home), "MLOPS_PIPELINES": str(pipelines), **(env or {})})
        self.pipelines = pipelines
        self.defs = build_definitions(self.settings)
        self.instance = instance or dg.DagsterInstance.ephemeral()
        self.name = name
        self.resources = dict(self.defs.resources)  # tests swap a resource without touching the definitions
        self.landing_cursor: str | None = None

    def key(self, noun: str) -> dg.AssetKey:
        return dg.AssetKey([self.name, noun])

    def materialize(
        self, nouns: Sequence[str], partition: str | None = None, run_config: dict | None = None
    ) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            self.defs.assets,
            instance=self.instance,
            selection=[self.key(n) for n in nouns],
            partition_key=partition,
            resources=self.resources,
            run_config=run_config,
            raise_on_error=False,
        )

    def batches(self) -> list[str]:
        return self.instance.get_dynamic_partitions(partitions_name(self.name))

    def until(self, batch: str) -> dict:
        """The run config of a training window ending at ``batch``."""
        return {"ops": {op_name(self.name, Asset.TRAINING_DATASET): {"config": {"until": batch}}}}

    def training_data(self, file: str) -> pd.DataFrame:
        """A file of the latest training window (``TrainingFile.TRAIN`` or ``HOLDOUT``)."""
        fingerprint = self.metadata(Asset.TRAINING_DATASET)[Meta.TRAINING_FINGERPRINT]
        return self.resources["lake"].read_frame(self.name, Asset.TRAINING_DATASET, training_file(fingerprint, file))

    def landing_tick(self) -> dg.SensorResult:
        """One tick of the real landing sensor with every landed file settled (its cursor kept
        between ticks, as the daemon keeps it); registers the partitions it adds."""
        old = time.time() - 120
        for entry in os.scandir(self.resources["landing"].folder(self.name)):
            # Only files not settled yet: an older one is left as it is. A symlink is not
            # followed: its target may be anywhere (the sensor refuses it all the same).
            if not entry.is_symlink() and entry.stat(follow_symlinks=False).st_mtime > old + 60:
                os.utime(entry.path, (old, old))
        sensor = self.defs.get_sensor_def(Sensor.landing(self.name))
        context = dg.build_sensor_context(
            instance=self.instance, resources=self.resources, definitions=self.defs, cursor=self.landing_cursor
        )
        data = sensor(context)
        self.landing_cursor = data.cursor
        for add in data.dynamic_partitions_requests:
            self.instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))
        return data

    def tick_landing(self) -> list[dg.RunRequest]:
        """The run requests of one ``landing_tick``."""
        return list(self.landing_tick().run_requests)

    def run_score_job(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        """The landing sensor's run request, executed by the real score job (with the definitions'
        resources: a resource swapped in ``resources`` is not used here)."""
        job = self.defs.resolve_job_def(Job.score_batch(self.name))
        return job.execute_in_process(
            instance=self.instance,
            partition_key=request.partition_key,
            tags=request.tags,
            raise_on_error=False,
        )

    def raw_frame(self, batch: str) -> pd.DataFrame:
        """The batch's landed raw content version, as ``validated_batch`` reads it."""
        from mlops_assets.assets.ingestion import landed_version
        from mlops_assets.contract import raw_version_file

        landed = landed_version(self.resources["lake"], self.name, batch)
        assert landed is not None, f"batch {batch} was never landed"
        return self.resources["lake"].read_frame(
            self.name, Asset.RAW_BATCH, raw_version_file(batch, landed.content_version)
        )

    def store_raw(self, batch: str, frame: pd.DataFrame, origin: str = "the test") -> str:
        """Stores ``frame`` as a new landed raw version of ``batch`` the way ``raw_batch`` does;
        returns its content version."""
        from mlops_assets.assets.ingestion import store_raw_version

        landed, _ = store_raw_version(self.resources["lake"], self.name, batch, frame, origin)
        return landed.content_version

    def failure_message(self, result: dg.ExecuteInProcessResult) -> str:
        return "\n".join(
            e.step_failure_data.error.message
            for e in result.all_events
            if e.is_step_failure and e.step_failure_data.error
        )

    @staticmethod
    def failure_chain(result: dg.ExecuteInProcessResult) -> str:
        """Every step failure's message with its causes (``failure_message`` has the outer ones only)."""
        lines = []
        for event in result.all_events:
            error = event.step_failure_data.error if event.is_step_failure and event.step_failure_data else None
            while error is not None:
                lines.append(error.message.strip())
                error = error.cause
        return "\n".join(lines)

    @staticmethod
    def retries(result: dg.ExecuteInProcessResult) -> list[float]:
        """The wait before each step retry of the run, in order."""
        return [
            e.event_specific_data.seconds_to_wait
            for e in result.all_events
            if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
        ]

    def metadata(self, noun: str, partition: str | None = None) -> dict:
        event = self.instance.get_latest_materialization_event(self.key(noun))
        if partition is not None:
            records = self.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=self.key(noun), asset_partitions=[partition]), limit=1
            ).records
            event = records[0].event_log_entry if records else None
        assert event is not None, f"{noun} {partition} was never materialized"
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}

    def check_results(self, result: dg.ExecuteInProcessResult) -> dict[str, bool]:
        return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}

    def history(self, until: str) -> None:
        """Everything up to the first champion, asserting each step succeeds."""
        from mlops_assets.ml.data import batch_at_or_before

        assert self.materialize([Asset.SOURCE_BATCHES]).success
        history = [b for b in self.batches() if batch_at_or_before(b, until)]
        assert self.materialize([Asset.VALIDATION_SUITE]).success
        for b in history:
            r = self.materialize([Asset.RAW_BATCH, Asset.VALIDATED_BATCH, Asset.FEATURES], b)
            assert r.success, self.failure_message(r)
        r = self.materialize([Asset.TRAINING_DATASET, Asset.MODEL, Asset.EVALUATION, Asset.PROMOTION])
        assert r.success, self.failure_message(r)
