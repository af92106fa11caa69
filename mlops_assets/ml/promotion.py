"""The blessing: whether a candidate may replace the champion, as data.

``decide`` is a pure function of the two evaluations (on the same holdout), the evidence about
the candidate's lineage (its signature, whether each training batch is validated data) and the
spec's gates. Its result records every gate with the value, the limit and the margin, so a
rejected candidate says which gate failed by how much.

An override promotes a candidate whose gates failed, but only with a reason, and the decision
keeps the failed gates, the override and its reason: nothing is bypassed silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mlops_assets.contract import Fairness
from mlops_assets.ml.evaluation import Evaluation
from mlops_assets.spec import METRICS, GatesSpec


@dataclass(frozen=True)
class GateResult:
    gate: str
    value: float | None
    limit: float
    passed: bool
    detail: str

    @property
    def spec_key(self) -> str | None:
        """The spec key that sets this gate's limit (None for the lineage gates, set by no key)."""
        if self.gate.startswith("max_regression_"):
            return f"gates.max_regression.{self.gate.removeprefix('max_regression_')}"
        if self.gate.startswith("min_"):
            return f"gates.min_metrics.{self.gate.removeprefix('min_')}"
        if self.gate.startswith("max_"):
            return f"gates.{self.gate}"
        return None


@dataclass(frozen=True)
class BatchEvidence:
    """Whether one training batch is data that passed validation, and why not."""

    batch: str
    validated: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    promote: bool
    candidate_version: str
    champion_version: str | None
    gates: list[GateResult] = field(default_factory=list)
    deltas: dict[str, float | None] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    overridden: bool = False
    override_reason: str = ""

    @property
    def failed_gates(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _floor_gate(metric: str, value: float | None, limit: float) -> GateResult:
    higher_is_better = METRICS[metric]
    if value is None:
        return GateResult(f"min_{metric}", None, limit, False, f"{metric} is undefined on the holdout")
    passed = value >= limit if higher_is_better else value <= limit
    relation = ">=" if higher_is_better else "<="
    return GateResult(
        f"min_{metric}",
        value,
        limit,
        passed,
        f"{metric} {value:.4f} {'meets' if passed else 'misses'} {relation} {limit:.4f} by {abs(value - limit):.4f}",
    )


def _regression_gate(metric: str, cand: float | None, champ: float | None, allowed: float) -> GateResult:
    if cand is None or champ is None:
        return GateResult(f"max_regression_{metric}", None, allowed, False, f"{metric} undefined")
    loss = (champ - cand) if METRICS[metric] else (cand - champ)
    passed = loss <= allowed
    return GateResult(
        f"max_regression_{metric}",
        loss,
        allowed,
        passed,
        f"{metric} {cand:.4f} vs champion {champ:.4f}: "
        + (f"loses {loss:.4f}" if loss > 0 else f"gains {-loss:.4f}")
        + f" (allowed loss {allowed:.4f})",
    )


def _fairness_gate(name: str, gap: float | None, limit: float | None, note: str = "") -> GateResult | None:
    if limit is None:
        return None
    if gap is None:
        return GateResult(
            f"max_{name}", None, limit, True, f"{name} undefined (fewer than two sensitive groups to compare){note}"
        )
    passed = gap <= limit
    return GateResult(
        f"max_{name}",
        gap,
        limit,
        passed,
        f"{name} {gap:.4f} {'within' if passed else 'exceeds'} limit {limit:.4f}{note}",
    )


def _signature_gate(has_signature: bool) -> GateResult:
    return GateResult(
        "signature_present",
        1.0 if has_signature else 0.0,
        1.0,
        has_signature,
        "the model logs an input signature"
        if has_signature
        else "the registered model has no input signature, so its inputs cannot be checked when it scores",
    )


def _training_data_gate(evidence: list[BatchEvidence]) -> GateResult:
    bad = [e for e in evidence if not e.validated]
    if not evidence:
        return GateResult("training_data_validated", None, 0.0, False, "the training manifest lists no batch")
    detail = (
        f"all {len(evidence)} training batches are validated data"
        if not bad
        else "; ".join(f"batch {e.batch}: {e.detail}" for e in bad)
    )
    return GateResult("training_data_validated", float(len(bad)), 0.0, not bad, detail)


def decide(
    *,
    candidate_version: str,
    candidate: Evaluation,
    champion_version: str | None,
    champion: Evaluation | None,
    gates: GatesSpec,
    has_signature: bool,
    training_data: list[BatchEvidence],
    override_reason: str | None = None,
) -> Decision:
    """Blesses the candidate when its lineage gates (signature, validated training data) and
    every absolute gate pass and, against a champion, every regression gate passes too. A first
    model needs no regression gate.

    Args:
        override_reason: promote even if gates fail; the decision records the failed gates and
            this reason. Must be non-empty when given.

    Raises:
        ValueError: an override without a reason.
    """
    if override_reason is not None and not override_reason.strip():
        raise ValueError("an override needs a non-empty reason")
    if champion_version == candidate_version:
        return Decision(False, candidate_version, champion_version, reasons=["candidate is already champion"])
    results = [_signature_gate(has_signature), _training_data_gate(training_data)]
    results += [_floor_gate(m, candidate.metrics.get(m), limit) for m, limit in gates.min_metrics.items()]
    for name, limit in Fairness.limits(gates).items():
        gate = _fairness_gate(name, candidate.worst(name), limit, candidate.too_small_note())
        if gate is not None:
            results.append(gate)
    deltas: dict[str, float | None] = {}
    if champion is not None:
        for metric in METRICS:
            c, b = candidate.metrics.get(metric), champion.metrics.get(metric)
            deltas[metric] = None if c is None or b is None else c - b
        results += [
            _regression_gate(m, candidate.metrics.get(m), champion.metrics.get(m), allowed)
            for m, allowed in gates.max_regression.items()
        ]
    failed = [g for g in results if not g.passed]
    if failed:
        reasons = [f"gate {g.gate} failed: {g.detail}" for g in failed]
    elif champion_version is None:
        reasons = ["first model: every gate passed"]
    else:
        reasons = [f"every gate passed against champion version {champion_version}"]
    if failed and override_reason is not None:
        names = ", ".join(g.gate for g in failed)
        reasons = [f"OVERRIDE of failed gates ({names}): {override_reason.strip()}", *reasons]
        return Decision(
            True,
            candidate_version,
            champion_version,
            results,
            deltas,
            reasons,
            overridden=True,
            override_reason=override_reason.strip(),
        )
    return Decision(not failed, candidate_version, champion_version, results, deltas, reasons)
