"""The names that cross module boundaries, defined once.

Producers and consumers of a name (an asset that writes a metadata key and the sensor that reads
it, the step that logs an MLflow artifact and ``mlops explain`` that reads it back) both import it
from here, so renaming one side renames the other. Nothing here imports anything heavier than the
standard library: every layer (assets, sensors, resources, ml) may import it.

Names are plain ``str`` constants grouped in classes, not enums: they go into Dagster asset keys,
metadata and tags, which Dagster's serializer refuses as enum members.

The public surface among these names (run tags, registered-model aliases, MLflow tags) is also
documented in the README; change one only with a migration note there.
"""

from __future__ import annotations

from typing import Final, Literal


class Asset:
    """Asset nouns: an asset's key is ``[<model name>, <noun>]`` and its lake folder is the noun."""

    SOURCE_BATCHES: Final = "source_batches"
    RAW_BATCH: Final = "raw_batch"
    VALIDATION_SUITE: Final = "validation_suite"
    VALIDATED_BATCH: Final = "validated_batch"
    FEATURES: Final = "features"
    TRAINING_DATASET: Final = "training_dataset"
    MODEL: Final = "model"
    EVALUATION: Final = "evaluation"
    PROMOTION: Final = "promotion"
    PREDICTIONS: Final = "predictions"
    DRIFT_REPORT: Final = "drift_report"
    CHAMPION_ROLLBACK: Final = "champion_rollback"
    MODEL_CARD: Final = "model_card"
    EXPLANATION: Final = "explanation"
    # Per-row contributions of each input column to the scoring version's raw output.
    ATTRIBUTIONS: Final = "attributions"
    # Per model: which version serves online, where, with what canary and shadow settings.
    DEPLOYMENT: Final = "deployment"


class LakeFolder:
    """Lake folders that are no asset of their own (an asset's folder is its ``Asset`` noun)."""

    # A scored batch's metrics and fairness, written by ``predictions``.
    PRODUCTION_EVALUATION: Final = "production_evaluation"
    # Per-epoch training checkpoints of torch models, keyed by training fingerprint.
    CHECKPOINTS: Final = "checkpoints"
    # The HTML evaluation report of each promotion decision (``evaluation_report_file``).
    EVALUATION_REPORT: Final = "evaluation_report"
    # The online request log: one closed Parquet file per served batch (``served-...``).
    REQUEST_LOG: Final = "request_log"


class ServedColumn:
    """Columns of a request-log file besides the model's input and sensitive columns.

    The same file is landed as a batch of the model, so these names must not be feature names
    (the request log refuses a spec where one is).
    """

    REQUEST_ID: Final = "request_id"
    RECEIVED_AT: Final = "received_at"
    CHAMPION_VERSION: Final = "champion_version"
    CHAMPION_PROBA: Final = "champion_proba"
    ROUTE: Final = "route"
    CHALLENGER_VERSION: Final = "challenger_version"
    CHALLENGER_PROBA: Final = "challenger_proba"


# Values of ``ServedColumn.ROUTE``: which model's answer the client got.
ROUTE_CHAMPION: Final = "champion"
ROUTE_CANARY: Final = "canary"
# Batch names of request-log files start so: ``served-<UTC time>-<replica>-<seq>``.
SERVED_BATCH_PREFIX: Final = "served"


class TrainingFile:
    """The files of one training window in the lake, under ``training_dataset/<fingerprint>/``."""

    TRAIN: Final = "train"
    HOLDOUT: Final = "holdout"
    MANIFEST: Final = "manifest"


def training_file(fingerprint: str, file: str) -> str:
    """The lake partition of one file of the window with training fingerprint ``fingerprint``.

    Keyed by fingerprint so that overlapping retrains of other windows never overwrite the data a
    version was trained on: the fingerprint tag on a version names exactly these files.
    """
    return f"{fingerprint}/{file}"


def raw_version_file(batch: str, content_version: str) -> str:
    """The lake partition (under ``raw_batch/``, ext ``parquet``) of one content version of a batch.

    Keyed by content, so a re-landed batch is stored beside the earlier versions and never over
    them: a bad re-landing loses nothing, and a model's lineage keeps naming data that exists.
    """
    return f"{batch}/{content_version}"


def raw_landed_record(batch: str) -> str:
    """The lake partition (under ``raw_batch/``, ext ``json``) of the batch's newest landed version
    (a ``RawVersion``): what ``validated_batch`` checks next."""
    return f"{batch}/landed"


def version_record(version: str) -> str:
    """The lake partition of a per-version document (``promotion/v3.json``, ``model_card/v3.md``)."""
    return f"v{version}"


def run_record(run_id: str) -> str:
    """The lake partition of a document one run writes for the next steps of the same run."""
    return f"run-{run_id}"


def figure_file(run_id: str, figure: str) -> str:
    """The lake partition (under ``evaluation/``, ext ``png``) of one figure of a run's evaluation.

    Keyed by the Dagster run like the evaluation document itself, so the promotion of the same run
    puts exactly the figures of the evaluation it decides on into its report.
    """
    return f"{run_record(run_id)}/{figure}"


def evaluation_report_file(version: str, run_id: str) -> str:
    """The lake partition (under ``evaluation_report/``, ext ``html``) of one decision's report.

    One file per decision (the deciding run), grouped by version: a version decided twice (a
    rejection, then an override) keeps both reports.
    """
    return f"{version_record(version)}/{run_record(run_id)}"


def op_name(model: str, asset: str) -> str:
    """The op (step) name Dagster derives from asset key ``[model, asset]``: what run config keys on."""
    return f"{model}__{asset}"


def serve_service(model: str) -> str:
    """The Kubernetes Deployment and Service of ``mlops serve <model>`` (deploy/k8s/): a DNS label."""
    return "mlops-serve-" + model.replace("_", "-")


# Port ``mlops serve`` listens on unless told otherwise (``--port``).
SERVE_PORT: Final = 8080
# Health path of ``mlops serve``: ready only once a model is loaded.
SERVE_HEALTH_PATH: Final = "/health"
# Where clients reach the served model, when it differs from the defaults (the deployment asset shows it).
SERVE_URL_ENV: Final = "MLOPS_SERVE_URL"


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
    def drift_report(model: str) -> str:
        """Renders one batch's Evidently HTML report on demand."""
        return f"{model}_drift_report_job"

    @staticmethod
    def rollback(model: str) -> str:
        return f"{model}_rollback_job"

    @staticmethod
    def backfill(model: str) -> str:
        """Per-batch assets of many batches in one run, a step per batch."""
        return f"{model}_backfill_job"


def registry_pool(model: str) -> str:
    """The Dagster pool of every step that moves a model's champion (limit it to 1)."""
    return f"{model}_registry"


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
# Dagster's own metadata key for the run worker's pid on its "Started process for run" event.
DAGSTER_PID_METADATA: Final = "pid"

Trigger = Literal["landing", "drift", "fairness", "schedule", "manual"]
MANUAL: Final = "manual"


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

    @staticmethod
    def drift_report(model: str) -> str:
        """Launches the drift report job for the batches that get an Evidently HTML report."""
        return f"{model}_drift_report_sensor"


# Registered-model aliases (public).
CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"


class MlflowTag:
    """Tags on MLflow model versions, runs and registered models (public: the README lists them)."""

    TRAINING_FINGERPRINT: Final = "mlops.training_fingerprint"
    DAGSTER_RUN_ID: Final = "mlops.dagster_run_id"
    CODE_VERSION: Final = "mlops.code_version"
    TRAINING_BATCHES: Final = "mlops.training_batches"
    MODEL_FAMILY: Final = "mlops.model_family"
    PROMOTED: Final = "mlops.promoted"
    ROLLED_BACK_TO: Final = "mlops.rolled_back_to"
    # On the registered model: the latest champion move, for a glance in the MLflow UI.
    LAST_CHAMPION_MOVE: Final = "mlops.champion_history"
    # On a run: the version it registered (set when a crashed registration is completed).
    REGISTERED_VERSION: Final = "mlops.registered_version"
    # On a version: the digest of its model files as stored at registration; every load checks it.
    ARTIFACT_DIGEST: Final = "mlops.artifact_digest"


# On the registered model: one tag per champion move; the suffix sorts chronologically.
CHAMPION_MOVE_TAG_PREFIX: Final = "mlops.champion_move."

# MLflow run artifacts the product logs, all under one folder of the run.
ARTIFACT_DIR: Final = "mlops"


class Artifact:
    """File names of the run artifacts under ``ARTIFACT_DIR``; ``artifact_path`` gives the full path."""

    TRAINING_MANIFEST: Final = "training_manifest.json"
    VALIDATION_SUITE: Final = "validation_suite.json"
    REFERENCE_PROFILE: Final = "reference_profile.bin"
    DECISION: Final = "decision.json"
    MODEL_CARD: Final = "model_card.md"
    # The decision's HTML evaluation report (also in the lake, ``evaluation_report_file``).
    EVALUATION_REPORT: Final = "evaluation_report.html"
    # What explaining the version's scores needs from its training rows (``AttributionBaseline``).
    ATTRIBUTION_BASELINE: Final = "attribution_baseline.json"


# Run artifact folder (under ``ARTIFACT_DIR``) of the evaluation figures, one ``<name>.png`` each.
FIGURES_DIR: Final = "figures"


def artifact_path(artifact: str) -> str:
    """The artifact's path inside its MLflow run, e.g. ``mlops/decision.json``."""
    return f"{ARTIFACT_DIR}/{artifact}"


class Meta:
    """Metadata keys of materializations and check results that another module reads."""

    # On every per-batch check result: the batch it is about (daemon runs leave the check
    # evaluation's own ``partition`` empty).
    BATCH: Final = "batch"
    FINGERPRINT: Final = "fingerprint"
    # On ``raw_batch``, ``validated_batch`` and ``features``: the batch's raw content version.
    CONTENT_VERSION: Final = "content_version"
    # On ``raw_batch``: the batch's content version landed before this one (none: first landing).
    PREVIOUS_CONTENT_VERSION: Final = "previous_content_version"
    # On ``raw_batch``: registered versions trained on other content of the batch than this landing's.
    TRAINED_VERSIONS: Final = "trained_registered_versions"
    # On ``model``: the raw content version of each batch the version was trained on.
    TRAINING_CONTENT_VERSIONS: Final = "training_content_versions"
    # On ``model`` (a new version): the fit's wall seconds and the threads its run's share allowed.
    FIT_SECONDS: Final = "fit_seconds"
    FIT_THREADS: Final = "fit_threads"
    # On ``features``: how many of the batch's rows have a label (the others are scored only).
    LABELLED_ROWS: Final = "labelled_rows"
    # On ``predictions``: why the batch's performance and fairness were not evaluated.
    EVALUATION_SKIPPED: Final = "evaluation_skipped"
    TRAINING_FINGERPRINT: Final = "training_fingerprint"
    WINDOW_UNTIL: Final = "window_until"
    EXPECTATIONS_PASSED: Final = "expectations_passed"
    EXPECTATIONS_TOTAL: Final = "expectations_total"
    DECISION: Final = "decision"
    # On ``model``: the registered version; what the same run's evaluation scores.
    VERSION: Final = "version"
    MODEL_VERSION: Final = "model_version"
    FROM_VERSION: Final = "from_version"
    TO_VERSION: Final = "to_version"
    REASON: Final = "reason"
    MODEL_CARD: Final = "model_card"
    # On ``promotion``: the decision's HTML evaluation report in the lake.
    EVALUATION_REPORT: Final = "evaluation_report"
    # On ``drift_report``, an observation by the drift report job: the Evidently HTML report.
    DRIFT_HTML_REPORT: Final = "report"
    # On ``evaluation`` and the production fairness checks: groups left out of the gaps.
    TOO_SMALL_GROUPS: Final = "too_small_groups"
    # On ``drift_report``: whether the batch drifted (the drift report sensor renders those).
    DATASET_DRIFT: Final = "dataset_drift"
    # On ``drift_report``, before any version is champion: which version's training data it used.
    DRIFT_REFERENCE: Final = "drift_reference"


# Asset checks that sensors watch.
DRIFT_CHECK: Final = "drift_within_tolerance"
# On ``raw_batch``: the landing does not change the content of a batch a registered version trained on.
RELANDING_CHECK: Final = "relanding_keeps_trained_data"
# On ``attributions``: the batch's importance ranking against the training baseline's.
ATTRIBUTION_DRIFT_CHECK: Final = "attribution_drift"


def column_drift_check(column: str) -> str:
    return f"{column}_no_drift"


class Fairness:
    """The two fairness gaps: the production check on ``predictions`` and the spec's limit of each."""

    DEMOGRAPHIC_PARITY: Final = "demographic_parity_difference"
    EQUALIZED_ODDS: Final = "equalized_odds_difference"
    GAPS: Final = (DEMOGRAPHIC_PARITY, EQUALIZED_ODDS)
    # gap -> attribute of the spec's gates holding its limit (also the promotion gate's name)
    LIMIT_OF: Final = {
        DEMOGRAPHIC_PARITY: "max_demographic_parity_difference",
        EQUALIZED_ODDS: "max_equalized_odds_difference",
    }
    # check name -> (gap, attribute of the spec's gates holding its limit)
    CHECKS: Final = {
        "parity_gap_within_limit": (DEMOGRAPHIC_PARITY, LIMIT_OF[DEMOGRAPHIC_PARITY]),
        "equalized_odds_within_limit": (EQUALIZED_ODDS, LIMIT_OF[EQUALIZED_ODDS]),
    }

    @staticmethod
    def limits(gates: object) -> dict[str, float | None]:
        """Gap -> the limit the spec's gates (a ``GatesSpec``) set for it; None: no limit."""
        return {gap: getattr(gates, attribute) for gap, attribute in Fairness.LIMIT_OF.items()}


def names(group: type) -> dict[str, str]:
    """The constants of one group (``Asset``, ``Meta``, ...): attribute name -> value."""
    return {k: v for k, v in vars(group).items() if k.isupper() and isinstance(v, str)}
