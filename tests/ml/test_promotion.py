"""The blessing decision as a table: which gate fails, and by how much; and what an override keeps."""

from __future__ import annotations

import pytest

from mlops_assets.ml.evaluation import Evaluation, GroupFairness
from mlops_assets.ml.promotion import BatchEvidence, decide
from mlops_assets.spec import GatesSpec

GATES = GatesSpec(
    min_metrics={"roc_auc": 0.7, "log_loss": 0.6},
    max_regression={"roc_auc": 0.01},
    max_demographic_parity_difference=0.2,
    max_equalized_odds_difference=None,
)
VALIDATED = [BatchEvidence("1974", True, "passed"), BatchEvidence("1975", True, "passed")]
LINEAGE = ["signature_present", "training_data_validated"]


def ev(auc: float | None, log_loss: float = 0.5, parity: float = 0.1) -> Evaluation:
    return Evaluation(
        metrics={"roc_auc": auc, "log_loss": log_loss, "accuracy": 0.8, "f1": 0.5, "calibration_error": 0.02},
        rows=100,
        positive_rate=0.3,
        predicted_positive_rate=0.3,
        fairness=[GroupFairness("gender", parity, None, {})],
    )


def run(candidate: Evaluation, champion: Evaluation | None, **kwargs: object):  # noqa: ANN201
    arguments: dict = {"has_signature": True, "training_data": VALIDATED, "gates": GATES, **kwargs}
    return decide(
        candidate_version="2",
        candidate=candidate,
        champion_version="1" if champion else None,
        champion=champion,
        **arguments,
    )


@pytest.mark.parametrize(
    ("candidate", "champion", "promote", "failed"),
    [
        (ev(0.80), None, True, []),
        (ev(0.65), None, False, ["min_roc_auc"]),
        (ev(0.80, log_loss=0.7), None, False, ["min_log_loss"]),
        (ev(None), None, False, ["min_roc_auc"]),
        (ev(0.80, parity=0.3), None, False, ["max_demographic_parity_difference"]),
        (ev(0.80), ev(0.805), True, []),
        (ev(0.80), ev(0.82), False, ["max_regression_roc_auc"]),
        (ev(0.85), ev(0.80), True, []),
        (
            ev(0.60, parity=0.5),
            ev(0.80),
            False,
            ["min_roc_auc", "max_demographic_parity_difference", "max_regression_roc_auc"],
        ),
    ],
)
def test_gates(candidate: Evaluation, champion: Evaluation | None, promote: bool, failed: list[str]) -> None:
    decision = run(candidate, champion)
    assert decision.promote is promote
    assert [g.gate for g in decision.failed_gates] == failed
    assert len(decision.reasons) == max(1, len(failed))
    assert [g.gate for g in decision.gates[:2]] == LINEAGE


@pytest.mark.parametrize(
    ("has_signature", "training_data", "failed", "fragment"),
    [
        (False, VALIDATED, ["signature_present"], "no input signature"),
        (
            True,
            [*VALIDATED, BatchEvidence("2010", False, "validation failed at 2026-01-01 (checks age_numeric)")],
            ["training_data_validated"],
            "batch 2010: validation failed at 2026-01-01 (checks age_numeric)",
        ),
        (
            True,
            [BatchEvidence("1974", False, "fingerprint abc matches no features materialization")],
            ["training_data_validated"],
            "batch 1974: fingerprint abc",
        ),
        (True, [], ["training_data_validated"], "lists no batch"),
        (
            False,
            [BatchEvidence("1974", False, "never validated")],
            ["signature_present", "training_data_validated"],
            "never validated",
        ),
    ],
)
def test_lineage_gates_block_even_a_better_candidate(
    has_signature: bool, training_data: list[BatchEvidence], failed: list[str], fragment: str
) -> None:
    decision = run(ev(0.95), ev(0.80), has_signature=has_signature, training_data=training_data)
    assert decision.promote is False
    assert [g.gate for g in decision.failed_gates] == failed
    assert any(fragment in r for r in decision.reasons)


def test_training_data_gate_counts_the_bad_batches() -> None:
    evidence = [BatchEvidence("1", False, "a"), BatchEvidence("2", True, "ok"), BatchEvidence("3", False, "b")]
    gate = next(g for g in run(ev(0.9), None, training_data=evidence).gates if g.gate == "training_data_validated")
    assert (gate.value, gate.limit, gate.passed) == (2.0, 0.0, False)
    assert gate.detail == "batch 1: a; batch 3: b"


def test_regression_reports_the_margin() -> None:
    decision = run(ev(0.80), ev(0.82))
    (gate,) = decision.failed_gates
    assert gate.value == pytest.approx(0.02)
    assert "loses 0.0200 (allowed loss 0.0100)" in gate.detail
    assert decision.deltas["roc_auc"] == pytest.approx(-0.02)


def test_the_champion_is_never_its_own_challenger() -> None:
    decision = decide(
        candidate_version="3",
        candidate=ev(0.9),
        champion_version="3",
        champion=ev(0.9),
        gates=GATES,
        has_signature=True,
        training_data=VALIDATED,
        override_reason="even with an override",
    )
    assert not decision.promote
    assert decision.reasons == ["candidate is already champion"]


def test_an_override_promotes_but_keeps_every_failed_gate_and_the_reason() -> None:
    decision = run(ev(0.60), ev(0.80), has_signature=False, override_reason="  hotfix for INC-42  ")
    assert decision.promote is True
    assert decision.overridden is True
    assert decision.override_reason == "hotfix for INC-42"
    assert [g.gate for g in decision.failed_gates] == ["signature_present", "min_roc_auc", "max_regression_roc_auc"]
    assert decision.reasons[0] == (
        "OVERRIDE of failed gates (signature_present, min_roc_auc, max_regression_roc_auc): hotfix for INC-42"
    )
    assert len(decision.reasons) == 4
    assert decision.to_dict()["overridden"] is True


def test_an_override_of_a_passing_candidate_changes_nothing() -> None:
    decision = run(ev(0.85), ev(0.80), override_reason="not needed")
    assert decision.promote is True
    assert decision.overridden is False
    assert decision.reasons == ["every gate passed against champion version 1"]


@pytest.mark.parametrize("reason", ["", "   "])
def test_an_override_needs_a_reason(reason: str) -> None:
    with pytest.raises(ValueError, match="override needs a non-empty reason"):
        run(ev(0.60), None, override_reason=reason)


def test_three_rows_of_a_new_gender_do_not_block_promotion() -> None:
    import numpy as np
    import pandas as pd

    from mlops_assets.ml.evaluation import evaluate

    predicted_positive = np.r_[np.arange(100) < 5, np.arange(100) < 5, [True] * 3]
    y = np.tile([0, 1], 102)[:203]
    gender = pd.DataFrame({"gender": ["m"] * 100 + ["f"] * 100 + [None] * 3})
    proba = np.where(predicted_positive, 0.9, 0.1)
    gates = GatesSpec(min_metrics={}, max_regression={}, max_demographic_parity_difference=0.2)

    def gate(min_group_size: int):  # noqa: ANN202
        candidate = evaluate(y, proba, gender, min_group_size=min_group_size)
        decision = run(candidate, None, gates=gates)
        return next(g for g in decision.gates if g.gate == "max_demographic_parity_difference")

    assert not gate(1).passed  # every group counted: the three rows make the gap 0.95
    small = gate(gates.min_group_size)
    assert small.passed and small.value == pytest.approx(0.0)
    assert "groups too small to count: gender=missing (3)" in small.detail
