"""The blessing decision as a table: which gate fails, and by how much."""

from __future__ import annotations

import pytest

from mlops_assets.ml.evaluation import Evaluation, GroupFairness
from mlops_assets.ml.promotion import decide
from mlops_assets.spec import GatesSpec

GATES = GatesSpec(
    min_metrics={"roc_auc": 0.7, "log_loss": 0.6},
    max_regression={"roc_auc": 0.01},
    max_demographic_parity_difference=0.2,
    max_equalized_odds_difference=None,
)


def ev(auc: float | None, log_loss: float = 0.5, parity: float = 0.1) -> Evaluation:
    return Evaluation(
        metrics={"roc_auc": auc, "log_loss": log_loss, "accuracy": 0.8, "f1": 0.5, "calibration_error": 0.02},
        rows=100, positive_rate=0.3, predicted_positive_rate=0.3,
        fairness=[GroupFairness("gender", parity, None, {})],
    )  # fmt: skip


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
        (ev(0.60, parity=0.5), ev(0.80), False, ["min_roc_auc", "max_demographic_parity_difference", "max_regression_roc_auc"]),
    ],
)
def test_gates(candidate: Evaluation, champion: Evaluation | None, promote: bool, failed: list[str]) -> None:
    decision = decide(
        candidate_version="2", candidate=candidate,
        champion_version="1" if champion else None, champion=champion, gates=GATES,
    )  # fmt: skip
    assert decision.promote is promote
    assert [g.gate for g in decision.failed_gates] == failed
    assert len(decision.reasons) == max(1, len(failed))


def test_regression_reports_the_margin() -> None:
    decision = decide(candidate_version="2", candidate=ev(0.80), champion_version="1", champion=ev(0.82), gates=GATES)
    (gate,) = decision.failed_gates
    assert gate.value == pytest.approx(0.02)
    assert "loses 0.0200 (allowed loss 0.0100)" in gate.detail
    assert decision.deltas["roc_auc"] == pytest.approx(-0.02)


def test_the_champion_is_never_its_own_challenger() -> None:
    decision = decide(candidate_version="3", candidate=ev(0.9), champion_version="3", champion=ev(0.9), gates=GATES)
    assert not decision.promote
    assert decision.reasons == ["candidate is already champion"]
