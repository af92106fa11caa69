"""The records the product keeps in the lake and in MLflow, typed and versioned.

One type per record, used by the step that writes it and by every reader (the next step of the
run, ``mlops explain``, the model card, the demo): the training manifest, the evaluation report,
the promotion decision, a batch's drift summary and production evaluation, and the lineage
document ``explain`` builds.

Each record carries a ``schema_version``. Readers take every version up to the current one,
including files written before the field existed (version 0: the same fields without it), ignore
fields they do not know, and refuse a newer version or a missing field with an error that names
the file and the field. Pure: no Dagster, no I/O, no ML library.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

from mlops_assets.ml.evaluation import Evaluation
from mlops_assets.ml.promotion import BatchEvidence, Decision, GateResult

Outcome = Literal["promoted", "rejected", "conflict"]
OUTCOMES: tuple[Outcome, ...] = ("promoted", "rejected", "conflict")


class RecordError(ValueError):
    """A record that cannot be read; the message names the file and the field."""


class _Fields:
    """Reads the fields of one record document, naming the file and the field when one is bad."""

    def __init__(self, data: object, *, record: str, origin: str, current: int | None = None) -> None:
        if not isinstance(data, Mapping):
            raise RecordError(f"{origin}: a {record} must be a JSON object, got {type(data).__name__}")
        self.data, self.record, self.origin = data, record, origin
        if current is not None:
            version = data.get("schema_version", 0)
            if not isinstance(version, int) or version < 0:
                raise self.error("schema_version", f"must be a non-negative integer, got {version!r}")
            if version > current:
                raise self.error(
                    "schema_version",
                    f"is {version}, written by a newer mlops; this one reads {self.record} versions up to {current}",
                )

    def error(self, name: str, problem: str) -> RecordError:
        return RecordError(f"{self.origin}: {self.record} field {name!r} {problem}")

    def has(self, name: str) -> bool:
        return name in self.data

    def required(self, name: str) -> Any:
        if name not in self.data:
            raise self.error(name, "is missing")
        return self.data[name]

    def optional(self, name: str, default: Any = None) -> Any:
        value = self.data.get(name)
        return default if value is None else value

    def text(self, name: str) -> str:
        return str(self.required(name))

    def mapping(self, name: str, *, required: bool = True) -> Mapping[str, Any]:
        value = self.required(name) if required else self.data.get(name) or {}
        if not isinstance(value, Mapping):
            raise self.error(name, f"must be a JSON object, got {type(value).__name__}")
        return value

    def sequence(self, name: str, *, required: bool = True) -> Sequence[Any]:
        value = self.required(name) if required else self.data.get(name) or []
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise self.error(name, f"must be a JSON list, got {type(value).__name__}")
        return value

    def nested(self, name: str, record: str) -> _Fields:
        return _Fields(self.required(name), record=f"{self.record}.{record}", origin=self.origin)


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _parse(data: Any, origin: str, parse: Any) -> Any:
    """Runs ``parse``; a missing key or a wrong type deeper in the document names the file."""
    try:
        return parse()
    except RecordError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise RecordError(f"{origin}: cannot read the record ({type(e).__name__}: {e})") from e


def load_json(data: bytes | str, *, origin: str) -> Any:
    """A record file's JSON, or a ``RecordError`` naming the file."""
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise RecordError(f"{origin}: not valid JSON ({e})") from e


@dataclass(frozen=True)
class TrainingManifest:
    """What a training window holds: the batches, each batch's fingerprint and raw content version
    (the stored ``raw_batch`` file it came from), the window's training fingerprint and the
    train/holdout sizes. Kept in the lake and as an artifact of each version.

    Version 2 added ``content_versions``; a version-1 manifest reads with none (unknown).
    """

    SCHEMA: ClassVar[int] = 2

    batches: tuple[str, ...]
    fingerprints: dict[str, str]
    training_fingerprint: str
    train_rows: int
    holdout_rows: int
    content_versions: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.SCHEMA,
            "batches": list(self.batches),
            "fingerprints": dict(self.fingerprints),
            "content_versions": dict(self.content_versions),
            "training_fingerprint": self.training_fingerprint,
            "rows": {"train": self.train_rows, "holdout": self.holdout_rows},
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True).encode()

    @classmethod
    def from_dict(cls, data: Any, *, origin: str) -> Self:
        f = _Fields(data, record="training manifest", origin=origin, current=cls.SCHEMA)
        rows = f.mapping("rows")
        fingerprints = f.mapping("fingerprints")
        return cls(
            batches=tuple(str(b) for b in f.sequence("batches")),
            fingerprints={str(k): str(v) for k, v in fingerprints.items()},
            training_fingerprint=f.text("training_fingerprint"),
            train_rows=int(rows.get("train", 0)),
            holdout_rows=int(rows.get("holdout", 0)),
            content_versions={str(k): str(v) for k, v in f.mapping("content_versions", required=False).items()},
            schema_version=f.optional("schema_version", 0),
        )

    @classmethod
    def from_json(cls, data: bytes | str, *, origin: str) -> Self:
        return cls.from_dict(load_json(data, origin=origin), origin=origin)


@dataclass(frozen=True)
class RawVersion:
    """The batch's newest landed raw content version (``raw_batch/<batch>/landed.json``): which
    one, and the file or source it came from.

    ``raw_batch`` writes it after the version's own file, so it never names data that is not
    there; ``validated_batch`` checks the version it names. Earlier versions stay stored.
    """

    SCHEMA: ClassVar[int] = 1

    batch: str
    content_version: str
    origin: str
    schema_version: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.SCHEMA,
            "batch": self.batch,
            "content_version": self.content_version,
            "origin": self.origin,
        }

    @classmethod
    def from_dict(cls, data: Any, *, origin: str) -> Self:
        f = _Fields(data, record="raw version", origin=origin, current=cls.SCHEMA)
        return cls(
            batch=f.text("batch"),
            content_version=f.text("content_version"),
            origin=f.text("origin"),
            schema_version=f.optional("schema_version", 0),
        )


@dataclass(frozen=True)
class ScoredVersion:
    """One version's evaluation on the holdout."""

    version: str
    evaluation: Evaluation


@dataclass(frozen=True)
class EvaluationReport:
    """The candidate and the champion (if any) scored on the same holdout, by one run."""

    SCHEMA: ClassVar[int] = 1

    candidate: ScoredVersion
    champion: ScoredVersion | None
    holdout_rows: int
    # Whose holdout it was, and the run that scored it (absent in version 0).
    training_fingerprint: str | None = None
    dagster_run_id: str | None = None
    schema_version: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        def scored(s: ScoredVersion | None) -> dict[str, Any] | None:
            return None if s is None else {"version": s.version, "evaluation": s.evaluation.to_dict()}

        return {
            "schema_version": self.SCHEMA,
            "candidate": scored(self.candidate),
            "champion": scored(self.champion),
            "holdout_rows": self.holdout_rows,
            "training_fingerprint": self.training_fingerprint,
            "dagster_run_id": self.dagster_run_id,
        }

    @classmethod
    def from_dict(cls, data: Any, *, origin: str) -> Self:
        f = _Fields(data, record="evaluation report", origin=origin, current=cls.SCHEMA)

        def scored(name: str) -> ScoredVersion | None:
            if f.optional(name) is None:
                return None
            s = f.nested(name, name)
            return ScoredVersion(
                version=s.text("version"),
                evaluation=_parse(data, origin, lambda: Evaluation.from_dict(dict(s.mapping("evaluation")))),
            )

        candidate = scored("candidate")
        if candidate is None:
            raise f.error("candidate", "is missing")
        return cls(
            candidate=candidate,
            champion=scored("champion"),
            holdout_rows=int(f.required("holdout_rows")),
            training_fingerprint=f.optional("training_fingerprint"),
            dagster_run_id=f.optional("dagster_run_id"),
            schema_version=f.optional("schema_version", 0),
        )


@dataclass(frozen=True)
class VersionMetrics:
    version: str
    metrics: dict[str, float | None]


@dataclass(frozen=True)
class EvaluationSummary:
    """The metrics a decision was made on."""

    holdout_rows: int | None
    candidate: VersionMetrics
    champion: VersionMetrics | None

    @classmethod
    def of(cls, report: EvaluationReport) -> Self:
        def metrics(s: ScoredVersion | None) -> VersionMetrics | None:
            return None if s is None else VersionMetrics(s.version, dict(s.evaluation.metrics))

        candidate = metrics(report.candidate)
        assert candidate is not None
        return cls(report.holdout_rows, candidate, metrics(report.champion))

    def rows(self) -> list[tuple[str, float | None, float | None]]:
        """(metric, candidate value, champion value) for every metric of the candidate."""
        champion = self.champion.metrics if self.champion else {}
        return [(m, v, champion.get(m)) for m, v in self.candidate.metrics.items()]


@dataclass(frozen=True)
class OverrideRequest:
    requested: bool = False
    reason: str = ""


def _decision_from_dict(f: _Fields) -> Decision:
    gates = [GateResult(**_known(GateResult, g)) for g in f.sequence("gates", required=False)]
    return Decision(
        promote=bool(f.required("promote")),
        candidate_version=f.text("candidate_version"),
        champion_version=f.optional("champion_version"),
        gates=gates,
        deltas=dict(f.mapping("deltas", required=False)),
        reasons=[str(r) for r in f.sequence("reasons", required=False)],
        overridden=bool(f.optional("overridden", False)),
        override_reason=str(f.optional("override_reason", "")),
    )


def _metrics_of(value: Any) -> VersionMetrics | None:
    if value is None:
        return None
    return VersionMetrics(str(value["version"]), dict(value.get("metrics") or {}))


@dataclass(frozen=True)
class PromotionRecord:
    """The decision about one version: its gates and reasons, the data and metrics it was made on,
    and what happened (promoted, rejected, or a conflict with a concurrent champion move).

    Kept as ``promotion/v<version>.json`` and ``promotion/latest.json`` in the lake and as
    ``mlops/decision.json`` on the version's MLflow run. Version 0 came in two shapes: this one
    (``promotion/v<N>.json``) and the bare decision plus outcome (``promotion/latest.json``); both
    read back as this type.
    """

    SCHEMA: ClassVar[int] = 1

    version: str
    at: str
    dagster_run_id: str | None
    outcome: Outcome
    decision: Decision
    model: str | None = None
    training_data: tuple[BatchEvidence, ...] = ()
    override: OverrideRequest = field(default_factory=OverrideRequest)
    evaluation: EvaluationSummary | None = None
    # ChampionMove.to_record() of the move this decision made, when it made one.
    champion_move: dict[str, Any] | None = None
    conflict: str | None = None
    schema_version: int = SCHEMA

    @property
    def promoted(self) -> bool:
        return self.outcome == "promoted"

    def settled(self, outcome: Outcome, **changes: Any) -> PromotionRecord:
        return dataclasses.replace(self, outcome=outcome, **changes)

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "schema_version": self.SCHEMA,
            "model": self.model,
            "version": self.version,
            "at": self.at,
            "dagster_run_id": self.dagster_run_id,
            "outcome": self.outcome,
            "decision": self.decision.to_dict(),
            "training_data": [dataclasses.asdict(e) for e in self.training_data],
            "override": dataclasses.asdict(self.override),
            "evaluation": None if self.evaluation is None else dataclasses.asdict(self.evaluation),
        }
        if self.champion_move is not None:
            document["champion_move"] = self.champion_move
        if self.conflict is not None:
            document["conflict"] = self.conflict
        return document

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, default=str)

    @classmethod
    def from_dict(cls, data: Any, *, origin: str) -> Self:
        f = _Fields(data, record="promotion decision", origin=origin, current=cls.SCHEMA)
        if not f.has("decision") and f.has("promote"):
            return cls._from_flat(f)
        decision = _decision_from_dict(f.nested("decision", "decision"))
        evaluation = f.optional("evaluation")

        def summary() -> EvaluationSummary:
            candidate = _metrics_of(evaluation["candidate"])
            assert candidate is not None
            return EvaluationSummary(evaluation.get("holdout_rows"), candidate, _metrics_of(evaluation.get("champion")))

        override = f.mapping("override", required=False)
        outcome = f.text("outcome")
        if outcome not in OUTCOMES:
            raise f.error("outcome", f"must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        return cls(
            version=f.text("version"),
            at=f.text("at"),
            dagster_run_id=f.optional("dagster_run_id"),
            outcome=outcome,  # type: ignore[arg-type]
            decision=decision,
            model=f.optional("model"),
            training_data=tuple(
                _parse(
                    data,
                    origin,
                    lambda: [
                        BatchEvidence(**_known(BatchEvidence, e)) for e in f.sequence("training_data", required=False)
                    ],
                )
            ),
            override=OverrideRequest(bool(override.get("requested", False)), str(override.get("reason", ""))),
            evaluation=None if evaluation is None else _parse(data, origin, summary),
            champion_move=f.optional("champion_move"),
            conflict=f.optional("conflict"),
            schema_version=f.optional("schema_version", 0),
        )

    @classmethod
    def _from_flat(cls, f: _Fields) -> Self:
        decision = _decision_from_dict(f)
        return cls(
            version=decision.candidate_version,
            at=f.text("at"),
            dagster_run_id=f.optional("dagster_run_id"),
            outcome=str(f.optional("outcome", "promoted" if decision.promote else "rejected")),  # type: ignore[arg-type]
            decision=decision,
            override=OverrideRequest(decision.overridden, decision.override_reason),
            schema_version=0,
        )

    @classmethod
    def from_json(cls, data: bytes | str, *, origin: str) -> Self:
        return cls.from_dict(load_json(data, origin=origin), origin=origin)


@dataclass(frozen=True)
class DriftSummary:
    """How far one batch drifted from the training data of the version that scored it."""

    SCHEMA: ClassVar[int] = 1

    batch: str
    model_version: str
    drifted_share: float
    dataset_drift: bool
    # Per column, as the drift engine reports it (column, method, score, threshold, drifted, ...).
    columns: tuple[dict[str, Any], ...] = ()
    schema_version: int = SCHEMA

    @property
    def drifted_columns(self) -> list[str]:
        return [str(c["column"]) for c in self.columns if c.get("drifted")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.SCHEMA,
            "batch": self.batch,
            "model_version": self.model_version,
            "drifted_share": self.drifted_share,
            "dataset_drift": self.dataset_drift,
            "columns": [dict(c) for c in self.columns],
        }

    @classmethod
    def from_dict(cls, data: Any, *, origin: str) -> Self:
        f = _Fields(data, record="drift summary", origin=origin, current=cls.SCHEMA)
        return cls(
            batch=f.text("batch"),
            model_version=f.text("model_version"),
            drifted_share=float(f.required("drifted_share")),
            dataset_drift=bool(f.required("dataset_drift")),
            columns=tuple(dict(c) for c in f.sequence("columns", required=False)),
            schema_version=f.optional("schema_version", 0),
        )


@dataclass(frozen=True)
class ProductionEvaluation:
    """The champion's metrics and fairness on one labelled production batch."""

    SCHEMA: ClassVar[int] = 1

    model_version: str
    evaluation: Evaluation
    schema_version: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {**self.evaluation.to_dict(), "model_version": self.model_version, "schema_version": self.SCHEMA}

    @classmethod
    def from_dict(cls, data: Any, *, origin: str) -> Self:
        f = _Fields(data, record="production evaluation", origin=origin, current=cls.SCHEMA)
        evaluation = {k: v for k, v in data.items() if k not in ("model_version", "schema_version")}
        return cls(
            model_version=f.text("model_version"),
            evaluation=_parse(data, origin, lambda: Evaluation.from_dict(evaluation)),
            schema_version=f.optional("schema_version", 0),
        )

    def worst(self, gap: str) -> float | None:
        return self.evaluation.worst(gap)


@dataclass(frozen=True)
class PredictionsSubject:
    """A batch's predictions, the subject of ``mlops explain --batch``."""

    batch: str
    rows: int
    model_version: str
    versions: tuple[str, ...]
    scored_at: str | None = None
    scored_by_run: str | None = None


@dataclass(frozen=True)
class VersionSubject:
    """A registered version, the subject of ``mlops explain --version``."""

    version: str


@dataclass(frozen=True)
class VersionFacts:
    """What the registry says about a version."""

    version: str
    uri: str
    mlflow_run_id: str
    model_id: str | None
    family: str
    registered_at: str | None
    training_dagster_run_id: str | None
    code_version: str | None
    training_fingerprint: str | None
    aliases: tuple[str, ...]
    signature_inputs: tuple[str, ...]


@dataclass(frozen=True)
class BatchValidation:
    """Whether a training batch is validated data, from Dagster's event log."""

    ok: bool | None
    detail: str
    validated_at: str | None
    run_id: str | None
    passed: int | None
    total: int | None


@dataclass(frozen=True)
class BatchDrift:
    drifted_share: float | None
    dataset_drift: bool | None
    model_version: str | None

    @classmethod
    def of(cls, summary: DriftSummary) -> Self:
        return cls(summary.drifted_share, summary.dataset_drift, summary.model_version)


@dataclass(frozen=True)
class TrainingBatch:
    batch: str
    fingerprint: str | None
    # None without a Dagster instance to ask.
    validation: BatchValidation | None = None
    # None when the batch was never drift-checked.
    drift: BatchDrift | None = None


@dataclass(frozen=True)
class SuiteSize:
    expectations: int
    blocking: int


@dataclass(frozen=True)
class TrainingLineage:
    """The training data of a version: its batches with their validation and drift."""

    batches: tuple[TrainingBatch, ...] = ()
    train_rows: int | None = None
    holdout_rows: int | None = None
    training_fingerprint: str | None = None
    suite: SuiteSize | None = None

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"batches": [dataclasses.asdict(b) for b in self.batches]}
        if self.train_rows is not None or self.holdout_rows is not None:
            document["rows"] = {"train": self.train_rows, "holdout": self.holdout_rows}
        if self.training_fingerprint is not None:
            document["training_fingerprint"] = self.training_fingerprint
        if self.suite is not None:
            document["suite"] = dataclasses.asdict(self.suite)
        return document

    @classmethod
    def from_dict(cls, f: _Fields) -> Self:
        def batch(b: Mapping[str, Any]) -> TrainingBatch:
            validation, drift = b.get("validation"), b.get("drift")
            return TrainingBatch(
                batch=str(b["batch"]),
                fingerprint=b.get("fingerprint"),
                validation=None if validation is None else BatchValidation(**_known(BatchValidation, validation)),
                drift=None if drift is None else BatchDrift(**_known(BatchDrift, drift)),
            )

        rows = f.mapping("rows", required=False)
        suite = f.optional("suite")
        return cls(
            batches=tuple(_parse(f.data, f.origin, lambda: [batch(b) for b in f.sequence("batches")])),
            train_rows=rows.get("train"),
            holdout_rows=rows.get("holdout"),
            training_fingerprint=f.optional("training_fingerprint"),
            suite=None if not suite else SuiteSize(int(suite["expectations"]), int(suite["blocking"])),
        )


@dataclass(frozen=True)
class HistoryEntry:
    """One recorded move of alias ``champion`` (``ChampionMove.to_record()`` plus its key)."""

    at: str
    from_version: str | None
    to_version: str
    kind: str
    reason: str
    dagster_run_id: str | None
    actor: str
    override: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    state: str = "done"
    key: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(**_known(cls, {**data, "at": str(data["at"])}))


@dataclass(frozen=True)
class Lineage:
    """Which version made a batch's predictions (or a version alone), what data trained it and
    how it passed testing: what ``mlops explain`` prints and the model card shows."""

    SCHEMA: ClassVar[int] = 1

    model: str
    subject: PredictionsSubject | VersionSubject
    version: VersionFacts
    training_data: TrainingLineage
    decision: PromotionRecord | None
    champion_history: tuple[HistoryEntry, ...]
    champion_now: str | None
    notes: tuple[str, ...] = ()
    # Only for a batch's predictions: that batch's drift (None when it has no drift report).
    batch_drift: DriftSummary | None = None
    schema_version: int = SCHEMA

    @property
    def of_batch(self) -> bool:
        return isinstance(self.subject, PredictionsSubject)

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "schema_version": self.SCHEMA,
            "model": self.model,
            "subject": dataclasses.asdict(self.subject),
            "version": dataclasses.asdict(self.version),
            "training_data": self.training_data.to_dict(),
            "decision": None if self.decision is None else self.decision.to_dict(),
            "champion_history": [dataclasses.asdict(m) for m in self.champion_history],
            "champion_now": self.champion_now,
            "notes": list(self.notes),
        }
        if self.of_batch:
            document["batch_drift"] = None if self.batch_drift is None else self.batch_drift.to_dict()
        return document

    @classmethod
    def from_dict(cls, data: Any, *, origin: str) -> Self:
        f = _Fields(data, record="lineage", origin=origin, current=cls.SCHEMA)
        subject = f.mapping("subject")
        decision, drift = f.optional("decision"), f.optional("batch_drift")
        version = f.mapping("version")

        def build() -> Self:
            return cls(
                model=f.text("model"),
                subject=(
                    PredictionsSubject(
                        **{**_known(PredictionsSubject, subject), "versions": tuple(subject["versions"])}
                    )
                    if "batch" in subject
                    else VersionSubject(str(subject["version"]))
                ),
                version=VersionFacts(
                    **{
                        **_known(VersionFacts, version),
                        "aliases": tuple(version["aliases"]),
                        "signature_inputs": tuple(version["signature_inputs"]),
                    }
                ),
                training_data=TrainingLineage.from_dict(f.nested("training_data", "training_data")),
                decision=None if decision is None else PromotionRecord.from_dict(decision, origin=origin),
                champion_history=tuple(HistoryEntry.from_dict(m) for m in f.sequence("champion_history")),
                champion_now=f.optional("champion_now"),
                notes=tuple(str(n) for n in f.sequence("notes", required=False)),
                batch_drift=None if drift is None else DriftSummary.from_dict(drift, origin=origin),
                schema_version=f.optional("schema_version", 0),
            )

        return _parse(data, origin, build)
