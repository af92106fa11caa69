"""The code location: what it loads, what it imports, and a reviewed snapshot of its graph.

Regenerate the snapshots after an intended lineage change with
``UPDATE_SNAPSHOTS=1 pytest tests/test_definitions.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.definitions import build_definitions
from resources.settings import Settings
from tests.conftest import WriteSpec

HEAVY = ("torch", "mlflow", "evidently", "great_expectations", "sklearn", "matplotlib")
SNAPSHOTS = Path(__file__).parent / "snapshots"


def test_import_loads_no_ml_library() -> None:
    probe = f"import sys, mlops_assets.definitions;print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_building_definitions_loads_no_ml_library(tmp_path: Path) -> None:
    probe = (
        "import sys; from mlops_assets.definitions import build_definitions;"
        "from resources.settings import Settings;"
        f"build_definitions(Settings.from_env({{'MLOPS_HOME': {str(tmp_path)!r}}}));"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def graph_snapshot(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(d.to_user_string() for d in node.parent_keys),
            "partitioned": node.partitions_def is not None,
            "checks": sorted(c.name for c in node.check_keys),
            "kinds": sorted(node.kinds),
            "op_tags": dict(node.assets_def.op.tags),
        }
    repo = defs.get_repository_def()
    snapshot = {
        "assets": assets,
        "jobs": {
            j.name: sorted(j.tags.items())
            for j in sorted(repo.get_all_jobs(), key=lambda j: j.name)
            if not j.name.startswith("__")
        },
        "sensors": sorted(s.name for s in repo.sensor_defs),
        "schedules": sorted(s.name for s in repo.schedule_defs),
        "executor": defs.executor.name if isinstance(defs.executor, dg.ExecutorDefinition) else str(defs.executor),
    }
    return json.loads(json.dumps(snapshot))


@pytest.mark.parametrize("env", ["local", "prod"])
def test_graph_matches_snapshot(env: str, tmp_path: Path) -> None:
    defs = build_definitions(Settings.from_env({"MLOPS_ENV": env, "MLOPS_HOME": str(tmp_path)}))
    defs.resolve_all_job_defs()  # fails on any invalid definition
    snapshot = graph_snapshot(defs)
    path = SNAPSHOTS / f"definitions_{env}.json"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")
    assert snapshot == json.loads(path.read_text())


def test_every_asset_has_a_description(tmp_path: Path) -> None:
    graph = build_definitions(Settings.from_env({"MLOPS_HOME": str(tmp_path)})).resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        description = graph.get(key).description or ""
        assert len(description) > 40, key


def test_pipelines_folder_merges_one_pipeline_per_spec(gss_slice: Path, write_spec: WriteSpec, tmp_path: Path) -> None:
    from tests.conftest import gss_spec

    write_spec(gss_spec(gss_slice), "a.yaml")
    write_spec({**gss_spec(gss_slice), "name": "gss_other"}, "b.yaml")
    defs = build_definitions(
        Settings.from_env({"MLOPS_HOME": str(tmp_path), "MLOPS_PIPELINES": str(tmp_path / "pipelines")})
    )
    groups = {k.path[0] for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert groups == {"gss_slice", "gss_other"}


def test_the_landing_sensor_ticks_at_least_every_five_seconds_whatever_the_interval(tmp_path: Path) -> None:
    from mlops_assets.contract import Sensor

    defs = build_definitions(Settings.from_env({"MLOPS_HOME": str(tmp_path)}))  # the default 30 s interval
    intervals = {s.name: s.minimum_interval_seconds for s in defs.sensors}
    assert intervals.pop(Sensor.landing("gss_wages")) == 5
    assert set(intervals.values()) == {30}
    fast = build_definitions(Settings.from_env({"MLOPS_HOME": str(tmp_path), "MLOPS_SENSOR_INTERVAL_SECONDS": "2"}))
    assert {s.minimum_interval_seconds for s in fast.sensors} == {2}
