"""The contract holds: every name a module reads is one that another module writes.

A scan of the packages finds where each ``contract`` name is written (a metadata or record key, a
lake folder written to, an artifact logged) and where it is read; a real run of the whole
lifecycle then shows that every metadata key some module reads was recorded by an asset or a
check. Renaming one side of a name, or reading a key nobody writes, fails here rather than
silently in ``mlops explain``, a sensor or the demo.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.contract import Artifact, Asset, Job, LakeFolder, Meta, names, op_name
from tests.assets.pipeline_harness import Harness
from tests.conftest import write_gss_pipeline

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mlops_assets", "sensors", "resources")
NAME = "gss_slice"
LAKE_WRITES = {"write_bytes", "write_frame", "write_json"}
LAKE_READS = {"read_bytes", "read_frame", "read_json", "exists"}
ARTIFACT_WRITES = {"log_run_text"}
METADATA_NAMES = {"meta", "metadata"}

Sites = dict[str, list[str]]


def _sources() -> list[tuple[str, ast.Module]]:
    files = sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))
    return [(str(p.relative_to(REPO)), ast.parse(p.read_text(), filename=str(p))) for p in files]


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _constant_of(node: ast.AST, group: str) -> str | None:
    """``X`` when ``node`` is ``group.X`` or ``contract.group.X``."""
    if not isinstance(node, ast.Attribute):
        return None
    owner = node.value
    if isinstance(owner, ast.Name) and owner.id == group:
        return node.attr
    if isinstance(owner, ast.Attribute) and owner.attr == group:
        return node.attr
    return None


def _call_of(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.Call | None:
    """The call ``node`` is an argument of (through an ``artifact_path(...)`` wrapper)."""
    parent = parents.get(node)
    if isinstance(parent, ast.Call) and node in parent.args:
        if isinstance(parent.func, ast.Name) and parent.func.id == "artifact_path":
            return _call_of(parent, parents)
        return parent
    return None


def _method(call: ast.Call | None) -> str | None:
    return call.func.attr if call is not None and isinstance(call.func, ast.Attribute) else None


def uses(group: str, *, writes: set[str] | None = None, reads: set[str] | None = None) -> tuple[Sites, Sites]:
    """Where each constant of ``group`` is written and where it is read, as ``file:line`` sites.

    A constant is written where it is a key of a dict literal or an assigned subscript, or an
    argument of a method in ``writes``; it is read everywhere else, or, when ``reads`` is given,
    only as an argument of a method in ``reads``.
    """
    written: Sites = defaultdict(list)
    read: Sites = defaultdict(list)
    for path, tree in _sources():
        parents = _parents(tree)
        for node in ast.walk(tree):
            constant = _constant_of(node, group)
            if constant is None or constant not in names(globals()[group]):
                continue
            site = f"{path}:{node.lineno}"
            parent = parents.get(node)
            method = _method(_call_of(node, parents))
            if (
                (isinstance(parent, ast.Dict) and node in parent.keys)
                or (isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store))
                or (writes is not None and method in writes)
            ):
                written[constant].append(site)
            elif reads is None or method in reads:
                read[constant].append(site)
    return written, read


def test_every_metadata_key_read_is_written_by_a_producer() -> None:
    written, read = uses("Meta")
    assert read, "the scan found no read of a Meta key at all"
    unwritten = {key: sites for key, sites in read.items() if key not in written}
    assert not unwritten, f"Meta keys read but never written (key -> where read): {unwritten}"


def test_every_lake_folder_read_is_written() -> None:
    for group in ("Asset", "LakeFolder"):
        written, read = uses(group, writes=LAKE_WRITES, reads=LAKE_READS)
        assert written, f"the scan found no lake write of an {group} folder"
        unwritten = {folder: sites for folder, sites in read.items() if folder not in written}
        assert not unwritten, f"lake folders read but never written (folder -> where read): {unwritten}"


def test_every_artifact_read_is_logged() -> None:
    written, read = uses("Artifact", writes=ARTIFACT_WRITES)
    assert read, "the scan found no artifact read"
    unwritten = {artifact: sites for artifact, sites in read.items() if artifact not in written}
    assert not unwritten, f"run artifacts read but never logged (artifact -> where read): {unwritten}"


def test_no_metadata_is_read_by_a_string_literal() -> None:
    """Dagster metadata written under a contract name and read under a typed-again string drifts
    apart. (``ml/`` holds no Dagster metadata: its ``meta`` are GE's and torch's own documents.)"""

    def metadata_like(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr in METADATA_NAMES) or (
            isinstance(node, ast.Name) and node.id in METADATA_NAMES
        )

    found = []
    for path, tree in _sources():
        if path.startswith("mlops_assets/ml/"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and metadata_like(node.value):
                key = node.slice
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and metadata_like(node.func.value)
                and node.args
            ):
                key = node.args[0]
            else:
                continue
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                found.append(f"{path}:{node.lineno} reads {key.value!r}")
    assert not found, f"read these through contract.Meta: {found}"


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    """History, a scored and drift-checked batch, a retrain that moves the champion, a rollback,
    model cards and an explanation: every step that records metadata another module reads."""
    root = tmp_path_factory.mktemp("contract")
    h = Harness(root / "home", write_gss_pipeline(root, [1974, 1975, 1976, 2010]), NAME)
    h.history("1976")
    steps = [
        h.materialize([Asset.RAW_BATCH, Asset.VALIDATED_BATCH, Asset.FEATURES, Asset.PREDICTIONS], "2010"),
        h.materialize([Asset.DRIFT_REPORT], "2010"),
        h.materialize(
            [Asset.TRAINING_DATASET, Asset.MODEL, Asset.EVALUATION, Asset.PROMOTION],
            run_config={
                "ops": {
                    **h.until("2010")["ops"],
                    # Promoted whatever its gates say: the rollback below needs a previous champion.
                    op_name(NAME, Asset.PROMOTION): {"config": {"override": True, "override_reason": "contract"}},
                }
            },
        ),
    ]
    for step in steps:
        assert step.success, h.failure_message(step)
    # The drifted batch's HTML report, as the drift report sensor launches it.
    report = h.defs.resolve_job_def(Job.drift_report(NAME)).execute_in_process(
        instance=h.instance, resources=h.resources, partition_key="2010", raise_on_error=False
    )
    assert report.success, h.failure_message(report)
    rollback = {"ops": {op_name(NAME, Asset.CHAMPION_ROLLBACK): {"config": {"reason": "contract test"}}}}
    rolled = h.defs.resolve_job_def(Job.rollback(NAME)).execute_in_process(
        run_config=rollback, instance=h.instance, resources=h.resources, raise_on_error=False
    )
    assert rolled.success, h.failure_message(rolled)
    for step in (h.materialize([Asset.MODEL_CARD]), h.materialize([Asset.EXPLANATION], "2010")):
        assert step.success, h.failure_message(step)
    return h


def recorded_keys(h: Harness) -> set[str]:
    """Every metadata key recorded by a materialization, an observation or a check evaluation of the model."""
    keys: set[str] = set()
    graph = h.defs.resolve_asset_graph()
    for asset_key in graph.get_all_asset_keys():
        for record in h.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset_key), limit=100).records:
            keys |= set(record.event_log_entry.asset_materialization.metadata)
        for record in h.instance.fetch_observations(dg.AssetRecordsFilter(asset_key=asset_key), limit=100).records:
            keys |= set(record.event_log_entry.asset_observation.metadata)
        for check_key in graph.get(asset_key).check_keys:
            for record in h.instance.event_log_storage.get_asset_check_execution_history(check_key, limit=100):
                if record.evaluation is not None:
                    keys |= set(record.evaluation.metadata)
    return keys


def test_every_metadata_key_read_is_recorded_by_a_real_run(lifecycle: Harness) -> None:
    _, read = uses("Meta")
    recorded = recorded_keys(lifecycle)
    missing = {key: sites for key, sites in read.items() if names(Meta)[key] not in recorded}
    assert not missing, f"Meta keys read (key -> where) that no asset or check recorded in the run: {missing}"


def test_the_scan_sees_each_kind_of_name() -> None:
    """The scan itself still finds what it is meant to find (a renamed helper would blind it)."""
    meta_written, meta_read = uses("Meta")
    assert {"BATCH", "WINDOW_UNTIL", "TRAINING_FINGERPRINT"} <= set(meta_written) & set(meta_read)
    lake_written, lake_read = uses("Asset", writes=LAKE_WRITES, reads=LAKE_READS)
    assert {"TRAINING_DATASET", "EVALUATION", "PROMOTION"} <= set(lake_written) & set(lake_read)
    artifacts_written, artifacts_read = uses("Artifact", writes=ARTIFACT_WRITES)
    assert "DECISION" in set(artifacts_written) & set(artifacts_read)
    assert set(names(LakeFolder)) and set(names(Artifact))
