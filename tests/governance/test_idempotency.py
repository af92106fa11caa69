"""A training run killed between creating the registry version and moving the alias leaves a
state that a rerun completes: the same version, no duplicate, no half-finished run or alias."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from mlops_assets.contract import Asset, Meta
from resources.registry import CHALLENGER, CHAMPION, TAG_FINGERPRINT, TAG_REGISTERED_VERSION
from tests.governance.conftest import NAME, Governed

REPO = Path(__file__).resolve().parents[2]


def test_a_crash_after_registering_is_completed_by_the_rerun(governed: Governed) -> None:
    registry, client = governed.registry, governed.registry.client()
    # Another seed: new training fingerprint, so the run must register a new version.
    variant = governed.variant(training={"initial_until": 1976, "model": "sklearn_logreg", "seed": 8})
    pipelines = variant.settings.pipelines
    before = {m.version for m in registry.versions(NAME)}
    champion, challenger = governed.champion(), registry.by_alias(NAME, CHALLENGER)

    # The process dies right after the version is created, when it would tag its run with it.
    script = textwrap.dedent(f"""
        import dagster as dg
        from pathlib import Path
        from tests.assets.pipeline_harness import Harness
        from tests.governance.faults import Fault, FaultyRegistry, faulty_copy, kill
        h = Harness(Path({str(governed.home)!r}), Path({pipelines!r}), {NAME!r})
        h.instance = dg.DagsterInstance.from_config({str(governed.home / "dagster")!r})
        FaultyRegistry.FAULTS.append(
            Fault("set_tag", kill, when=lambda run_id, key, value: key == {str(TAG_REGISTERED_VERSION)!r})
        )
        h.resources["registry"] = faulty_copy(h.resources["registry"])
        h.materialize(["training_dataset", "model"])
        print("survived")
    """)
    crashed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert crashed.returncode == -9, crashed.stdout[-2000:] + crashed.stderr[-2000:]
    assert "survived" not in crashed.stdout

    (orphan,) = [m for m in registry.versions(NAME) if m.version not in before]
    # The crashed run materialized the window before it died in the model step.
    fingerprint = governed.harness.metadata(Asset.TRAINING_DATASET)[Meta.TRAINING_FINGERPRINT]
    assert orphan.tags[TAG_FINGERPRINT] == fingerprint
    run = client.get_run(orphan.run_id)
    assert run.info.status == "RUNNING" and TAG_REGISTERED_VERSION not in run.data.tags
    assert registry.by_alias(NAME, CHALLENGER) == challenger, "the crash happened before the alias moved"
    assert governed.champion() == champion

    rerun = variant.materialize(["training_dataset", "model"])
    assert rerun.success, variant.failure_message(rerun)
    meta = variant.metadata("model")
    assert (meta["version"], meta["reused_existing_version"]) == (orphan.version, True)
    assert {m.version for m in registry.versions(NAME)} == before | {orphan.version}, "no duplicate version"
    run = client.get_run(orphan.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[TAG_REGISTERED_VERSION] == orphan.version
    assert registry.by_alias(NAME, CHALLENGER).version == orphan.version
    assert registry.by_alias(NAME, CHAMPION).version == champion

    again = variant.materialize(["training_dataset", "model"])
    assert again.success and variant.metadata("model")["version"] == orphan.version
    assert len(registry.versions(NAME)) == len(before) + 1
