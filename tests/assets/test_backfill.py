"""Backfills: many batches in one run of ``<model>_backfill_job``, a step per batch, launched the
way the demo and a terminal user launch it (``dagster job execute`` in its own process, on a
DAGSTER_HOME instance), with a bad batch among them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.assets.backfill import BATCH_ASSETS, INGESTION, backfill_step, plan_op
from mlops_assets.contract import DRIFT_CHECK, Asset, Job, Meta, partitions_name
from mlops_assets.demo import ensure_instance
from tests.assets.pipeline_harness import Harness
from tests.conftest import gss, write_gss_pipeline

NAME = "gss_slice"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    root = tmp_path_factory.mktemp("backfill")
    home = root / "home"
    ensure_instance(home / "dagster")
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    h = Harness(home, write_gss_pipeline(root, [1974, 1975, 1976, 2010, 2012]), NAME, instance=instance)
    assert h.materialize([Asset.SOURCE_BATCHES, Asset.VALIDATION_SUITE]).success
    yield h
    instance.dispose()


def cli_env(h: Harness) -> dict[str, str]:
    return {
        **os.environ,
        "MLOPS_HOME": str(h.settings.home),
        "MLOPS_PIPELINES": str(h.pipelines),
        "DAGSTER_HOME": str(h.settings.home / "dagster"),
    }


def backfill(h: Harness, batches: list[str], assets: list[str]) -> dg.DagsterRun:
    """The backfill job through ``dagster job execute``, as a terminal user runs it; its run."""
    before = {r.run_id for r in h.instance.get_runs()}
    config = h.settings.home / "backfill.yaml"
    config.write_text(json.dumps({"ops": {plan_op(NAME): {"config": {"batches": batches, "assets": assets}}}}))
    command = [sys.executable, "-m", "dagster", "job", "execute", "-m", "mlops_assets.definitions"]
    command += ["-j", Job.backfill(NAME), "-c", str(config)]
    subprocess.run(command, cwd=REPO, env=cli_env(h), capture_output=True, text=True, timeout=300, check=False)
    return only_new_run(h, before)


def mlops_backfill(h: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mlops_assets.cli", "backfill", NAME, *args]
    return subprocess.run(command, cwd=REPO, env=cli_env(h), capture_output=True, text=True, timeout=300, check=False)


def only_new_run(h: Harness, before: set[str]) -> dg.DagsterRun:
    new = [r for r in h.instance.get_runs() if r.run_id not in before]
    assert len(new) == 1, f"{len(new)} runs for one backfill"
    return new[0]


def events(h: Harness, run: dg.DagsterRun, kind: dg.DagsterEventType) -> list[dg.EventLogEntry]:
    return [r.event_log_entry for r in h.instance.get_records_for_run(run.run_id, of_type=kind, limit=10_000).records]


def materialized(h: Harness, run: dg.DagsterRun) -> Counter[tuple[str, str | None]]:
    """(asset, partition) -> how many materializations the run recorded."""
    found = [e.dagster_event.event_specific_data.materialization for e in events(h, run, MATERIALIZATION)]
    return Counter((m.asset_key.path[-1], m.partition) for m in found)


def check_evaluations(h: Harness, run: dg.DagsterRun) -> list[dg.AssetCheckEvaluation]:
    return [e.dagster_event.event_specific_data for e in events(h, run, dg.DagsterEventType.ASSET_CHECK_EVALUATION)]


def step_failures(h: Harness, run: dg.DagsterRun) -> dict[str, str]:
    return {
        e.step_key: e.dagster_event.step_failure_data.user_failure_data.description
        for e in events(h, run, dg.DagsterEventType.STEP_FAILURE)
    }


MATERIALIZATION = dg.DagsterEventType.ASSET_MATERIALIZATION


def test_a_bad_batch_fails_only_its_own_step_and_keeps_its_good_outputs(harness: Harness) -> None:
    # 1975 has a good version first, through its own asset run.
    assert harness.materialize(list(INGESTION), "1975").success
    lake = harness.resources["lake"]
    kept = {a: lake.read_bytes(NAME, a, "1975", "parquet") for a in (Asset.VALIDATED_BATCH, Asset.FEATURES)}
    # Then a bad landing of 1975: ages as text fails a blocking expectation.
    frame = gss()
    bad = frame[frame["year"] == 1975].assign(age=lambda f: f["age"].astype(str))
    folder = harness.resources["landing"].folder(NAME)
    folder.mkdir(parents=True, exist_ok=True)
    bad.to_parquet(folder / "1975.parquet", index=False)
    checks_per_batch = len(harness.defs.get_assets_def(harness.key(Asset.VALIDATED_BATCH)).check_specs)

    run = backfill(harness, ["1974", "1975", "1976"], list(INGESTION))

    assert run.status == dg.DagsterRunStatus.FAILURE
    counts = materialized(harness, run)
    for batch in ("1974", "1976"):
        assert [counts[(a, batch)] for a in INGESTION] == [1, 1, 1], (batch, counts)
    assert counts[(Asset.RAW_BATCH, "1975")] == 1  # the bad version is stored, beside the good one
    assert counts[(Asset.VALIDATED_BATCH, "1975")] == counts[(Asset.FEATURES, "1975")] == 0
    # Every check result is recorded against its batch's partition, once.
    per_partition = Counter(
        e.partition for e in check_evaluations(harness, run) if e.asset_key == harness.key(Asset.VALIDATED_BATCH)
    )
    assert per_partition == {"1974": checks_per_batch, "1975": checks_per_batch, "1976": checks_per_batch}
    failed = [e.check_name for e in check_evaluations(harness, run) if not e.passed and e.partition == "1975"]
    assert "age_numeric" in failed
    # Only 1975's step failed, naming the batch, the asset and the expectation.
    failures = step_failures(harness, run)
    assert list(failures) == [backfill_step(NAME, 1, "1975")]
    message = failures[backfill_step(NAME, 1, "1975")]
    assert "batch 1975" in message and "validated_batch" in message and "age_numeric" in message
    assert "features: skipped: validated_batch failed" in message
    # Nothing of 1975 downstream changed; the partitions' status follows the events.
    assert {a: lake.read_bytes(NAME, a, "1975", "parquet") for a in kept} == kept
    assert harness.instance.get_materialized_partitions(harness.key(Asset.FEATURES)) >= {"1974", "1975", "1976"}


def test_mlops_backfill_names_a_batch_that_is_not_registered(harness: Harness) -> None:
    before = {r.run_id for r in harness.instance.get_runs()}
    done = mlops_backfill(harness, "--batch", "1974", "--batch", "1999")
    assert done.returncode == 1
    assert "--batch ['1999'] are not registered batches of gss_slice" in done.stdout
    assert {r.run_id for r in harness.instance.get_runs()} == before


def test_a_backfill_records_what_an_asset_run_of_the_batch_records(harness: Harness) -> None:
    before = {r.run_id for r in harness.instance.get_runs()}
    done = mlops_backfill(harness, "--batch", "2012")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "raw_batch,validated_batch,features [2012]" in done.stdout and "1 of 1 batches ok" in done.stdout
    run = only_new_run(harness, before)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    in_backfill = {a: harness.metadata(a, "2012") for a in INGESTION}

    assert harness.materialize(list(INGESTION), "2012").success
    in_asset_run = {a: harness.metadata(a, "2012") for a in INGESTION}
    # The asset run landed the same content a second time: it names the first as the previous.
    assert in_asset_run[Asset.RAW_BATCH].pop(Meta.PREVIOUS_CONTENT_VERSION) == in_backfill[Asset.RAW_BATCH].pop(
        Meta.CONTENT_VERSION
    )
    assert in_backfill[Asset.RAW_BATCH].pop(Meta.PREVIOUS_CONTENT_VERSION) == ""
    in_asset_run[Asset.RAW_BATCH].pop(Meta.CONTENT_VERSION)
    assert in_backfill == in_asset_run
    # The data version an asset run records (features: the frame's fingerprint) is recorded too.
    record = harness.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=harness.key(Asset.FEATURES), asset_partitions=["2012"]), limit=2
    ).records
    versions = [r.asset_materialization.tags.get("dagster/data_version") for r in record]
    assert versions[0] == versions[1] == in_asset_run[Asset.FEATURES][Meta.FINGERPRINT]


def test_a_backfill_scores_and_drift_checks_each_batch_against_its_partition(harness: Harness) -> None:
    # A bad landing of 1975 (another test's) would rightly keep any version trained on it from
    # being promoted: 1975 from the source again, validated, first.
    (harness.resources["landing"].folder(NAME) / "1975.parquet").unlink(missing_ok=True)
    assert harness.materialize(list(INGESTION), "1975").success
    history = harness.materialize([Asset.TRAINING_DATASET, Asset.MODEL, Asset.EVALUATION, Asset.PROMOTION])
    assert history.success, harness.failure_message(history)
    assert "2010" in harness.instance.get_dynamic_partitions(partitions_name(NAME))

    run = backfill(harness, ["2010", "2012"], list(BATCH_ASSETS))

    assert run.status == dg.DagsterRunStatus.SUCCESS, step_failures(harness, run)
    counts = materialized(harness, run)
    assert counts == Counter({(a, b): 1 for a in BATCH_ASSETS for b in ("2010", "2012")})
    drift = [e for e in check_evaluations(harness, run) if e.check_name == DRIFT_CHECK]
    assert sorted(e.partition for e in drift) == ["2010", "2012"]
    assert {e.partition: e.metadata[Meta.BATCH].value for e in drift} == {"2010": "2010", "2012": "2012"}
