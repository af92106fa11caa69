"""Promotion gates that cannot be bypassed silently, the override, and rollback, through Dagster.

Each rejected case shows the champion unchanged. The candidate is version 2 (trained on a window
that adds batch 2010) unless a test trains its own.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import yaml

from mlops_assets.contract import TAG_TRIGGER, Asset, Job, Meta, op_name
from mlops_assets.explain import training_batch_evidence
from tests.assets.pipeline_harness import Harness
from tests.governance.conftest import NAME, RETRAIN, UNTIL_2010, Governed

PROMOTION_OP = op_name(NAME, Asset.PROMOTION)


def retrain(h: Harness, *, override: bool = False, reason: str = "") -> dg.ExecuteInProcessResult:
    ops = dict(UNTIL_2010["ops"])
    if override or reason:
        ops[PROMOTION_OP] = {"config": {"override": override, "override_reason": reason}}
    return h.materialize(RETRAIN, run_config={"ops": ops})


def failed_gates(h: Harness) -> list[str]:
    return [r.data["gate"] for r in h.metadata("promotion")["gates"].records if r.data["passed"] is False]


def gate_detail(h: Harness, gate: str) -> str:
    return next(r.data["detail"] for r in h.metadata("promotion")["gates"].records if r.data["gate"] == gate)


def assert_rejected(h: Harness, result: dg.ExecuteInProcessResult, governed: Governed, champion: str) -> None:
    assert result.success, h.failure_message(result)
    meta = h.metadata("promotion")
    assert meta["decision"] == "rejected"
    assert meta["champion_after"] == champion
    assert governed.champion() == champion


def test_an_unfair_candidate_is_never_promoted(governed: Governed, candidate: str) -> None:
    champion = governed.champion()
    strict = governed.variant(
        gates={
            "min_metrics": {"roc_auc": 0.6},
            "max_demographic_parity_difference": 0.01,
            "max_equalized_odds_difference": 0.5,
        }
    )
    assert_rejected(strict, retrain(strict), governed, champion)
    assert strict.metadata("promotion")["candidate_version"] == candidate
    # Everything else about version 2 passes: the fairness limit alone stops it.
    assert failed_gates(strict) == ["max_demographic_parity_difference"]
    assert "exceeds limit 0.0100" in gate_detail(strict, "max_demographic_parity_difference")


def test_a_candidate_worse_than_the_champion_is_never_promoted(governed: Governed) -> None:
    champion = governed.champion()
    stump = governed.variant(
        training={
            "initial_until": 1976,
            "model": "sklearn_hgb",
            "seed": 7,
            "params": {"max_iter": 1, "max_leaf_nodes": 2},
        }
    )
    result = stump.materialize(RETRAIN)
    assert_rejected(stump, result, governed, champion)
    assert stump.metadata("model")["reused_existing_version"] is False
    assert "max_regression_roc_auc" in failed_gates(stump)
    assert "(allowed loss 0.0100)" in gate_detail(stump, "max_regression_roc_auc")


def test_training_data_that_later_failed_validation_is_never_promoted(governed: Governed, candidate: str) -> None:
    h = governed.harness
    champion = governed.champion()
    good = h.raw_frame("2010")
    h.store_raw("2010", good.assign(age=good["age"].astype(str)))
    try:
        assert not h.materialize(["validated_batch"], "2010").success
        result = retrain(h)
        assert_rejected(h, result, governed, champion)
        assert h.metadata("model")["version"] == candidate
        assert failed_gates(h) == ["training_data_validated"]
        detail = gate_detail(h, "training_data_validated")
        assert detail.startswith("batch 2010: validation failed at ")
        assert "age_numeric" in detail and "after the data it was trained on was validated" in detail
    finally:
        restored = h.materialize(["raw_batch", "validated_batch"], "2010")
    assert restored.success, h.failure_message(restored)
    # A later successful validation supersedes the failure.
    evidence = training_batch_evidence(
        governed.instance,
        model=NAME,
        fingerprints={"2010": h.metadata("features", "2010")[Meta.FINGERPRINT]},
        blocking_checks=["age_numeric"],
    )
    assert [(e.batch, e.validated) for e in evidence] == [("2010", True)]


def test_training_data_put_into_the_lake_by_hand_is_never_promoted(governed: Governed, candidate: str) -> None:
    h, lake = governed.harness, governed.lake
    champion = governed.champion()
    features = lake.read_frame(NAME, "features", "2010")
    planted = features.assign(__label__=1.0 - features["__label__"])
    lake.write_frame(NAME, "features", planted, "2010")
    try:
        result = retrain(h)
        assert h.metadata("model")["version"] not in (candidate, champion), (
            "a model must be trained on the planted data"
        )
        assert_rejected(h, result, governed, champion)
        assert "training_data_validated" in failed_gates(h)
        detail = gate_detail(h, "training_data_validated")
        assert detail.startswith("batch 2010: training data fingerprint ")
        assert "matches no features materialization of the batch" in detail
    finally:
        restored = h.materialize(["features"], "2010")
    assert restored.success, h.failure_message(restored)
    assert lake.read_frame(NAME, "features", "2010").equals(features)


def test_a_candidate_without_a_signature_is_never_promoted(governed: Governed, candidate: str) -> None:
    h = governed.harness
    champion = governed.champion()
    location = governed.registry.client().get_model_version_download_uri(NAME, candidate)
    mlmodel = Path(location.removeprefix("file://")) / "MLmodel"
    original = mlmodel.read_bytes()
    document = yaml.safe_load(original)
    del document["signature"]
    mlmodel.write_text(yaml.safe_dump(document))
    try:
        result = retrain(h)
        assert_rejected(h, result, governed, champion)
        assert failed_gates(h) == ["signature_present"]
    finally:
        mlmodel.write_bytes(original)


def test_an_override_needs_a_reason(governed: Governed, candidate: str) -> None:
    h = governed.harness
    champion = governed.champion()
    for override, reason, message in (
        (True, "", "override=true needs a non-empty override_reason; nothing was promoted"),
        (True, "   ", "override=true needs a non-empty override_reason"),
        (False, "because", "override_reason is set but override is false"),
    ):
        result = retrain(h, override=override, reason=reason)
        assert not result.success
        assert message in h.failure_message(result)
        assert governed.champion() == champion


def test_an_override_is_recorded_and_a_rollback_restores_the_champion_for_predictions(
    governed: Governed, candidate: str
) -> None:
    registry, lake = governed.registry, governed.lake
    champion = governed.champion()
    strict = governed.variant(
        gates={
            "min_metrics": {"roc_auc": 0.6},
            "max_demographic_parity_difference": 0.01,
            "max_equalized_odds_difference": 0.5,
        }
    )
    assert_rejected(strict, retrain(strict), governed, champion)

    overridden = retrain(strict, override=True, reason="INC-1234: ship the 2010 model despite the parity gap")
    assert overridden.success, strict.failure_message(overridden)
    meta = strict.metadata("promotion")
    assert (meta["decision"], meta["overridden"], meta["champion_after"]) == ("promoted", True, candidate)
    assert meta["override_reason"] == "INC-1234: ship the 2010 model despite the parity gap"
    assert "OVERRIDE of failed gates (max_demographic_parity_difference)" in meta["reasons"]
    assert governed.champion() == candidate
    move = registry.champion_history(NAME)[-1]
    assert (move.kind, move.from_version, move.to_version, move.override) == ("promotion", champion, candidate, True)
    assert move.dagster_run_id == overridden.run_id and move.reason.startswith("OVERRIDE")
    assert move.details["failed_gates"] == ["max_demographic_parity_difference"]
    assert "roc_auc" in move.details["metrics"]
    during = dt.datetime.now(dt.UTC)

    scored = strict.materialize(["predictions"], "2010")
    assert scored.success, strict.failure_message(scored)
    assert set(lake.read_frame(NAME, "predictions", "2010")["model_version"]) == {candidate}

    job = strict.defs.resolve_job_def(Job.rollback(NAME))
    config = {"ops": {op_name(NAME, Asset.CHAMPION_ROLLBACK): {"config": {"reason": "   "}}}}
    refused = job.execute_in_process(run_config=config, instance=governed.instance, raise_on_error=False)
    assert not refused.success and "needs a non-empty reason" in strict.failure_message(refused)
    assert governed.champion() == candidate

    config = {"ops": {op_name(NAME, Asset.CHAMPION_ROLLBACK): {"config": {"reason": "INC-1235: parity complaints"}}}}
    rolled = job.execute_in_process(run_config=config, instance=governed.instance, raise_on_error=False)
    assert rolled.success, strict.failure_message(rolled)
    assert rolled.dagster_run.tags[TAG_TRIGGER] == "manual"
    meta = strict.metadata("champion_rollback")
    assert (meta["from_version"], meta["to_version"], meta["reason"]) == (
        candidate,
        champion,
        "INC-1235: parity complaints",
    )
    assert meta["model_card"].endswith("/mlops/model_card.md")
    assert governed.champion() == champion
    last = registry.champion_history(NAME)[-1]
    assert (last.kind, last.from_version, last.to_version, last.dagster_run_id) == (
        "rollback",
        candidate,
        champion,
        rolled.run_id,
    )
    assert registry.champion_at(NAME, during) == candidate

    rescored = strict.materialize(["predictions"], "2010")
    assert rescored.success, strict.failure_message(rescored)
    predictions = lake.read_frame(NAME, "predictions", "2010")
    assert set(predictions["model_version"]) == {champion}
    assert strict.metadata("predictions", "2010")["model_version"] == champion


def test_every_champion_move_runs_in_the_registry_pool(governed: Governed) -> None:
    defs = governed.harness.defs
    pools = {
        n: defs.resolve_assets_def(governed.harness.key(n)).op.pool for n in ("promotion", "champion_rollback", "model")
    }
    assert pools == {"promotion": f"{NAME}_registry", "champion_rollback": f"{NAME}_registry", "model": None}
