"""The closed loop with the real ``dagster-daemon``: landed batches are ingested, scored, found
drifted, and the retrains, promotions and alerts they call for happen by themselves, once each,
whatever order runs finish in, across daemon restarts, lost sensor cursors and a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from mlops_assets.contract import Asset, Job, Meta, TrainingFile, training_file
from mlops_assets.demo import INSTANCE_CONFIG
from mlops_assets.loop import ClosedLoop
from mlops_assets.spec import load_specs
from resources.settings import Settings
from tests.assets.pipeline_harness import Harness
from tests.conftest import gss, gss_spec
from tests.sensors.http_sink import http_sink

NAME = "gss_slice"
pytestmark = pytest.mark.slow


@contextmanager
def history(tmp_path: Path, *, instance_config: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Three GSS years of history and a champion, on a DAGSTER_HOME the daemon can use."""
    source = tmp_path / "data" / "history.parquet"
    source.parent.mkdir()
    frame = gss()
    frame[frame["year"].isin([1974, 1975, 1976])].to_parquet(source, index=False)
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "spec.yaml").write_text(yaml.safe_dump(gss_spec(source, monitoring={"landing_settle_seconds": 1})))
    home = tmp_path / "home"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    write_instance(dagster_home, instance_config or {})
    env = {
        **os.environ,
        "MLOPS_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "MLOPS_PIPELINES": str(pipelines),
        "MLOPS_SENSOR_INTERVAL_SECONDS": "2",
    }
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        Harness(home, pipelines, NAME, instance=instance).history("1976")
    (spec,) = load_specs(pipelines)
    yield {"spec": spec, "settings": Settings.from_env(env), "env": env, "home": home, "frame": frame}


def write_instance(dagster_home: Path, extra_runs: dict[str, Any]) -> None:
    """The instance config the product writes, with extra ``concurrency.runs`` settings."""
    config = yaml.safe_load(INSTANCE_CONFIG)
    config["concurrency"]["runs"].update(extra_runs)
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config))


def wait_for(what: str, condition: Callable[[], Any], *, within: float, loop: ClosedLoop | None = None) -> Any:
    deadline = time.monotonic() + within
    while not (value := condition()):
        if loop is not None:
            loop.check_daemon()
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:.0f}s")
        time.sleep(1)
    return value


def runs(instance: dg.DagsterInstance, job: str | None = None, **tags: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(job_name=job, tags={"mlops/model": NAME, **tags})))


def finished(instance: dg.DagsterInstance, trigger: str, count: int) -> list[dg.DagsterRun] | None:
    # The retrain job's runs: a drifted batch's drift report run carries the same trigger.
    found = runs(instance, Job.retrain(NAME), **{"mlops/trigger": trigger})
    done = [r for r in found if r.is_finished]
    return done if len(found) == count and len(done) == count else None


def drift_records(instance: dg.DagsterInstance) -> dict[str, dg.AssetCheckEvaluation]:
    """Record id and evaluation of each finished drift check, by batch (one each here)."""
    key = dg.AssetCheckKey(dg.AssetKey([NAME, "drift_report"]), "drift_within_tolerance")
    out = {}
    for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=100):
        if record.status.value != "PLANNED":
            batch = str(record.evaluation.metadata["batch"].value)
            assert batch not in out, f"batch {batch} was drift-checked twice"
            out[batch] = record
    return out


def sensor_ticks(instance: dg.DagsterInstance, sensor: str, *, after: float) -> int:
    (state,) = [s for s in instance.all_instigator_state() if s.name == sensor]
    return len([t for t in instance.get_ticks(state.instigator_origin_id, state.selector_id) if t.timestamp > after])


def decision(instance: dg.DagsterInstance, run_id: str) -> str:
    (record,) = [
        r
        for r in instance.fetch_materializations(dg.AssetKey([NAME, "promotion"]), limit=20).records
        if r.run_id == run_id
    ]
    return str(record.asset_materialization.metadata["decision"].value)


def delete_cursor(env: dict[str, str], sensor: str) -> None:
    dagster = Path(sys.executable).parent / "dagster"
    subprocess.run(
        [str(dagster), "sensor", "cursor", sensor, "--delete", "-m", "mlops_assets.definitions"],
        env=env,
        check=True,
        capture_output=True,
    )


@pytest.mark.timeout(1500)
def test_a_check_planned_first_and_finished_last_still_retrains_and_alerts_once(tmp_path: Path) -> None:
    """Batches 2010 and 2012 land together; 2010's scoring run is created first (its checks are
    planned first) but held in the queue until 2012 was scored, drift-retrained on and the
    daemon restarted. Both drifted: each is retrained on once and alerted once; a lost cursor
    repeats nothing."""
    # Holding 2010 in the queue, not slowing it, makes what the retrains train on deterministic.
    with (
        history(
            tmp_path, instance_config={"tag_concurrency_limits": [{"key": "mlops/batch", "value": "2010", "limit": 0}]}
        ) as h,
        http_sink() as sink,
    ):
        env = {**h["env"], "MLOPS_ALERT_WEBHOOK": sink.url}
        frame = h["frame"]
        loop = ClosedLoop(h["spec"], h["settings"], env, timeout=600)
        with loop:
            instance = loop.instance
            old = time.time() - 60
            loop.land("2010", frame[frame["year"] == 2010], mtime=old)
            loop.land("2012", frame[frame["year"] == 2012], mtime=old + 1)
            wait_for(
                "2012 scored and its retrain finished", lambda: finished(instance, "drift", 1), within=600, loop=loop
            )
            (held,) = runs(instance, **{"mlops/trigger": "landing", "mlops/batch": "2010"})
            assert instance.get_run_by_id(held.run_id).status == dg.DagsterRunStatus.QUEUED
            ticks_meanwhile = sensor_ticks(instance, f"{NAME}_drift_sensor", after=0)

            loop.stop()
            write_instance(Path(env["DAGSTER_HOME"]), {})
            loop.start()
            wait_for(
                "2010 scored and its retrain finished", lambda: finished(instance, "drift", 2), within=600, loop=loop
            )
            # Per batch: the drift check, and the label's learned range (2010 and 2012 incomes
            # outgrow the 1970s'), a warning.
            wait_for("four alerts", lambda: len(sink.delivered()) >= 4, within=120, loop=loop)

            # Lost cursors: the landing sensor asks again for both scoring runs (same run keys,
            # which Dagster refuses), the drift sensor finds both failures covered.
            loop.stop()
            for sensor in (f"{NAME}_landing_sensor", f"{NAME}_drift_sensor"):
                delete_cursor(env, sensor)
            restarted = time.time()
            loop.start()
            for sensor in (f"{NAME}_landing_sensor", f"{NAME}_drift_sensor", f"{NAME}_check_alert_sensor"):
                wait_for(
                    f"3 ticks of {sensor}",
                    lambda s=sensor: sensor_ticks(instance, s, after=restarted) >= 3,
                    within=180,
                    loop=loop,
                )
            records = drift_records(instance)
            all_runs = runs(instance)
            landing = Counter(r.tags["mlops/batch"] for r in all_runs if r.tags["mlops/trigger"] == "landing")
            retrains = [r for r in all_runs if r.job_name == Job.retrain(NAME)]
            reports = [r for r in all_runs if r.job_name == Job.drift_report(NAME)]
            decisions = {
                r.tags["mlops/batch"]: (r.status, r.tags["mlops/check_records"], decision(instance, r.run_id))
                for r in retrains
            }
            windows = {
                r.tags["mlops/batch"]: r.run_config["ops"][f"{NAME}__training_dataset"]["config"]["until"]
                for r in retrains
            }

    # The scenario happened: 2010's check was planned first and finished last, after drift-sensor
    # ticks that had already acted on 2012's (a highest-record-id cursor would have skipped it).
    assert records["2010"].id < records["2012"].id
    assert records["2010"].event.timestamp > records["2012"].event.timestamp
    assert ticks_meanwhile >= 3
    assert landing == Counter({"2010": 1, "2012": 1})
    assert len(all_runs) == 6, [(r.job_name, r.tags.get("mlops/trigger")) for r in all_runs]
    # Each drifted batch's Evidently report rendered once, in a run of its own.
    assert Counter(r.tags["mlops/batch"] for r in reports) == Counter({"2010": 1, "2012": 1})
    assert len(retrains) == 2
    assert Counter(r.tags["mlops/batch"] for r in retrains) == Counter({"2010": 1, "2012": 1})
    assert decisions == {
        "2012": (dg.DagsterRunStatus.SUCCESS, str(records["2012"].id), "promoted"),
        "2010": (dg.DagsterRunStatus.SUCCESS, str(records["2010"].id), "promoted"),
    }
    # 2010 finished after the window had reached 2012: its retrain keeps the window at 2012.
    assert windows == {"2012": "2012", "2010": "2012"}
    delivered = sink.delivered()
    assert [(b["check"], b["batch"], b["record_id"]) for b in delivered if b["check"] == "drift_within_tolerance"] == [
        ("drift_within_tolerance", "2012", records["2012"].id),
        ("drift_within_tolerance", "2010", records["2010"].id),
    ]
    others = Counter((b["check"], b["batch"]) for b in delivered if b["check"] != "drift_within_tolerance")
    assert others == Counter({("realrinc_in_range", "2012"): 1, ("realrinc_in_range", "2010"): 1})
    assert len(sink.posts()) == 4
    with dg.DagsterInstance.from_config(str(h["home"] / "dagster")) as instance:
        window = instance.get_latest_materialization_event(dg.AssetKey([NAME, Asset.TRAINING_DATASET]))
    fingerprint = window.asset_materialization.metadata[Meta.TRAINING_FINGERPRINT].value
    manifest_file = f"{training_file(fingerprint, TrainingFile.MANIFEST)}.json"
    manifest = json.loads((h["home"] / "lake" / NAME / Asset.TRAINING_DATASET / manifest_file).read_text())
    assert manifest["batches"] == ["1974", "1975", "1976", "2010", "2012"]


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records:
        entry = record.event_log_entry
        if entry.message.startswith("Started process for run"):
            return int(str(entry.dagster_event.engine_event_data.metadata["pid"].value))
    return None


@pytest.mark.timeout(1500)
def test_a_retrain_killed_with_its_daemon_is_ended_and_the_next_drift_retrains(tmp_path: Path) -> None:
    """SIGKILL to the daemon's whole process group (daemon, code server, run worker) in the middle
    of a retrain leaves the run STARTED with nobody to end it. The next daemon's run watchdog
    ends it within a few ticks, and the next drifted batch is retrained on."""
    with history(tmp_path) as h:
        env, frame = h["env"], h["frame"]
        loop = ClosedLoop(h["spec"], h["settings"], env, timeout=600)
        with loop:
            instance = loop.instance
            loop.land("2010", frame[frame["year"] == 2010])
            retrain = wait_for(
                "a drift retrain with a run worker",
                lambda: next(
                    (
                        r
                        for r in runs(instance, Job.retrain(NAME), **{"mlops/trigger": "drift"})
                        if r.status == dg.DagsterRunStatus.STARTED and worker_pid(instance, r.run_id)
                    ),
                    None,
                ),
                within=600,
                loop=loop,
            )
            pid = worker_pid(instance, retrain.run_id)
            loop.kill()
            time.sleep(3)
            assert instance.get_run_by_id(retrain.run_id).status == dg.DagsterRunStatus.STARTED
            restarted = time.monotonic()
            loop.start()
            ended = wait_for(
                "the dead retrain ended",
                lambda: (r := instance.get_run_by_id(retrain.run_id)).is_finished and r,
                within=120,
                loop=loop,
            )
            ended_after = time.monotonic() - restarted
            row = loop.land_and_follow("2012", frame[frame["year"] == 2012])
            retrains = runs(instance, Job.retrain(NAME), **{"mlops/trigger": "drift"})
            (latest,) = [r for r in retrains if r.tags["mlops/batch"] == "2012"]
            registered = instance.fetch_materializations(dg.AssetKey([NAME, "model"]), limit=1).records[0]
            assert registered.run_id == latest.run_id
            version = str(registered.asset_materialization.metadata["version"].value)
            failure = [e.message for e in instance.all_logs(retrain.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)]

    print(f"\ndead retrain ended {ended_after:.0f}s after the daemon restarted")
    assert ended.status == dg.DagsterRunStatus.FAILURE
    assert any(f"run worker (pid {pid}" in m and "gss_slice_run_watchdog_sensor" in m for m in failure), failure
    assert ended_after < 60
    assert row["scored"] and row["retrain"] == "drift" and row["decision"] == "promoted", row
    assert Counter((r.tags["mlops/batch"], r.status) for r in retrains) == Counter(
        {("2010", dg.DagsterRunStatus.FAILURE): 1, ("2012", dg.DagsterRunStatus.SUCCESS): 1}
    )
    assert row["champion"] == version
