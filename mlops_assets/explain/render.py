"""The lineage document as text (``mlops explain``) and as a model card (markdown)."""

from __future__ import annotations

from mlops_assets.records import BatchValidation, Lineage, PredictionsSubject, PromotionRecord, TrainingBatch
from mlops_assets.untrusted import md, md_code


def _fmt(value: object, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _dash(value: object) -> object:
    return "-" if value is None else value


def _metrics_rows(record: PromotionRecord) -> list[tuple[str, str, str]]:
    if record.evaluation is None:
        return []
    return [(m, _fmt(c), _fmt(b)) for m, c, b in record.evaluation.rows()]


def _text_validation(validation: BatchValidation | None) -> str:
    if validation is None:
        return "(no Dagster instance)"
    if validation.ok:
        return (
            f"ok: {validation.passed}/{validation.total} passed, {validation.validated_at} "
            f"run {(validation.run_id or '')[:8]}"
        )
    return f"NOT VALIDATED: {validation.detail}"


def _text_drift(batch: TrainingBatch) -> str:
    if batch.drift is None:
        return "not scored"
    return f"{_fmt(batch.drift.drifted_share, 2)} drifted{' (dataset drift)' if batch.drift.dataset_drift else ''}"


def render_text(doc: Lineage) -> str:
    """What ``mlops explain`` prints."""
    model, v, subject = doc.model, doc.version, doc.subject
    lines: list[str] = []
    if isinstance(subject, PredictionsSubject):
        scored = ""
        if subject.scored_at:
            scored = f", scored {subject.scored_at} in run {(subject.scored_by_run or '')[:8]}"
        lines.append(
            f"{model}, batch {subject.batch}: {subject.rows:,} predictions made by version "
            f"{v.version} ({v.uri}){scored}"
        )
        if len(subject.versions) > 1:
            lines.append(f"  (rows carry versions {', '.join(subject.versions)})")
    else:
        lines.append(f"{model}, version {v.version} ({v.uri})")
    lines += [
        "",
        f"Model version {v.version}",
        f"  registered        {v.registered_at} by Dagster run {v.training_dagster_run_id} "
        f"(MLflow run {v.mlflow_run_id})",
        f"  family            {v.family}",
        f"  code version      {v.code_version}",
        f"  training data fp  {v.training_fingerprint}",
        f"  signature         {', '.join(v.signature_inputs) if v.signature_inputs else 'NONE'}",
        f"  aliases now       {', '.join(v.aliases) or '(none)'}; champion now: version {doc.champion_now or '(none)'}",
        "",
    ]
    data = doc.training_data
    suite = data.suite
    lines.append(
        f"Training data: {len(data.batches)} batches, {_dash(data.train_rows)} train / "
        f"{_dash(data.holdout_rows)} holdout rows; validation suite of {suite.expectations if suite else '-'} "
        f"expectations ({suite.blocking if suite else '-'} blocking)"
    )
    lines.append(f"  {'batch':<10} {'fingerprint':<17} {'validation':<58} drift")
    for b in data.batches:
        lines.append(
            f"  {b.batch:<10} {b.fingerprint or '-':<17} {_text_validation(b.validation):<58} {_text_drift(b)}"
        )
    lines.append("")
    record = doc.decision
    if record is None:
        lines.append("Evaluation and promotion decision: none recorded for this version")
    else:
        evaluation = record.evaluation
        champion = evaluation.champion if evaluation else None
        lines.append(
            f"Evaluation on the holdout ({evaluation.holdout_rows if evaluation else '-'} rows), "
            f"decided {record.at} in run {(record.dagster_run_id or '')[:8]}"
        )
        champion_column = "champion v" + str((champion.version if champion else None) or "-")
        lines.append(f"  {'metric':<20} {'candidate v' + v.version:>14} {champion_column:>14}")
        lines += [f"  {m:<20} {c:>14} {b:>14}" for m, c, b in _metrics_rows(record)]
        lines.append("Gates")
        for g in record.decision.gates:
            lines.append(f"  {'PASS' if g.passed else 'FAIL'} {g.gate:<36} {g.detail}")
        lines.append(f"Decision: {record.outcome.upper()}: {'; '.join(record.decision.reasons)}")
    lines.append("")
    lines.append(f"Champion history of version {v.version}")
    if not doc.champion_history:
        lines.append("  never champion")
    for m in doc.champion_history:
        by = f"run {m.dagster_run_id}" if m.dagster_run_id else m.actor
        lines.append(
            f"  {m.at[:19]}  {m.kind:<9} {m.from_version or '(none)'} -> {m.to_version}  by {by}"
            + ("  OVERRIDE" if m.override else "")
            + (f": {m.reason}" if m.reason else "")
        )
    if isinstance(subject, PredictionsSubject):
        drift = doc.batch_drift
        lines.append("")
        if drift is None:
            lines.append(f"Drift of batch {subject.batch}: no drift report")
        else:
            drifted = drift.drifted_columns
            lines.append(
                f"Drift of batch {subject.batch}: {_fmt(drift.drifted_share, 2)} of columns drifted "
                f"(dataset drift: {'yes' if drift.dataset_drift else 'no'}) against version "
                f"{drift.model_version}'s training data" + (f"; drifted: {', '.join(drifted)}" if drifted else "")
            )
    for note in doc.notes:
        lines.append(f"NOTE: {note}")
    return "\n".join(lines)


def _card_validation(validation: BatchValidation | None) -> str:
    if validation is None:
        return "unknown"
    if validation.ok:
        return f"ok ({validation.passed}/{validation.total}, {validation.validated_at})"
    return f"**not validated**: {md(validation.detail)}"


def render_model_card(doc: Lineage) -> str:
    """A model card (markdown) for the version in ``doc`` (built by ``explain(version=...)``).

    Every text that can come from the data or a person (column names, validation details with
    their example values, gate details with group values, reasons, notes) is escaped by
    ``mlops_assets.untrusted``: opening the card can never run what a landed file held.
    """
    model, v, data = doc.model, doc.version, doc.training_data
    out = [
        f"# Model card: {model} version {v.version}",
        "",
        f"- **Model URI**: `{v.uri}` (MLflow run `{v.mlflow_run_id}`)",
        f"- **Family**: {v.family}",
        f"- **Registered**: {v.registered_at} by Dagster run `{v.training_dagster_run_id}`",
        f"- **Code version**: `{v.code_version}`; **training fingerprint**: `{v.training_fingerprint}`",
        f"- **Aliases now**: {', '.join(v.aliases) or 'none'} (champion now: version {doc.champion_now or 'none'})",
        f"- **Inputs (signature)**: {', '.join(md_code(s) for s in v.signature_inputs) or '**none**'}",
        "",
        "## Training data",
        "",
        "| batch | fingerprint | validation | drift |",
        "|---|---|---|---|",
    ]
    for b in data.batches:
        drift = "not scored" if b.drift is None else _fmt(b.drift.drifted_share, 2)
        out.append(f"| {md(b.batch)} | `{b.fingerprint}` | {_card_validation(b.validation)} | {drift} |")
    out += ["", f"{_dash(data.train_rows)} training rows, {_dash(data.holdout_rows)} holdout rows.", ""]
    record = doc.decision
    out += ["## Evaluation and gates", ""]
    if record is None:
        out.append("No promotion decision recorded for this version.")
    else:
        out += ["| metric | this version | champion at decision |", "|---|---|---|"]
        out += [f"| {m} | {c} | {b} |" for m, c, b in _metrics_rows(record)]
        out += ["", "| gate | passed | detail |", "|---|---|---|"]
        out += [f"| {g.gate} | {'yes' if g.passed else '**no**'} | {md(g.detail)} |" for g in record.decision.gates]
        out += [
            "",
            f"**Decision** ({record.at}, run `{record.dagster_run_id}`): "
            + f"{record.outcome}: "
            + "; ".join(md(r) for r in record.decision.reasons),
        ]
    out += ["", "## Champion history", ""]
    if not doc.champion_history:
        out.append("Never champion.")
    for m in doc.champion_history:
        by = f"run `{m.dagster_run_id}`" if m.dagster_run_id else md(m.actor)
        out.append(
            f"- {m.at[:19]}: {m.kind} {m.from_version or '(none)'} → {m.to_version} by {by}"
            + (" **(override)**" if m.override else "")
            + (f": {md(m.reason)}" if m.reason else "")
        )
    for note in doc.notes:
        out += ["", f"> Note: {md(note)}"]
    return "\n".join(out) + "\n"
