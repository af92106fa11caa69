"""Hostile and broken landed files, through the real landing sensor and score job: each bad
file ends in a clear error naming the file or column (or an acceptance the README's "Bad input"
section documents), the one good file is scored, what was scored before and the champion stay as
they were, and nothing is written outside MLOPS_HOME."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_assets.contract import TAG_LANDING_FILE, Asset, Job, LakeFolder, Meta, raw_version_file
from resources.registry import CHAMPION
from tests.assets.pipeline_harness import Harness
from tests.conftest import gss, write_gss_pipeline
from tests.sensors.http_sink import http_sink

NAME = "gss_slice"
SCRIPT = "</script><script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


def rows(year: int) -> pd.DataFrame:
    frame = gss()
    return frame[frame["year"] == year].drop(columns=["year"]).reset_index(drop=True)


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue().to_pybytes()


def corpus() -> dict[str, bytes]:
    """File name -> bytes of each bad regular file (base rows: GSS 2014, no batch column)."""
    base = rows(2014)
    hostile = base.copy()
    hostile.loc[:2, "occrecode"] = SCRIPT
    hostile.loc[3:4, "occrecode"] = IMG
    huge = base.copy()
    huge.loc[0, "occrecode"] = "x" * (2 << 20)
    n = 100_000
    bomb = pa.table(
        {
            "occrecode": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype="int32")), pa.array(["x" * 10_000])),
            "age": np.full(n, 30.0),
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(bomb, sink, compression="zstd")
    good = parquet_bytes(base)
    return {
        "wrong-dtype.parquet": parquet_bytes(base.assign(age="forty-" + base["age"].astype(str))),
        "missing-column.parquet": parquet_bytes(base.drop(columns=["prestg10"])),
        "empty.parquet": b"",
        "empty-csv.csv": b"",
        "truncated.parquet": good[: len(good) // 2],
        "not-parquet.parquet": b"<html><body>this is not a Parquet file</body></html>\n" * 20,
        "nan-storm.parquet": parquet_bytes(base.assign(age=np.nan, prestg10=np.nan)),
        "inf-storm.parquet": parquet_bytes(base.assign(prestg10=np.inf, age=-np.inf)),
        "unseen-categories.parquet": parquet_bytes(base.assign(occrecode="Astronaut", wrkstat="Orbiting")),
        "extra-column.parquet": parquet_bytes(base.assign(notes="an extra column")),
        "huge-string.parquet": parquet_bytes(huge),
        "dictionary-bomb.parquet": sink.getvalue().to_pybytes(),
        "script-tag.parquet": parquet_bytes(hostile),
        "all-null-label.parquet": parquet_bytes(base.assign(realrinc=np.nan)),
    }


def tree(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` outside ``skip``: path -> (size, mtime in ns)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        if Path(folder) == skip:
            dirs[:] = []
            continue
        for f in files:
            info = os.lstat(os.path.join(folder, f))
            out[os.path.join(folder, f)] = (info.st_size, info.st_mtime_ns)
    return out


def score(h: Harness, batch: str, tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
    job = h.defs.resolve_job_def(Job.score_batch(NAME))
    return job.execute_in_process(instance=h.instance, partition_key=batch, tags=tags, raise_on_error=False)


# Each bad regular file: the step it fails in and what the error says besides the file's path
# (a read or a limit) or the batch and column (a validation check).
FAILS = {
    "2010.parquet": ("validated_batch", "column 'age': age_not_null failed"),
    "empty.parquet": ("raw_batch", "cannot be read as parquet: Parquet file size is 0 bytes"),
    "empty-csv.csv": ("raw_batch", "cannot be read as csv"),
    "truncated.parquet": ("raw_batch", "cannot be read as parquet: Parquet magic bytes not found"),
    "not-parquet.parquet": ("raw_batch", "cannot be read as parquet: Parquet magic bytes not found"),
    "huge-string.parquet": ("raw_batch", "largest cell in bytes 2,097,152 is over limits.max_cell_bytes"),
    "dictionary-bomb.parquet": ("raw_batch", "1,001,600,000 is over limits.max_decoded_bytes"),
    "wrong-dtype.parquet": ("validated_batch", "column 'age': age_numeric failed: 2538 of 2538 rows"),
    "missing-column.parquet": ("validated_batch", "column 'prestg10': prestg10_present failed"),
    "nan-storm.parquet": ("validated_batch", "column 'age': age_not_null failed: 2538 of 2538 rows"),
    "inf-storm.parquet": ("validated_batch", "column 'prestg10': prestg10_in_range failed: 2538 of 2538 rows"),
    "unseen-categories.parquet": ("validated_batch", "column 'occrecode': occrecode_known_categories failed"),
}
# Scored as documented in the README's "Bad input": an extra column is ignored, a few rows of
# unseen (hostile) categories are within validation.unseen_category_tolerance, a batch
# without any label is scored without realized performance.
ACCEPTED = {"2012.parquet", "extra-column.parquet", "script-tag.parquet", "all-null-label.parquet"}
# Refused by the landing sensor (never a run), each alerted once: name -> what the reason says.
REFUSED = {
    "symlink.parquet": "it is a symbolic link, not a regular file",
    "b'bad-\\xff.parquet'": "the file name is not valid UTF-8",
    "a..\\..\\evil.parquet": "may hold only ASCII letters, digits",
}


@pytest.mark.timeout(600)
def test_a_corpus_of_bad_files_each_fails_clearly_and_the_good_one_is_scored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Temporary files of the product and its libraries go to a folder watched with the rest.
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(systmp))
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    pipelines = write_gss_pipeline(tmp_path, [1974, 1975, 1976])
    home = tmp_path / "home"  # MLOPS_HOME: the lake, MLflow, the landing folder, Dagster's storage
    secret = tmp_path / "secret.parquet"  # what the symlink points at
    secret.write_bytes(parquet_bytes(rows(2016)))
    outside = tree(tmp_path, home)

    with http_sink() as alerts_sink:
        monkeypatch.setenv("MLOPS_ALERT_WEBHOOK", alerts_sink.url)  # what the sensor's resources read
        (home / "dagster").mkdir(parents=True)
        instance = dg.DagsterInstance.ephemeral(tempdir=str(home / "dagster"))
        h = Harness(home, pipelines, NAME, instance=instance, env={"MLOPS_ALERT_WEBHOOK": alerts_sink.url})
        h.landing_cursor = None
        h.history("1976")
        registry, lake = h.resources["registry"], h.resources["lake"]
        champion = registry.by_alias(NAME, CHAMPION).version

        # An earlier output: 2010 landed good and scored.
        landing = h.resources["landing"].folder(NAME)
        landing.mkdir(parents=True, exist_ok=True)
        rows(2010).to_parquet(landing / "2010.parquet", index=False)
        (first,) = h.landing_tick().run_requests
        assert score(h, "2010", first.tags).success
        predictions_2010 = lake.read_frame(NAME, Asset.PREDICTIONS, "2010")
        features_2010 = lake.read_frame(NAME, Asset.FEATURES, "2010")
        first_version = h.metadata(Asset.RAW_BATCH, "2010")[Meta.CONTENT_VERSION]

        # The corpus, 2010 landed again turned bad, and one good file, all in one tick.
        landed = corpus()
        for name, content in landed.items():
            (landing / name).write_bytes(content)
        (landing / "symlink.parquet").symlink_to(secret)
        with open(os.path.join(os.fsencode(landing), b"bad-\xff.parquet"), "wb") as f:
            f.write(parquet_bytes(rows(2014)))
        (landing / "a..\\..\\evil.parquet").write_bytes(parquet_bytes(rows(2014)))
        (landing / "..\\..\\evil.parquet").write_bytes(parquet_bytes(rows(2014)))  # hidden: a dot first
        # 2010 landed again, readable but bad: a new content version that fails validation.
        (landing / "2010.parquet").write_bytes(parquet_bytes(rows(2010).assign(age=np.nan)))
        rows(2012).to_parquet(landing / "2012.parquet", index=False)
        landed_paths = sorted(str(p) for p in landing.iterdir())

        requests = h.landing_tick().run_requests
        files = [Path(r.tags[TAG_LANDING_FILE]).name for r in requests]
        assert sorted(files) == sorted({*FAILS, *ACCEPTED}), "one run per regular file, none for the refused"
        results = {Path(r.tags[TAG_LANDING_FILE]).name: score(h, r.partition_key, r.tags) for r in requests}
        batches = {Path(r.tags[TAG_LANDING_FILE]).name: r.partition_key for r in requests}
        again = h.landing_tick()
        # A partition key added from outside (the UI, GraphQL) that climbs out of the lake.
        h.instance.add_dynamic_partitions(f"{NAME}_batches", ["../../evil"])
        traversal = score(h, "../../evil")
        alerts = alerts_sink.delivered()

    for name, (step, says) in FAILS.items():
        result = results[name]
        chain = h.failure_chain(result)
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        assert failed == [f"{NAME}__{step}"], (name, failed)
        if step == "raw_batch":
            assert f"landing file {landing / name}: " in chain, (name, chain[:500])
        else:
            assert f"batch {batches[name]}, " in chain, (name, chain[:500])
        assert says in chain, (name, chain[:500])
        if name != "2010.parquet":
            assert not lake.exists(NAME, Asset.PREDICTIONS, batches[name]), name
    for name in ACCEPTED:
        assert results[name].success, (name, h.failure_chain(results[name])[:500])
        scored = lake.read_frame(NAME, Asset.PREDICTIONS, batches[name])
        assert len(scored) == len(pd.read_parquet(landing / name)), name
    assert not lake.exists(NAME, LakeFolder.PRODUCTION_EVALUATION, "all-null-label", "json"), "no label, no evaluation"
    assert lake.exists(NAME, LakeFolder.PRODUCTION_EVALUATION, "2012", "json")

    # The hostile category values (a few rows: within validation.unseen_category_tolerance) are
    # in the drift HTML report as text, never as markup. (Markdown metadata: tests/test_untrusted.py.)
    # The HTML is rendered by the drift report job (what the drift report sensor launches).
    rendered = h.defs.resolve_job_def(Job.drift_report(NAME)).execute_in_process(
        instance=h.instance, partition_key="script-tag", raise_on_error=False
    )
    assert rendered.success, h.failure_chain(rendered)[:500]
    report = Path(lake.uri(NAME, Asset.DRIFT_REPORT, "script-tag", "html")).read_text()
    assert "alert(1)" in report and SCRIPT not in report and IMG not in report

    # Refused entries: no run, one alert each, named in the next tick's skip message; the dotted
    # name is a hidden file (a writer's staging file) and is left alone.
    assert sorted(a["file"] for a in alerts) == sorted(REFUSED), alerts
    for a in alerts:
        assert REFUSED[a["file"]] in a["reason"], a
    assert again.run_requests == [] and again.skip_reason is not None
    for name in REFUSED:
        assert name in again.skip_reason.skip_message, again.skip_reason
    # Only the regular files became batches (and the key this test added from outside).
    assert sorted(h.batches()) == sorted({"1974", "1975", "1976", "../../evil", *batches.values()})

    assert not traversal.success
    assert "partition key '../../evil' is not a valid batch name" in h.failure_chain(traversal)

    # Nothing lost, nothing changed: every landed file is still there, 2010's predictions and
    # the champion are the earlier ones, and nothing was written outside MLOPS_HOME.
    assert sorted(str(p) for p in landing.iterdir()) == landed_paths
    assert lake.read_frame(NAME, Asset.PREDICTIONS, "2010").equals(predictions_2010)
    assert lake.read_frame(NAME, Asset.FEATURES, "2010").equals(features_2010)
    assert h.metadata(Asset.RAW_BATCH, "2010")[Meta.CONTENT_VERSION] != first_version, "the bad one is a new version"
    kept = lake.read_frame(NAME, Asset.RAW_BATCH, raw_version_file("2010", first_version))
    assert len(kept) == len(rows(2010)) and kept["age"].notna().any(), "the good raw version is kept"
    predictions_events = h.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=h.key(Asset.PREDICTIONS), asset_partitions=["2010"]), limit=10
    ).records
    assert len(predictions_events) == 1
    assert registry.by_alias(NAME, CHAMPION).version == champion
    assert tree(tmp_path, home) == outside
