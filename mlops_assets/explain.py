"""The three questions at 3 a.m.: which model version, what training data, how did it pass testing.

``explain`` gathers, for a batch's predictions or for a registered version, everything the
product recorded about that version's lineage:

- the predictions Parquet (column ``model_version``) and the predictions' materialization;
- MLflow: the version's tags (fingerprint, code version, training batches, Dagster run), its
  signature, its run's artifacts ``mlops/training_manifest.json`` and ``mlops/validation_suite.json``,
  and the champion history (``MlflowRegistry.champion_history``);
- the lake: the decision about the version (``promotion/v<version>.json``, written by the
  promotion asset), drift reports (``drift_report/<batch>.json``);
- Dagster's event log: the validation of every training batch (materializations of
  ``validated_batch`` and the evaluations of its blocking checks, per partition).

The same document renders as text (``mlops explain``), as the ``explanation`` asset's metadata
and as a model card (markdown) per version. It imports no ML library, so the command stays fast.

``training_batch_evidence`` is also what the promotion gate ``training_data_validated`` uses:
every batch the candidate was trained on must be validated data, meaning

1. the batch has a ``validated_batch`` materialization in this Dagster instance, and no
   blocking (error-severity) validation check of that batch failed after it: a batch whose
   newest data failed validation disqualifies models trained on it; and
2. the fingerprint the training manifest recorded for the batch equals the fingerprint of a
   ``features`` materialization of that batch: the training data came through validation and
   featurization in the pipeline, not from a file put into the lake by hand.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg

from mlops_assets.ml.promotion import BatchEvidence

if TYPE_CHECKING:
    from resources.lake import Lake
    from resources.registry import MlflowRegistry, RegisteredModel

PARTITION_TAG = "dagster/partition"
CHECK_HISTORY_LIMIT = 1000
FEATURES_LOOKBACK = 50


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return _dt.datetime.fromtimestamp(timestamp, _dt.UTC).isoformat(timespec="seconds")


def _latest_materialization(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None):  # noqa: ANN202
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition is not None else None), limit=1
    ).records
    return records[0] if records else None


def _metadata(record: Any) -> dict[str, Any]:
    materialization = record.event_log_entry.asset_materialization
    return {k: v.value for k, v in materialization.metadata.items()} if materialization else {}


def blocking_check_failures(
    instance: dg.DagsterInstance, model: str, checks: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Failed error-severity evaluations of ``validated_batch``'s checks, by batch.

    Dagster records check evaluations without their partition, so the batch is read from the
    run that evaluated them (tag ``dagster/partition``).
    """
    key = dg.AssetKey([model, "validated_batch"])
    failed: list[tuple[str, str, float]] = []
    for check in checks:
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(key, check), limit=CHECK_HISTORY_LIMIT
        )
        for record in history:
            evaluation = record.evaluation
            # A record still planned (its run queued or running) holds the planned event instead.
            if (
                not isinstance(evaluation, dg.AssetCheckEvaluation)
                or evaluation.passed
                or evaluation.severity != dg.AssetCheckSeverity.ERROR
            ):
                continue
            failed.append((check, record.run_id, record.event.timestamp if record.event else record.create_timestamp))
    if not failed:
        return {}
    runs = instance.get_run_records(filters=dg.RunsFilter(run_ids=sorted({run for _, run, _ in failed})))
    partition_of = {r.dagster_run.run_id: r.dagster_run.tags.get(PARTITION_TAG) for r in runs}
    by_batch: dict[str, list[dict[str, Any]]] = {}
    for check, run, at in failed:
        batch = partition_of.get(run)
        if batch is not None:
            by_batch.setdefault(batch, []).append({"check": check, "run_id": run, "at": at})
    return by_batch


def training_batch_evidence(
    instance: dg.DagsterInstance,
    *,
    model: str,
    fingerprints: Mapping[str, str],
    blocking_checks: Sequence[str],
) -> list[BatchEvidence]:
    """Whether each training batch (with the fingerprint the training manifest recorded) is
    validated data; see the module docstring for the rule."""
    failures = blocking_check_failures(instance, model, blocking_checks)
    evidence = []
    for batch, fingerprint in fingerprints.items():
        validated = _latest_materialization(instance, dg.AssetKey([model, "validated_batch"]), batch)
        if validated is None:
            evidence.append(BatchEvidence(batch, False, "never validated in this Dagster instance"))
            continue
        later = [f for f in failures.get(batch, []) if f["at"] > validated.timestamp]
        if later:
            last = max(later, key=lambda f: f["at"])
            checks = sorted({f["check"] for f in later})
            evidence.append(
                BatchEvidence(
                    batch,
                    False,
                    f"validation failed at {_iso(last['at'])} in run {last['run_id'][:8]} "
                    f"(checks {', '.join(checks)}), after the data it was trained on was validated "
                    f"at {_iso(validated.timestamp)}",
                )
            )
            continue
        features = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey([model, "features"]), asset_partitions=[batch]),
            limit=FEATURES_LOOKBACK,
        ).records
        known = [_metadata(r).get("fingerprint") for r in features]
        if fingerprint not in known:
            evidence.append(
                BatchEvidence(
                    batch,
                    False,
                    f"training data fingerprint {fingerprint} matches no features materialization of the "
                    f"batch (latest: {known[0] if known else 'none'}), so it did not come through validation",
                )
            )
            continue
        evidence.append(BatchEvidence(batch, True, f"validated at {_iso(validated.timestamp)}, fingerprint matches"))
    return evidence


def suite_checks(suite_json: bytes) -> dict[str, str]:
    """Check name -> severity, from a validation suite document."""
    return {e["check"]: e.get("severity", "error") for e in json.loads(suite_json)}


def _maybe_json(lake: Lake, model: str, asset: str, partition: str | None = None) -> Any:
    if not lake.exists(model, asset, partition, "json"):
        return None
    return lake.read_json(model, asset, partition)


def _run_json(registry: MlflowRegistry, run_id: str, path: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return json.loads(registry.run_artifact(run_id, path))
    except (MlflowException, OSError):
        # The artifact is absent (an older version, or one whose run never got it).
        return None


def decision_record(lake: Lake, registry: MlflowRegistry, version: RegisteredModel) -> dict[str, Any] | None:
    """The latest promotion decision about ``version``: from the lake, else from its MLflow run."""
    record = _maybe_json(lake, version.name, "promotion", f"v{version.version}")
    return record if record is not None else _run_json(registry, version.run_id, "mlops/decision.json")


def explain(
    *,
    model: str,
    registry: MlflowRegistry,
    lake: Lake,
    instance: dg.DagsterInstance | None,
    batch: str | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """The lineage of a batch's predictions (``batch``) or of a registered ``version``, as JSON.

    Raises:
        LookupError: the batch has no predictions, or the version does not exist (names both).
    """
    from resources.registry import CHALLENGER, CHAMPION, TAG_CODE_VERSION, TAG_DAGSTER_RUN, TAG_FINGERPRINT

    if (batch is None) == (version is None):
        raise ValueError("explain: give exactly one of batch or version")
    doc: dict[str, Any] = {"model": model, "notes": []}
    if batch is not None:
        doc["subject"] = _predictions_subject(model, batch, lake, instance)
        version = doc["subject"]["model_version"]
    else:
        doc["subject"] = {"version": version}
    registered = registry.get(model, str(version))
    champion, challenger = registry.by_alias(model, CHAMPION), registry.by_alias(model, CHALLENGER)
    signature = registry.model_signature(registered)
    doc["version"] = {
        "version": registered.version,
        "uri": registered.uri,
        "mlflow_run_id": registered.run_id,
        "model_id": registered.model_id,
        "family": registered.family,
        "registered_at": registered.created_at.isoformat(timespec="seconds") if registered.created_at else None,
        "training_dagster_run_id": registered.tags.get(TAG_DAGSTER_RUN),
        "code_version": registered.tags.get(TAG_CODE_VERSION),
        "training_fingerprint": registered.tags.get(TAG_FINGERPRINT),
        "aliases": [
            a for a, m in ((CHAMPION, champion), (CHALLENGER, challenger)) if m and m.version == registered.version
        ],
        "signature_inputs": [f"{c.get('name')}:{c.get('type')}" for c in (signature or {}).get("inputs", [])],
    }
    doc["training_data"] = _training_data(model, registered, registry, lake, instance, doc["notes"])
    record = decision_record(lake, registry, registered)
    doc["decision"] = record
    history = registry.champion_history(model)
    doc["champion_history"] = [
        {**m.to_record(), "key": m.key} for m in history if registered.version in (m.to_version, m.from_version)
    ]
    doc["champion_now"] = champion.version if champion else None
    if champion is not None and (not history or history[-1].to_version != champion.version):
        doc["notes"].append(
            f"champion is version {champion.version} but the last recorded move says "
            f"{history[-1].to_version if history else '(none)'}: it was moved outside mlops"
        )
    if batch is not None:
        doc["batch_drift"] = _maybe_json(lake, model, "drift_report", batch)
        scored_at = doc["subject"].get("scored_at")
        if scored_at is not None:
            at_the_time = registry.champion_at(model, scored_at)
            if at_the_time is not None and at_the_time != registered.version:
                doc["notes"].append(
                    f"the champion history says version {at_the_time} was champion when batch {batch} "
                    f"was scored, not version {registered.version}"
                )
    return doc


def _predictions_subject(model: str, batch: str, lake: Lake, instance: dg.DagsterInstance | None) -> dict[str, Any]:
    import pyarrow.parquet as pq

    if not lake.exists(model, "predictions", batch):
        raise LookupError(f"{model}: batch {batch} has no predictions; materialize {model}/predictions for it first")
    data = io.BytesIO(lake.read_bytes(model, "predictions", batch, "parquet"))
    table = pq.read_table(data, columns=["model_version"])
    versions = sorted({str(v) for v in table.column("model_version").to_pylist()}, key=lambda v: int(v))
    if not versions:
        raise LookupError(f"{model}: batch {batch}'s predictions are empty, so no version made them")
    subject: dict[str, Any] = {
        "batch": batch,
        "rows": table.num_rows,
        "model_version": versions[-1],
        "versions": versions,
    }
    if instance is not None:
        record = _latest_materialization(instance, dg.AssetKey([model, "predictions"]), batch)
        if record is not None:
            subject["scored_at"] = _iso(record.timestamp)
            subject["scored_by_run"] = record.run_id
    return subject


def _training_data(
    model: str,
    registered: RegisteredModel,
    registry: MlflowRegistry,
    lake: Lake,
    instance: dg.DagsterInstance | None,
    notes: list[str],
) -> dict[str, Any]:
    manifest = _run_json(registry, registered.run_id, "mlops/training_manifest.json")
    if manifest is None:
        notes.append(f"version {registered.version}'s run has no mlops/training_manifest.json")
        return {"batches": []}
    suite_bytes = None
    suite = _run_json(registry, registered.run_id, "mlops/validation_suite.json")
    if suite is not None:
        suite_bytes = json.dumps(suite).encode()
    checks = suite_checks(suite_bytes) if suite_bytes else {}
    blocking = [c for c, severity in checks.items() if severity == "error"]
    evidence: dict[str, BatchEvidence] = {}
    if instance is not None:
        found = training_batch_evidence(
            instance, model=model, fingerprints=manifest["fingerprints"], blocking_checks=blocking
        )
        evidence = {e.batch: e for e in found}
    else:
        notes.append("no Dagster instance: the validation of the training batches is not shown")
    batches = []
    for batch in manifest["batches"]:
        row: dict[str, Any] = {"batch": batch, "fingerprint": manifest["fingerprints"].get(batch)}
        if instance is not None:
            validated = _latest_materialization(instance, dg.AssetKey([model, "validated_batch"]), batch)
            meta = _metadata(validated) if validated else {}
            row["validation"] = {
                "ok": evidence[batch].validated if batch in evidence else None,
                "detail": evidence[batch].detail if batch in evidence else "",
                "validated_at": _iso(validated.timestamp) if validated else None,
                "run_id": validated.run_id if validated else None,
                "passed": meta.get("expectations_passed"),
                "total": meta.get("expectations_total"),
            }
        drift = _maybe_json(lake, model, "drift_report", batch)
        row["drift"] = (
            None if drift is None else {k: drift.get(k) for k in ("drifted_share", "dataset_drift", "model_version")}
        )
        batches.append(row)
    return {
        "batches": batches,
        "rows": manifest.get("rows", {}),
        "training_fingerprint": manifest.get("training_fingerprint"),
        "suite": {"expectations": len(checks), "blocking": len(blocking)},
    }


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _metrics_rows(record: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    evaluation = record.get("evaluation") or {}
    candidate = (evaluation.get("candidate") or {}).get("metrics", {})
    champion = (evaluation.get("champion") or {}).get("metrics", {})
    return [(m, _fmt(candidate.get(m)), _fmt(champion.get(m))) for m in candidate]


def render_text(doc: Mapping[str, Any]) -> str:
    """What ``mlops explain`` prints."""
    model, v = doc["model"], doc["version"]
    lines: list[str] = []
    subject = doc["subject"]
    if "batch" in subject:
        scored = ""
        if subject.get("scored_at"):
            scored = f", scored {subject['scored_at']} in run {subject['scored_by_run'][:8]}"
        lines.append(
            f"{model}, batch {subject['batch']}: {subject['rows']:,} predictions made by version "
            f"{v['version']} ({v['uri']}){scored}"
        )
        if len(subject["versions"]) > 1:
            lines.append(f"  (rows carry versions {', '.join(subject['versions'])})")
    else:
        lines.append(f"{model}, version {v['version']} ({v['uri']})")
    lines += [
        "",
        f"Model version {v['version']}",
        f"  registered        {v['registered_at']} by Dagster run {v['training_dagster_run_id']} "
        f"(MLflow run {v['mlflow_run_id']})",
        f"  family            {v['family']}",
        f"  code version      {v['code_version']}",
        f"  training data fp  {v['training_fingerprint']}",
        f"  signature         {', '.join(v['signature_inputs']) if v['signature_inputs'] else 'NONE'}",
        f"  aliases now       {', '.join(v['aliases']) or '(none)'}; "
        f"champion now: version {doc['champion_now'] or '(none)'}",
        "",
    ]
    data = doc["training_data"]
    rows = data.get("rows", {})
    suite = data.get("suite", {})
    lines.append(
        f"Training data: {len(data['batches'])} batches, {rows.get('train', '-')} train / "
        f"{rows.get('holdout', '-')} holdout rows; validation suite of {suite.get('expectations', '-')} "
        f"expectations ({suite.get('blocking', '-')} blocking)"
    )
    lines.append(f"  {'batch':<10} {'fingerprint':<17} {'validation':<58} drift")
    for b in data["batches"]:
        val = b.get("validation")
        if val is None:
            validation = "(no Dagster instance)"
        elif val["ok"]:
            run = (val["run_id"] or "")[:8]
            validation = f"ok: {val['passed']}/{val['total']} passed, {val['validated_at']} run {run}"
        else:
            validation = f"NOT VALIDATED: {val['detail']}"
        drift = b.get("drift")
        drift_text = (
            "not scored"
            if drift is None
            else f"{_fmt(drift['drifted_share'], 2)} drifted{' (dataset drift)' if drift['dataset_drift'] else ''}"
        )
        lines.append(f"  {b['batch']:<10} {b['fingerprint'] or '-':<17} {validation:<58} {drift_text}")
    lines.append("")
    record = doc.get("decision")
    if record is None:
        lines.append("Evaluation and promotion decision: none recorded for this version")
    else:
        decision = record["decision"]
        champion = (record.get("evaluation") or {}).get("champion") or {}
        lines.append(
            f"Evaluation on the holdout ({(record.get('evaluation') or {}).get('holdout_rows', '-')} rows), "
            f"decided {record.get('at')} in run {(record.get('dagster_run_id') or '')[:8]}"
        )
        champion_column = "champion v" + str(champion.get("version") or "-")
        lines.append(f"  {'metric':<20} {'candidate v' + v['version']:>14} {champion_column:>14}")
        lines += [f"  {m:<20} {c:>14} {b:>14}" for m, c, b in _metrics_rows(record)]
        lines.append("Gates")
        for g in decision.get("gates", []):
            lines.append(f"  {'PASS' if g['passed'] else 'FAIL'} {g['gate']:<36} {g['detail']}")
        outcome = record.get("outcome", "promoted" if decision.get("promote") else "rejected")
        lines.append(f"Decision: {outcome.upper()}: {'; '.join(decision.get('reasons', []))}")
    lines.append("")
    lines.append(f"Champion history of version {v['version']}")
    if not doc["champion_history"]:
        lines.append("  never champion")
    for m in doc["champion_history"]:
        by = f"run {m['dagster_run_id']}" if m.get("dagster_run_id") else m["actor"]
        lines.append(
            f"  {m['at'][:19]}  {m['kind']:<9} {m['from_version'] or '(none)'} -> {m['to_version']}  by {by}"
            + ("  OVERRIDE" if m.get("override") else "")
            + (f": {m['reason']}" if m.get("reason") else "")
        )
    drift = doc.get("batch_drift")
    if "batch" in subject:
        lines.append("")
        if drift is None:
            lines.append(f"Drift of batch {subject['batch']}: no drift report")
        else:
            drifted = [c["column"] for c in drift.get("columns", []) if c.get("drifted")]
            lines.append(
                f"Drift of batch {subject['batch']}: {_fmt(drift['drifted_share'], 2)} of columns drifted "
                f"(dataset drift: {'yes' if drift['dataset_drift'] else 'no'}) against version "
                f"{drift['model_version']}'s training data" + (f"; drifted: {', '.join(drifted)}" if drifted else "")
            )
    for note in doc["notes"]:
        lines.append(f"NOTE: {note}")
    return "\n".join(lines)


def render_model_card(doc: Mapping[str, Any]) -> str:
    """A model card (markdown) for the version in ``doc`` (built by ``explain(version=...)``)."""
    model, v = doc["model"], doc["version"]
    data = doc["training_data"]
    out = [
        f"# Model card: {model} version {v['version']}",
        "",
        f"- **Model URI**: `{v['uri']}` (MLflow run `{v['mlflow_run_id']}`)",
        f"- **Family**: {v['family']}",
        f"- **Registered**: {v['registered_at']} by Dagster run `{v['training_dagster_run_id']}`",
        f"- **Code version**: `{v['code_version']}`; **training fingerprint**: `{v['training_fingerprint']}`",
        f"- **Aliases now**: {', '.join(v['aliases']) or 'none'} "
        f"(champion now: version {doc['champion_now'] or 'none'})",
        f"- **Inputs (signature)**: {', '.join(f'`{s}`' for s in v['signature_inputs']) or '**none**'}",
        "",
        "## Training data",
        "",
        "| batch | fingerprint | validation | drift |",
        "|---|---|---|---|",
    ]
    for b in data["batches"]:
        val = b.get("validation") or {}
        validation = (
            "unknown"
            if not val
            else f"ok ({val.get('passed')}/{val.get('total')}, {val.get('validated_at')})"
            if val.get("ok")
            else f"**not validated**: {val.get('detail')}"
        )
        drift = b.get("drift")
        out.append(
            f"| {b['batch']} | `{b['fingerprint']}` | {validation} | "
            f"{'not scored' if drift is None else _fmt(drift['drifted_share'], 2)} |"
        )
    rows = data.get("rows", {})
    out += ["", f"{rows.get('train', '-')} training rows, {rows.get('holdout', '-')} holdout rows.", ""]
    record = doc.get("decision")
    out += ["## Evaluation and gates", ""]
    if record is None:
        out.append("No promotion decision recorded for this version.")
    else:
        out += ["| metric | this version | champion at decision |", "|---|---|---|"]
        out += [f"| {m} | {c} | {b} |" for m, c, b in _metrics_rows(record)]
        out += ["", "| gate | passed | detail |", "|---|---|---|"]
        out += [
            f"| {g['gate']} | {'yes' if g['passed'] else '**no**'} | {g['detail']} |"
            for g in record["decision"]["gates"]
        ]
        decision = record["decision"]
        out += [
            "",
            f"**Decision** ({record.get('at')}, run `{record.get('dagster_run_id')}`): "
            + f"{record.get('outcome', 'promoted' if decision.get('promote') else 'rejected')}: "
            + "; ".join(decision.get("reasons", [])),
        ]
    out += ["", "## Champion history", ""]
    if not doc["champion_history"]:
        out.append("Never champion.")
    for m in doc["champion_history"]:
        by = f"run `{m['dagster_run_id']}`" if m.get("dagster_run_id") else m["actor"]
        out.append(
            f"- {m['at'][:19]}: {m['kind']} {m['from_version'] or '(none)'} → {m['to_version']} by {by}"
            + (" **(override)**" if m.get("override") else "")
            + (f": {m['reason']}" if m.get("reason") else "")
        )
    for note in doc["notes"]:
        out += ["", f"> Note: {note}"]
    return "\n".join(out) + "\n"
