"""The three questions at 3 a.m.: which model version, what training data, how did it pass testing.

- ``evidence``: what Dagster's event log says about the batches a version was trained on (also the
  promotion gate ``training_data_validated``);
- ``document``: the lineage of a batch's predictions or of a version (``explain``), a typed
  ``records.Lineage`` gathered from the predictions, the registry, the lake and the event log;
- ``render``: that document as text (``mlops explain``) and as a model card.

None of it imports an ML library, so the command stays fast. What is gathered and the rule for
"validated data" are in ``docs/lineage.md``.
"""

from mlops_assets.explain.document import decision_record, drift_summary, explain, training_manifest
from mlops_assets.explain.evidence import blocking_check_failures, suite_checks, training_batch_evidence
from mlops_assets.explain.render import render_model_card, render_text

__all__ = [
    "blocking_check_failures",
    "decision_record",
    "drift_summary",
    "explain",
    "render_model_card",
    "render_text",
    "suite_checks",
    "training_batch_evidence",
    "training_manifest",
]
