"""The typed records read the files today's code wrote (tests/fixtures/records), round-trip,
and refuse a bad file naming the file and the field."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mlops_assets.explain import render_model_card, render_text
from mlops_assets.records import (
    DriftSummary,
    EvaluationReport,
    Lineage,
    PredictionsSubject,
    ProductionEvaluation,
    PromotionRecord,
    RecordError,
    TrainingManifest,
)

FIXTURES = Path(__file__).parent / "fixtures" / "records"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def read(record: type, name: str):  # noqa: ANN201 - the record type read
    return record.from_dict(fixture(name), origin=name)


def test_training_manifests_of_today_read_back() -> None:
    lake = read(TrainingManifest, "training_manifest.json")
    assert lake.batches == ("1974", "1975", "1976")
    assert (lake.training_fingerprint, lake.train_rows, lake.holdout_rows) == ("6b8f9782f94b4a0f", 2020, 527)
    assert lake.fingerprints["1976"] == "fdf5a08ac455e7eb"
    assert lake.schema_version == 0
    logged = read(TrainingManifest, "mlflow_training_manifest_v2.json")
    assert logged.batches[-1] == "2010" and logged.fingerprints["2010"] == "9dbc9c833cbb6068"
    assert (logged.train_rows, logged.holdout_rows) == (2987, 762)


def test_evaluation_reports_of_today_read_back() -> None:
    first = read(EvaluationReport, "evaluation_first_model.json")
    assert (first.candidate.version, first.champion, first.holdout_rows) == ("1", None, 527)
    assert first.candidate.evaluation.metrics["roc_auc"] == pytest.approx(0.7898339460)
    assert first.candidate.evaluation.fairness[0].feature == "gender"
    assert first.candidate.evaluation.worst("equalized_odds_difference") == pytest.approx(0.2528138528)
    against = read(EvaluationReport, "evaluation_against_champion.json")
    assert (against.candidate.version, against.champion.version, against.holdout_rows) == ("2", "1", 762)
    assert against.training_fingerprint is None and against.dagster_run_id is None


def test_both_shapes_of_todays_promotion_folder_read_as_one_type() -> None:
    flat = read(PromotionRecord, "promotion_latest_promoted.json")
    nested = read(PromotionRecord, "promotion_v1_first_model.json")
    assert (flat.version, flat.outcome, flat.dagster_run_id) == (nested.version, nested.outcome, nested.dagster_run_id)
    assert flat.decision == nested.decision
    assert flat.decision.reasons == ["first model: every gate passed"]
    assert [g.gate for g in nested.decision.gates][:2] == ["signature_present", "training_data_validated"]
    # Only the nested shape kept the data and metrics the decision was made on.
    assert flat.evaluation is None and flat.training_data == ()
    assert nested.evaluation.holdout_rows == 527 and nested.evaluation.champion is None
    assert [(e.batch, e.validated) for e in nested.training_data] == [("1974", True), ("1975", True), ("1976", True)]
    assert nested.champion_move["to_version"] == "1" and nested.champion_move["from_version"] is None

    noop = read(PromotionRecord, "promotion_latest_noop.json")
    assert (noop.version, noop.outcome, noop.decision.gates) == ("2", "rejected", [])
    assert noop.decision.reasons == ["candidate is already champion"]


def test_a_decision_reads_the_same_from_the_lake_and_from_mlflow() -> None:
    lake = read(PromotionRecord, "promotion_v2_against_champion.json")
    logged = read(PromotionRecord, "mlflow_decision_v2.json")
    assert lake == logged
    assert (lake.version, lake.outcome, lake.decision.champion_version) == ("2", "promoted", "1")
    assert lake.evaluation.champion.version == "1"
    assert {m: (c, b) for m, c, b in lake.evaluation.rows()}["roc_auc"] == pytest.approx((0.7961155378, 0.7913269997))
    assert lake.champion_move["from_version"] == "1"


def test_batch_records_of_today_read_back() -> None:
    drift = read(DriftSummary, "drift_report_2010.json")
    assert (drift.batch, drift.model_version, drift.dataset_drift, drift.drifted_share) == ("2010", "1", True, 0.625)
    assert drift.drifted_columns == ["age", "childs", "occrecode", "educcat", "maritalcat"]
    quality = read(ProductionEvaluation, "production_evaluation_2010.json")
    assert (quality.model_version, quality.evaluation.rows) == ("1", 1202)
    assert quality.worst("demographic_parity_difference") == pytest.approx(0.1541123592)


def test_a_lineage_document_of_today_renders_as_it_did() -> None:
    doc = read(Lineage, "explanation_2010.json")
    assert isinstance(doc.subject, PredictionsSubject) and doc.subject.rows == 1202
    assert [b.batch for b in doc.training_data.batches] == ["1974", "1975", "1976"]
    assert doc.decision is not None and doc.decision.version == "1"
    assert render_text(doc) + "\n" == (FIXTURES / "explanation_2010.txt").read_text()
    assert render_model_card(doc) == (FIXTURES / "explanation_2010_card.md").read_text()


@pytest.mark.parametrize(
    ("record", "name"),
    [
        (TrainingManifest, "training_manifest.json"),
        (EvaluationReport, "evaluation_against_champion.json"),
        (PromotionRecord, "promotion_v2_against_champion.json"),
        (PromotionRecord, "promotion_latest_noop.json"),
        (DriftSummary, "drift_report_2010.json"),
        (ProductionEvaluation, "production_evaluation_2010.json"),
        (Lineage, "explanation_2010.json"),
    ],
)
def test_records_round_trip_at_the_current_schema_version(record: type, name: str) -> None:
    old = read(record, name)
    again = record.from_dict(json.loads(json.dumps(old.to_dict(), default=str)), origin="round trip")
    assert again.schema_version == record.SCHEMA == (2 if record is TrainingManifest else 1)
    assert again == at_current_schema(old)


def test_a_manifest_before_content_versions_reads_with_none_and_a_new_one_keeps_them() -> None:
    old = read(TrainingManifest, "mlflow_training_manifest_v2.json")
    assert old.content_versions == {}
    new = dataclasses.replace(old, content_versions={"1974": "7147f7976099480e", "2010": "0123456789abcdef"})
    again = TrainingManifest.from_json(new.to_json(), origin="round trip")
    assert again.content_versions == {"1974": "7147f7976099480e", "2010": "0123456789abcdef"}
    assert again.schema_version == 2


def at_current_schema(record: object) -> object:
    """``record`` and the records inside it as they read back after a write: at the current schema."""
    nested = {
        f.name: at_current_schema(getattr(record, f.name))
        for f in dataclasses.fields(record)
        if hasattr(getattr(record, f.name), "SCHEMA")
    }
    return dataclasses.replace(record, schema_version=record.SCHEMA, **nested)


def _without(document: dict, *path: str) -> dict:
    document = json.loads(json.dumps(document))
    target = document
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return document


@pytest.mark.parametrize(
    ("record", "name", "document", "message"),
    [
        (
            TrainingManifest,
            "training_manifest.json",
            _without(fixture("training_manifest.json"), "training_fingerprint"),
            "training_manifest.json: training manifest field 'training_fingerprint' is missing",
        ),
        (
            PromotionRecord,
            "promotion_v1.json",
            {**fixture("promotion_v1_first_model.json"), "outcome": "maybe"},
            "promotion_v1.json: promotion decision field 'outcome' must be one of promoted, rejected, conflict",
        ),
        (
            PromotionRecord,
            "promotion_v1.json",
            _without(fixture("promotion_v1_first_model.json"), "decision", "candidate_version"),
            "promotion_v1.json: promotion decision.decision field 'candidate_version' is missing",
        ),
        (
            EvaluationReport,
            "evaluation.json",
            {**fixture("evaluation_first_model.json"), "schema_version": 7},
            "evaluation.json: evaluation report field 'schema_version' is 7, written by a newer mlops",
        ),
        (
            DriftSummary,
            "2010.json",
            [1, 2],
            "2010.json: a drift summary must be a JSON object, got list",
        ),
        (
            EvaluationReport,
            "evaluation.json",
            _without(fixture("evaluation_first_model.json"), "candidate", "evaluation", "rows"),
            "evaluation.json: cannot read the record",
        ),
    ],
)
def test_a_bad_record_names_the_file_and_the_field(record: type, name: str, document: object, message: str) -> None:
    with pytest.raises(RecordError) as raised:
        record.from_dict(document, origin=name)
    assert str(raised.value).startswith(message)


def test_a_record_that_is_not_json_names_the_file() -> None:
    with pytest.raises(RecordError, match=r"^runs:/abc/mlops/decision\.json: not valid JSON"):
        PromotionRecord.from_json(b"{half", origin="runs:/abc/mlops/decision.json")
