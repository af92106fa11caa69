"""The three questions in one command (``mlops explain``), the model card and explanation
assets, and the ``mlops rollback`` / ``mlops history`` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_assets.cli import ARTIFACT_PROGRESS_BAR_ENV, main
from mlops_assets.contract import Artifact, Asset, MlflowTag, artifact_path, version_record
from resources.registry import CHAMPION, TAG_CODE_VERSION
from tests.governance.conftest import NAME, Governed

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "evidently", "great_expectations", "sklearn")


@pytest.fixture
def cli_env(governed: Governed, monkeypatch: pytest.MonkeyPatch) -> Governed:
    for key, value in governed.env().items():
        monkeypatch.setenv(key, value)
    return governed


def test_explain_a_batch_in_one_command_without_ml_libraries(governed: Governed) -> None:
    registry, lake = governed.registry, governed.lake
    (version,) = set(lake.read_frame(NAME, "predictions", "2010")["model_version"])
    model = registry.get(NAME, version)
    manifest = json.loads(registry.run_artifact(model.run_id, artifact_path(Artifact.TRAINING_MANIFEST)))
    probe = (
        f"import sys; from mlops_assets.cli import main; rc = main(['explain', {NAME!r}, '--batch', '2010']);"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules)); sys.exit(rc)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env={**os.environ, **governed.env()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "HEAVY []" in out
    rows = len(lake.read_frame(NAME, "predictions", "2010"))
    assert out.startswith(
        f"{NAME}, batch 2010: {rows:,} predictions made by version {version} (models:/{NAME}/{version})"
    )
    assert f"code version      {model.tags[TAG_CODE_VERSION]}" in out
    for batch in manifest["batches"]:
        line = next(li for li in out.splitlines() if li.startswith(f"  {batch} "))
        assert manifest["fingerprints"][batch] in line
        # 28 expectations on the features and sensitive columns, 3 on the label.
        assert "ok: 31/31 passed" in line
    assert "PASS signature_present" in out and "PASS training_data_validated" in out and "PASS min_roc_auc" in out
    assert "Decision: PROMOTED" in out
    assert f"-> {version}  by run " in out.split(f"Champion history of version {version}")[1]
    # The fixture scores 2010 without a drift report; explain says so rather than inventing one.
    assert "Drift of batch 2010: no drift report" in out


def test_explain_a_version_as_json(cli_env: Governed, capsys: pytest.CaptureFixture[str]) -> None:
    registry = cli_env.registry
    champion = registry.by_alias(NAME, CHAMPION)
    assert main(["explain", NAME, "--version", champion.version, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"]["version"] == champion.version
    assert CHAMPION in doc["version"]["aliases"]
    assert [b["batch"] for b in doc["training_data"]["batches"]] == champion.tags[MlflowTag.TRAINING_BATCHES].split(",")
    assert all(b["validation"]["ok"] for b in doc["training_data"]["batches"])
    assert doc["decision"]["version"] == champion.version
    assert doc["champion_history"][0]["to_version"] == champion.version


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch", "1999"], f"{NAME}: batch 1999 has no predictions"),
        (["--version", "999"], f"{NAME}: no registered version '999'"),
    ],
)
def test_explain_says_what_is_missing(
    cli_env: Governed, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["explain", NAME, *argv]) == 1
    assert message in capsys.readouterr().out


def test_model_card_is_logged_to_the_run_and_shown_in_dagster(governed: Governed) -> None:
    h, registry = governed.harness, governed.registry
    result = h.materialize(["model_card"])
    assert result.success, h.failure_message(result)
    champion = registry.by_alias(NAME, CHAMPION)
    card = h.metadata("model_card")["champion_card"]
    assert card.startswith(f"# Model card: {NAME} version {champion.version}\n")
    assert "## Training data" in card and "| signature_present | yes |" in card and "## Champion history" in card
    logged = registry.run_artifact(champion.run_id, artifact_path(Artifact.MODEL_CARD)).decode()
    stored = governed.lake.read_bytes(NAME, Asset.MODEL_CARD, version_record(champion.version), "md").decode()
    assert logged == card == stored


def test_the_explanation_asset_answers_for_a_batch(governed: Governed) -> None:
    h = governed.harness
    result = h.materialize(["explanation"], "2010")
    assert result.success, h.failure_message(result)
    (version,) = set(governed.lake.read_frame(NAME, "predictions", "2010")["model_version"])
    meta = h.metadata("explanation", "2010")
    assert meta["model_version"] == version
    assert f"predictions made by version {version}" in meta["explanation"]


def test_rollback_and_history_commands(cli_env: Governed, candidate: str, capsys: pytest.CaptureFixture[str]) -> None:
    registry = cli_env.registry
    champion = cli_env.champion()
    registry.promote(
        name=NAME, version=candidate, expected_champion=champion, record={}, reason="set-up for the CLI test"
    )
    capsys.readouterr()

    assert main(["rollback", NAME, "--reason", "INC-9: coats in summer"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{NAME}: champion rolled back from version {candidate} to {champion} in Dagster run ")
    assert cli_env.champion() == champion
    last = registry.champion_history(NAME)[-1]
    assert (last.kind, last.to_version, last.reason) == ("rollback", champion, "INC-9: coats in summer")
    assert last.dagster_run_id and last.dagster_run_id in out

    assert main(["rollback", NAME, "--to", candidate, "--reason", "registry only", "--registry-only"]) == 0
    assert "(registry only, no Dagster run)" in capsys.readouterr().out
    assert cli_env.champion() == candidate
    assert main(["rollback", NAME, "--to", "999", "--reason", "typo", "--registry-only"]) == 1
    assert "no registered version '999'" in capsys.readouterr().out
    assert main(["rollback", NAME, "--to", champion, "--reason", "restore", "--registry-only"]) == 0
    assert cli_env.champion() == champion

    assert main(["history", NAME]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith(f"rollback {candidate} -> {champion} at ") and lines[-1].endswith(": restore")
    assert main(["history", NAME, "--at", last.at.isoformat()]) == 0
    assert capsys.readouterr().out.strip() == f"{NAME}: champion at {last.at.isoformat()} was version {champion}"
    with pytest.raises(SystemExit):
        main(["rollback", NAME, "--reason", " "])


def test_explain_draws_no_progress_bar_and_leaves_the_environment_as_it_was(
    cli_env: Governed, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ARTIFACT_PROGRESS_BAR_ENV, raising=False)
    before = dict(os.environ)
    assert main(["explain", NAME, "--batch", "2010"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{NAME}, batch 2010: ")
    # MLflow draws "Downloading artifacts: 100%|..." per artifact read unless told not to.
    assert "Downloading artifacts" not in err
    assert dict(os.environ) == before
