"""Drives production through the real Dagster daemon: land a batch file, follow what the sensors do.

Used by ``mlops demo`` and the end-to-end test. Nothing here decides anything: the landing,
drift and fairness sensors running in ``dagster-daemon`` start every run; this only drops files
and reads what happened.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from mlops_assets.contract import CHAMPION, TAG_BATCH, TAG_MODEL, TAG_TRIGGER, Asset, Fairness, Job, LakeFolder, Meta
from mlops_assets.spec import PipelineSpec
from resources.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


class LoopTimeout(RuntimeError):
    """The daemon did not do what was expected in time."""


class ClosedLoop:
    """A running ``dagster-daemon`` on the settings' MLOPS_HOME, stopped on exit."""

    def __init__(self, spec: PipelineSpec, settings: Settings, env: dict[str, str], *, timeout: float = 600) -> None:
        self.spec = spec
        self.settings = settings
        self.env = env
        self.timeout = timeout
        self.log_path = settings.home / "logs" / "daemon.log"
        from resources.settings import resolved_resources

        self.landing = resolved_resources(settings)["landing"].folder(spec.name)
        self._daemon: subprocess.Popen[bytes] | None = None
        self._instance: dg.DagsterInstance | None = None

    def __enter__(self) -> ClosedLoop:
        self.start()
        self._instance = dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"])
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is None and self.running:
                # Runs still going would be left STARTED by the stop: let them end first.
                self.wait_until_idle(within=self.timeout)
        finally:
            self.stop()
            if self._instance is not None:
                self._instance.dispose()

    @property
    def running(self) -> bool:
        return self._daemon is not None and self._daemon.poll() is None

    def start(self) -> None:
        """Starts ``dagster-daemon`` in its own process group (with the code server it spawns and
        the run workers that server starts)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.landing.mkdir(parents=True, exist_ok=True)
        daemon = Path(sys.executable).parent / "dagster-daemon"
        with self.log_path.open("ab") as log:
            self._daemon = subprocess.Popen(
                [str(daemon), "run", "-m", "mlops_assets.definitions"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        print(f"  dagster-daemon started (pid {self._daemon.pid}, log {self.log_path})", flush=True)

    def stop(self, *, grace: float = 30) -> None:
        """SIGTERM to the daemon's process group, SIGKILL after ``grace`` seconds. A run the kill
        cuts off stays STARTED until the next daemon's run watchdog sensor ends it."""
        if not self.running:
            return
        assert self._daemon is not None
        os.killpg(self._daemon.pid, signal.SIGTERM)
        try:
            self._daemon.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            print(f"  dagster-daemon did not stop within {grace:.0f}s: killing its process group", flush=True)
            self.kill()
            return
        print("  dagster-daemon stopped", flush=True)

    def kill(self) -> None:
        """SIGKILL to the whole process group: daemon, code server and run workers, as a crash or
        a reboot would end them (nothing reports anything)."""
        if self._daemon is None:
            return
        try:
            os.killpg(self._daemon.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._daemon.wait()

    def wait_until_idle(self, *, within: float) -> bool:
        """Waits until none of the model's runs is queued or in progress; False on timeout."""
        deadline = time.monotonic() + within
        while self.instance.get_run_records(
            dg.RunsFilter(tags={TAG_MODEL: self.spec.name}, statuses=IN_FLIGHT), limit=1
        ):
            self.check_daemon()
            if time.monotonic() > deadline:
                return False
            time.sleep(1)
        return True

    @property
    def instance(self) -> dg.DagsterInstance:
        assert self._instance is not None, "use ClosedLoop as a context manager"
        return self._instance

    def land(self, batch: str, frame: pd.DataFrame, *, mtime: float | None = None) -> Path:
        """Writes the batch under a hidden name and renames it, so the sensor never sees half a
        file. ``mtime`` backdates the file (the landing sensor ingests older files first)."""
        final = self.landing / f"{batch}.parquet"
        staging = self.landing / f".{batch}.parquet.tmp"
        frame.to_parquet(staging, index=False)
        if mtime is not None:
            os.utime(staging, (mtime, mtime))
        staging.replace(final)
        return final

    def wait_for_run(
        self,
        tags: dict[str, str],
        *,
        appear_within: float,
        job: str | None = None,
        created_after: datetime | None = None,
    ) -> dg.DagsterRun | None:
        """The run (of ``job``, if given) carrying ``tags`` and created after ``created_after``,
        once it has finished; None if none appears in time."""
        deadline = time.monotonic() + appear_within
        run = None
        while run is None:
            self.check_daemon()
            runs_filter = dg.RunsFilter(job_name=job, tags=tags, created_after=created_after)
            records = self.instance.get_run_records(runs_filter, limit=1)
            run = records[0].dagster_run if records else None
            if run is None:
                if time.monotonic() > deadline:
                    return None
                time.sleep(1)
        finish_by = time.monotonic() + self.timeout
        while run.status not in FINISHED:
            self.check_daemon()
            if time.monotonic() > finish_by:
                raise LoopTimeout(f"run {run.run_id} ({tags}) did not finish within {self.timeout:.0f}s")
            time.sleep(1)
            run = self.instance.get_run_by_id(run.run_id)
            assert run is not None
        return run

    def check_daemon(self) -> None:
        if self._daemon is not None and self._daemon.poll() is not None:
            raise LoopTimeout(f"dagster-daemon exited with {self._daemon.returncode}; see {self.log_path}")

    def land_and_follow(self, batch: str, frame: pd.DataFrame) -> dict[str, Any]:
        """Lands one batch and waits for its scoring run and any retrain the sensors start."""
        from resources.settings import resolved_resources

        name = self.spec.name
        started = time.monotonic()
        # Runs of an earlier landing of the same batch (a demo run again on the same MLOPS_HOME)
        # carry the same tags: only those started by this landing count.
        landed_at = datetime.now(UTC)
        self.land(batch, frame)
        model_tags = {TAG_MODEL: name, TAG_BATCH: batch}
        scored = self.wait_for_run(
            {**model_tags, TAG_TRIGGER: "landing"},
            appear_within=self.timeout,
            job=Job.score_batch(name),
            created_after=landed_at,
        )
        row: dict[str, Any] = {"batch": batch, "scored": False, "error": "", "retrain": "-", "decision": "-"}
        if scored is None:
            row["error"] = f"no scoring run started within {self.timeout:.0f}s; see {self.log_path}"
        elif scored.status != dg.DagsterRunStatus.SUCCESS:
            row["error"] = f"run {scored.run_id[:8]} failed: {self.failure_reason(scored)}"
        else:
            row["scored"] = True
        # A batch is drift-checked also when it cannot be scored (no champion yet): its checks
        # may start a retrain all the same, which is how the loop finds a first champion.
        row["drift_checked"] = scored is not None and self._materialized(scored, Asset.DRIFT_REPORT)
        if row["scored"] or row["drift_checked"]:
            # A failed check is acted on at the sensor's next tick; on a loaded machine a tick
            # (a code-server call) can itself take many seconds.
            patience = 6 * int(self.env.get("MLOPS_SENSOR_INTERVAL_SECONDS", "30")) + 90
            for trigger in self._failed_monitors(batch):
                # The job named: a drifted batch also gets a drift report run with the same tags.
                retrain = self.wait_for_run(
                    {**model_tags, TAG_TRIGGER: trigger},
                    appear_within=patience,
                    job=Job.retrain(name),
                    created_after=landed_at,
                )
                if retrain is not None:
                    row["retrain"] = trigger
                    row["decision"] = self._decision(retrain)
                    break
                missing = f"{trigger} check failed but no retrain run appeared within {patience}s"
                row["error"] = f"{row['error']}; {missing}" if row["error"] else missing
        champion = resolved_resources(self.settings)["registry"].by_alias(name, CHAMPION)
        row["champion"] = champion.version if champion else "-"
        print(
            f"  {batch}: {'scored' if row['scored'] else 'NOT scored'}, retrain {row['retrain']}, "
            f"decision {row['decision']}, champion v{row['champion']} ({time.monotonic() - started:.0f}s)",
            flush=True,
        )
        return row

    def failure_reason(self, run: dg.DagsterRun) -> str:
        """The failed steps and their errors' first lines (a ``dagster.Failure`` says why itself)."""
        failures = self.instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
        reasons = []
        for record in failures:
            event = record.event_log_entry.dagster_event
            error = event.step_failure_data.error if event and event.step_failure_data else None
            message = error.message.strip().splitlines()[0] if error and error.message.strip() else "failed"
            step = record.event_log_entry.step_key or "?"
            reasons.append(f"{step.rsplit('__', 1)[-1]}: {message.split('Failure: ', 1)[-1]}")
        return "; ".join(reasons) or f"{run.status.value.lower()}; see the Dagster UI"

    def _materialized(self, run: dg.DagsterRun, noun: str) -> bool:
        """Whether ``run`` materialized the model's asset ``noun``."""
        records = self.instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
        key = dg.AssetKey([self.spec.name, noun])
        return any(r.event_log_entry.dagster_event.asset_key == key for r in records if r.event_log_entry.dagster_event)

    def _failed_monitors(self, batch: str) -> list[str]:
        """The retrain triggers this batch's check results call for, per the spec."""
        from resources.settings import resolved_resources

        monitoring, gates, name = self.spec.monitoring, self.spec.gates, self.spec.name
        lake = resolved_resources(self.settings)["lake"]
        triggers = []
        if (
            monitoring.retrain_on_drift
            and lake.exists(name, Asset.DRIFT_REPORT, batch, "json")
            and lake.read_json(name, Asset.DRIFT_REPORT, batch)["dataset_drift"]
        ):
            triggers.append("drift")
        if monitoring.fairness_action == "retrain" and lake.exists(
            name, LakeFolder.PRODUCTION_EVALUATION, batch, "json"
        ):
            fairness = lake.read_json(name, LakeFolder.PRODUCTION_EVALUATION, batch).get("fairness", [])
            limits = Fairness.limits(gates)
            if any(
                f[g] is not None and limit is not None and f[g] > limit for f in fairness for g, limit in limits.items()
            ):
                triggers.append("fairness")
        return triggers

    def _decision(self, run: dg.DagsterRun) -> str:
        if run.status != dg.DagsterRunStatus.SUCCESS:
            return "failed"
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey([self.spec.name, Asset.PROMOTION])), limit=5
        ).records
        for record in records:
            if record.run_id == run.run_id:
                return str(record.asset_materialization.metadata[Meta.DECISION].value)
        return "-"
