"""The ``attributions`` asset through ``dg.materialize``: real GSS rows scored by a real registered
version (MLflow on SQLite), explained in their own step, stored beside the predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlops_assets.contract import ATTRIBUTION_DRIFT_CHECK, Asset, Meta
from mlops_assets.ml.attribution import read_attributions, row_explanation
from mlops_assets.ml.attribution.storage import REST, top_value
from mlops_assets.ml.trainers import prepare_inputs
from tests.assets.pipeline_harness import Harness
from tests.conftest import GSS_FEATURES, write_gss_pipeline

NAME = "gss_slice"


@pytest.fixture(scope="module", params=["sklearn_logreg", "sklearn_hgb"])
def explained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Harness:
    root = tmp_path_factory.mktemp(request.param)
    training = {"initial_until": 1976, "model": request.param, "seed": 7}
    h = Harness(root / "home", write_gss_pipeline(root, [1974, 1975, 1976, 2010], training=training), NAME)
    h.history("1976")
    scored = h.materialize([Asset.RAW_BATCH, Asset.VALIDATED_BATCH, Asset.FEATURES, Asset.PREDICTIONS], "2010")
    assert scored.success, h.failure_message(scored)
    result = h.materialize([Asset.ATTRIBUTIONS], "2010")
    assert result.success, h.failure_message(result)
    h.check_result = result  # type: ignore[attr-defined]
    return h


def test_base_plus_contributions_is_the_scoring_versions_raw_output(explained: Harness) -> None:
    lake, registry = explained.resources["lake"], explained.resources["registry"]
    predictions = lake.read_frame(NAME, Asset.PREDICTIONS, "2010")
    path = lake.path(NAME, Asset.ATTRIBUTIONS, "2010")
    assert Path(path).parent.parent == Path(lake.path(NAME, Asset.PREDICTIONS, "2010")).parent.parent
    info, stored = read_attributions(path)
    version = registry.get(NAME, str(predictions[Meta.MODEL_VERSION].iloc[0]))
    assert info.model_version == version.version and info.model_family == version.family
    assert stored["row"].tolist() == predictions["row"].tolist()
    # The model's own raw output on the same rows, computed independently of the explainer.
    features = lake.read_frame(NAME, Asset.FEATURES, "2010")
    raw = registry.load_version(version).decision_function(
        prepare_inputs(features, GSS_FEATURES["numeric"], GSS_FEATURES["categorical"])
    )
    total = stored["base_value"] + stored[[top_value(i) for i in range(1, info.top_k + 1)]].sum(axis=1) + stored[REST]
    assert len(stored) == len(predictions) > 100
    assert np.max(np.abs(total.to_numpy() - raw)) <= 1e-9
    # The stored score is the sigmoid of that raw output.
    assert np.max(np.abs(1 / (1 + np.exp(-raw)) - predictions["score"].to_numpy())) <= 1e-9
    one = row_explanation(path, 17)
    assert one.model_version == version.version
    assert abs(one.base_value + sum(c.value for c in one.top) + one.rest - raw[17]) <= 1e-9
    assert {c.column for c in one.top} <= set(GSS_FEATURES["numeric"]) | set(GSS_FEATURES["categorical"])


def test_the_batch_gets_an_attribution_drift_check_against_training(explained: Harness) -> None:
    evaluations = [
        e for e in explained.check_result.get_asset_check_evaluations() if e.check_name == ATTRIBUTION_DRIFT_CHECK
    ]
    assert len(evaluations) == 1
    metadata = {k: v.value for k, v in evaluations[0].metadata.items()}
    assert metadata[Meta.BATCH] == "2010"
    assert 0.0 < metadata["ndcg"] <= 1.0 and metadata["threshold"] == 0.9
    # On 2010 both families rank the columns nearly as training did (nDCG 0.997 and 0.999).
    assert evaluations[0].passed and metadata["ndcg"] >= 0.9
    assert sorted(metadata["batch_ranking"]) == sorted(GSS_FEATURES["numeric"] + GSS_FEATURES["categorical"])
    meta = explained.metadata(Asset.ATTRIBUTIONS, "2010")
    assert meta["max_abs_residual"] <= 1e-9 and meta["dagster/row_count"] > 100


def _cli_env(h: Harness, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"MLOPS_HOME": str(h.settings.home), "MLOPS_PIPELINES": str(h.settings.pipelines)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_explain_a_row_prints_version_prediction_base_and_top_contributions(
    explained: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import subprocess
    import sys

    env = _cli_env(explained, monkeypatch)
    lake = explained.resources["lake"]
    predictions = lake.read_frame(NAME, Asset.PREDICTIONS, "2010")
    one = row_explanation(lake.path(NAME, Asset.ATTRIBUTIONS, "2010"), 17)
    probe = (
        f"import sys; from mlops_assets.cli import main; rc = main(['explain', {NAME!r}, '--batch', '2010', '--row', "
        "'17']); print('HEAVY', sorted(m for m in ('torch', 'sklearn', 'mlflow', 'matplotlib') if m in sys.modules));"
        " sys.exit(rc)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    version = str(predictions[Meta.MODEL_VERSION].iloc[0])
    score = float(predictions.loc[predictions["row"] == 17, "score"].iloc[0])
    assert out.startswith(f"{NAME}, batch 2010, row 17: prediction {int(score >= 0.5)} (score {score:.4f}) made by ")
    assert f"version {version} (models:/{NAME}/{version})" in out.splitlines()[0]
    assert f"base value               {one.base_value:+10.4f}" in out
    for c in one.top:
        assert f"  {c.column:<24} {c.value:>+10.4f}" in out
    assert f"= raw output             {one.raw_output:+10.4f}" in out
    assert "HEAVY []" in out


def test_explain_a_row_says_what_is_missing(
    explained: Harness, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlops_assets.cli import main

    _cli_env(explained, monkeypatch)
    rows = len(explained.resources["lake"].read_frame(NAME, Asset.PREDICTIONS, "2010"))
    assert main(["explain", NAME, "--batch", "2010", "--row", str(rows)]) == 1
    assert f"batch 2010: no explained row {rows}; it has {rows} rows" in capsys.readouterr().out
    assert main(["explain", NAME, "--batch", "1975", "--row", "0"]) == 1
    assert f"{NAME}: batch 1975 has no predictions" in capsys.readouterr().out


def test_explain_a_version_prints_its_global_importance(
    explained: Harness, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlops_assets.cli import main
    from mlops_assets.ml.attribution import AttributionBaseline

    _cli_env(explained, monkeypatch)
    registry = explained.resources["registry"]
    version = registry.by_alias(NAME, "champion")
    baseline = AttributionBaseline.from_json(
        registry.run_artifact(version.run_id, "mlops/attribution_baseline.json").decode()
    )
    assert baseline.rows > 100 and baseline.family == version.family
    assert main(["explain", NAME, "--version", version.version]) == 0
    out = capsys.readouterr().out
    section = out.split("Global importance (mean |contribution| on the training rows)\n")[1].splitlines()
    ranked = sorted(baseline.importance.items(), key=lambda kv: -kv[1])
    assert section == [f"  {i:>2}. {c:<24} {v:.4f}" for i, (c, v) in enumerate(ranked, 1)]
    card = explained.materialize([Asset.MODEL_CARD])
    assert card.success, explained.failure_message(card)
    text = explained.metadata(Asset.MODEL_CARD)["champion_card"]
    assert "## Global importance" in text
    assert f"| 1 | `{ranked[0][0]}` | {ranked[0][1]:.4f} |" in text


def test_the_explanation_document_links_to_the_batchs_attributions(explained: Harness) -> None:
    result = explained.materialize([Asset.EXPLANATION], "2010")
    assert result.success, explained.failure_message(result)
    linked = explained.metadata(Asset.EXPLANATION, "2010")["attributions"]
    assert linked == explained.resources["lake"].uri(NAME, Asset.ATTRIBUTIONS, "2010") and Path(linked).is_file()


def test_per_batch_numbers_are_numeric_metadata_that_dagster_plots(explained: Harness) -> None:
    """Dagster draws a plot across partitions for float and int metadata only."""
    import dagster as dg

    record = explained.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=explained.key(Asset.PREDICTIONS), asset_partitions=["2010"]), limit=1
    ).records[0]
    metadata = record.event_log_entry.asset_materialization.metadata
    numeric = (dg.FloatMetadataValue, dg.IntMetadataValue)
    for key in ("roc_auc", "predicted_positive_rate", "demographic_parity_difference", "equalized_odds_difference"):
        assert isinstance(metadata[key], dg.FloatMetadataValue), (key, metadata[key])
    assert isinstance(metadata["dagster/row_count"], numeric)
    drift = explained.materialize([Asset.DRIFT_REPORT], "2010")
    assert drift.success, explained.failure_message(drift)
    record = explained.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=explained.key(Asset.DRIFT_REPORT), asset_partitions=["2010"]), limit=1
    ).records[0]
    assert isinstance(record.event_log_entry.asset_materialization.metadata["drifted_share"], dg.FloatMetadataValue)


def test_a_ranking_below_the_spec_threshold_fails_the_check(explained: Harness, tmp_path: Path) -> None:
    """The same batch and version under ``explain.drift_threshold: 1.0``: any moved rank fails."""
    import yaml

    spec = yaml.safe_load((Path(explained.settings.pipelines) / "spec.yaml").read_text())
    spec["explain"] = {"drift_threshold": 1.0}
    (tmp_path / "strict").mkdir()
    (tmp_path / "strict" / "spec.yaml").write_text(yaml.safe_dump(spec))
    strict = Harness(explained.settings.home, tmp_path / "strict", NAME, instance=explained.instance)
    result = strict.materialize([Asset.ATTRIBUTIONS], "2010")
    assert result.success, strict.failure_message(result)
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == ATTRIBUTION_DRIFT_CHECK]
    metadata = {k: v.value for k, v in evaluation.metadata.items()}
    assert not evaluation.passed and metadata["threshold"] == 1.0 and metadata["ndcg"] < 1.0
    assert metadata["batch_ranking"] != metadata["baseline_ranking"]
    assert evaluation.description.startswith(f"nDCG {metadata['ndcg']:.3f} < 1")
