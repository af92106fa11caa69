"""The names that cross module boundaries, defined once.

Producers and consumers of a name (an asset that writes a metadata key and the sensor that reads
it, the step that logs an MLflow artifact and ``mlops explain`` that reads it back) both import it
from here, so renaming one side renames the other. Nothing here imports anything heavier than the
standard library: every layer (assets, sensors, resources, ml) may import it.

The public surface among these names (run tags, registered-model aliases, MLflow tags) is also
documented in the README; change one only with a migration note there.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal


class Asset(StrEnum):
    """Asset nouns: an asset's key is ``[<model name>, <noun>]`` and its lake folder is the noun."""

    SOURCE_BATCHES = "source_batches"
    RAW_BATCH = "raw_batch"
    VALIDATION_SUITE = "validation_suite"
    VALIDATED_BATCH = "validated_batch"
    FEATURES = "features"
    TRAINING_DATASET = "training_dataset"
    MODEL = "model"
    EVALUATION = "evaluation"
    PROMOTION = "promotion"
    PREDICTIONS = "predictions"
    DRIFT_REPORT = "drift_report"
    CHAMPION_ROLLBACK = "champion_rollback"
    MODEL_CARD = "model_card"
    EXPLANATION = "explanation"


class LakeFolder(StrEnum):
    """Lake folders that are no asset of their own (an asset's folder is its ``Asset`` noun)."""

    # A scored batch's metrics and fairness, written by ``predictions``.
    PRODUCTION_EVALUATION = "production_evaluation"
    # Per-epoch training checkpoints of torch models, keyed by training fingerprint.
    CHECKPOINTS = "checkpoints"


def op_name(model: str, asset: Asset | str) -> str:
    """The op (step) name Dagster derives from asset key ``[model, asset]``: what run config keys on."""
    return f"{model}__{asset}"


def partitions_name(model: str) -> str:
    """The dynamic partitions definition holding a model's batches."""
    return f"{model}_batches"


class Job:
    """Job names, per model."""

    @staticmethod
    def score_batch(model: str) -> str:
        return f"{model}_score_batch_job"

    @staticmethod
    def retrain(model: str) -> str:
        return f"{model}_retrain_job"

    @staticmethod
    def recheck(model: str) -> str:
        return f"{model}_recheck_job"

    @staticmethod
    def rollback(model: str) -> str:
        return f"{model}_rollback_job"


# Dagster run tags (public: the README documents them).
TAG_MODEL: Final = "mlops/model"
TAG_TRIGGER: Final = "mlops/trigger"
TAG_BATCH: Final = "mlops/batch"
TAG_LANDING_FILE: Final = "mlops/landing_file"
TAG_REASON: Final = "mlops/reason"
# On a retrain requested by a check sensor: the ids of the failed check records it acts on.
TAG_CHECK_RECORDS: Final = "mlops/check_records"
# Dagster's own tags: a run's partition, and the runtime after which run monitoring ends it.
TAG_MAX_RUNTIME: Final = "dagster/max_runtime"
TAG_PARTITION: Final = "dagster/partition"

Trigger = Literal["landing", "drift", "fairness", "schedule", "manual"]


class Sensor:
    """Sensor names, per model."""

    @staticmethod
    def landing(model: str) -> str:
        return f"{model}_landing_sensor"

    @staticmethod
    def retrain(model: str, trigger: str) -> str:
        """``drift`` and ``fairness`` watch their checks; ``cadence`` only counts scored batches."""
        return f"{model}_{trigger}_sensor"

    @staticmethod
    def check_alert(model: str) -> str:
        return f"{model}_check_alert_sensor"

    @staticmethod
    def run_watchdog(model: str) -> str:
        return f"{model}_run_watchdog_sensor"


# Registered-model aliases (public).
CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"


class MlflowTag(StrEnum):
    """Tags on MLflow model versions, runs and registered models (public: the README lists them)."""

    TRAINING_FINGERPRINT = "mlops.training_fingerprint"
    DAGSTER_RUN_ID = "mlops.dagster_run_id"
    CODE_VERSION = "mlops.code_version"
    TRAINING_BATCHES = "mlops.training_batches"
    MODEL_FAMILY = "mlops.model_family"
    PROMOTED = "mlops.promoted"
    ROLLED_BACK_TO = "mlops.rolled_back_to"
    # On the registered model: the latest champion move, for a glance in the MLflow UI.
    LAST_CHAMPION_MOVE = "mlops.champion_history"
    # On a run: the version it registered (set when a crashed registration is completed).
    REGISTERED_VERSION = "mlops.registered_version"


# On the registered model: one tag per champion move; the suffix sorts chronologically.
CHAMPION_MOVE_TAG_PREFIX: Final = "mlops.champion_move."

# MLflow run artifacts the product logs, all under one folder of the run.
ARTIFACT_DIR: Final = "mlops"


class Artifact(StrEnum):
    """File names of the run artifacts under ``ARTIFACT_DIR``; ``artifact_path`` gives the full path."""

    TRAINING_MANIFEST = "training_manifest.json"
    VALIDATION_SUITE = "validation_suite.json"
    REFERENCE_PROFILE = "reference_profile.bin"
    DECISION = "decision.json"
    MODEL_CARD = "model_card.md"


def artifact_path(artifact: Artifact) -> str:
    """The artifact's path inside its MLflow run, e.g. ``mlops/decision.json``."""
    return f"{ARTIFACT_DIR}/{artifact}"


class Meta(StrEnum):
    """Metadata keys of materializations and check results that another module reads."""

    # On every per-batch check result: the batch it is about (daemon runs leave the check
    # evaluation's own ``partition`` empty).
    BATCH = "batch"
    FINGERPRINT = "fingerprint"
    TRAINING_FINGERPRINT = "training_fingerprint"
    WINDOW_UNTIL = "window_until"
    EXPECTATIONS_PASSED = "expectations_passed"
    EXPECTATIONS_TOTAL = "expectations_total"
    DECISION = "decision"
    MODEL_VERSION = "model_version"
    FROM_VERSION = "from_version"
    TO_VERSION = "to_version"
    REASON = "reason"
    MODEL_CARD = "model_card"


# Asset checks that sensors watch.
DRIFT_CHECK: Final = "drift_within_tolerance"


def column_drift_check(column: str) -> str:
    return f"{column}_no_drift"


class Fairness:
    """The two fairness gaps: the production check on ``predictions`` and the spec's limit of each."""

    DEMOGRAPHIC_PARITY: Final = "demographic_parity_difference"
    EQUALIZED_ODDS: Final = "equalized_odds_difference"
    GAPS: Final = (DEMOGRAPHIC_PARITY, EQUALIZED_ODDS)
    # check name -> (gap, attribute of the spec's gates holding its limit)
    CHECKS: Final = {
        "parity_gap_within_limit": (DEMOGRAPHIC_PARITY, "max_demographic_parity_difference"),
        "equalized_odds_within_limit": (EQUALIZED_ODDS, "max_equalized_odds_difference"),
    }
