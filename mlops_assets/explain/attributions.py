"""Why a row got its score, and what a version relies on: the text of ``mlops explain --row`` and
the global importance shown by ``mlops explain --version`` and the model card.

Reads what the pipeline stored (the ``attributions`` file beside a batch's predictions, the
``attribution_baseline.json`` artifact of a version's run); computes nothing, so the command
stays fast (pyarrow reads one row group of the file).
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

from mlops_assets.contract import Artifact, Asset, artifact_path

if TYPE_CHECKING:
    from mlops_assets.ml.attribution import RowExplanation

METHOD_NOTES = {
    "tree_shap_path_dependent": "exact path-dependent TreeSHAP",
    "linear_exact": "exact linear contributions",
    "integrated_gradients": "integrated gradients; residual = completeness error",
}


def row_of_batch(lake: Any, model: str, batch: str, row: int) -> tuple[RowExplanation, dict[str, Any]]:
    """One row's stored explanation and its prediction row.

    Raises:
        LookupError: the batch has no predictions or no attributions, or no such row (says which).
    """
    from mlops_assets.ml.attribution import row_explanation

    if not lake.exists(model, Asset.PREDICTIONS, batch):
        raise LookupError(f"{model}: batch {batch} has no predictions; materialize predictions for it")
    if not lake.exists(model, Asset.ATTRIBUTIONS, batch):
        raise LookupError(f"{model}: batch {batch} has no attributions; materialize attributions for it")
    try:
        explained = row_explanation(io.BytesIO(lake.read_bytes(model, Asset.ATTRIBUTIONS, batch, "parquet")), row)
    except KeyError as e:
        raise LookupError(f"{model}: {e.args[0]}") from e
    predictions = lake.read_frame(model, Asset.PREDICTIONS, batch)
    found = predictions[predictions["row"] == row]
    if found.empty:
        raise LookupError(f"{model}: batch {batch} has no prediction row {row}; it has {len(predictions)} rows")
    return explained, found.iloc[0].to_dict()


def render_row(model: str, explained: RowExplanation, prediction: dict[str, Any]) -> str:
    """What ``mlops explain <model> --batch <b> --row <r>`` prints."""
    label = prediction.get("label")
    labelled = label is not None and label == label  # NaN: no label
    lines = [
        f"{model}, batch {explained.batch}, row {explained.row}: prediction {int(prediction['prediction'])} "
        f"(score {float(prediction['score']):.4f}) made by version {explained.model_version} "
        f"(models:/{model}/{explained.model_version})" + (f"; label {int(label)}" if labelled else ""),
        "",
        f"Why (contributions to the raw output, {METHOD_NOTES.get(explained.method, explained.method)})",
        f"  {'base value':<24} {explained.base_value:>+10.4f}  (family {explained.model_family})",
    ]
    for c in explained.top:
        lines.append(f"  {c.column:<24} {c.value:>+10.4f}")
    if explained.other_columns:
        lines.append(f"  {f'({explained.other_columns} other columns)':<24} {explained.rest:>+10.4f}")
    lines += [
        f"  {'= raw output':<24} {explained.raw_output:>+10.4f}  (probability {explained.probability:.4f})",
        f"  {'residual':<24} {explained.residual:>10.1e}",
    ]
    return "\n".join(lines)


def version_importance(registry: Any, run_id: str) -> dict[str, float] | None:
    """Mean |contribution| per column on the version's training rows (None: trained before
    explanations were recorded)."""
    try:
        text = registry.run_artifact(run_id, artifact_path(Artifact.ATTRIBUTION_BASELINE))
    except Exception:  # MLflow raises several types for a missing artifact
        return None
    return dict(json.loads(text)["importance"])


def render_importance(importance: dict[str, float] | None, *, markdown: bool = False) -> str:
    """The global importance of a version, largest first (text or a markdown table)."""
    if importance is None:
        return "Global importance: not recorded for this version (trained before explanations existed)"
    ranked = sorted(importance.items(), key=lambda kv: -kv[1])
    if markdown:
        from mlops_assets.untrusted import md_code

        rows = "\n".join(f"| {i} | {md_code(c)} | {v:.4f} |" for i, (c, v) in enumerate(ranked, 1))
        return (
            "## Global importance\n\nMean absolute contribution to the raw output on the training rows.\n\n"
            f"| rank | column | mean abs contribution |\n|---|---|---|\n{rows}\n"
        )
    lines = ["Global importance (mean |contribution| on the training rows)"]
    lines += [f"  {i:>2}. {c:<24} {v:.4f}" for i, (c, v) in enumerate(ranked, 1)]
    return "\n".join(lines)
