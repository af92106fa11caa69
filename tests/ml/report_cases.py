"""Evaluations, decisions and reports the figure, report and browser tests share."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops_assets.ml.evaluation import DECISION_THRESHOLD, evaluate
from mlops_assets.ml.figures import PngFigure, ScoredModel, evaluation_figures
from mlops_assets.ml.promotion import BatchEvidence, Decision, decide
from mlops_assets.ml.report import evaluation_report
from mlops_assets.spec import GatesSpec
from tests.ml.conftest import Holdout

HOSTILE_GROUP = "</script><img src=x onerror=alert(1)>"
# Even-numbered dollars make matplotlib parse the text as math, and this is no valid math.
MATH_GROUP = r"a $\frac{$ b"
BOLD_REASON = "<b>the board said so</b> & it's fine"
HOSTILE_MODEL = 'gss"><script>alert(1)</script>'
HOSTILE_BATCH = "1991<script>x()</script>"
HOSTILE_TIME = "<i>now</i>"
# Every text of hostile_report() that came from the data, the registry, the spec or a person.
HOSTILE_TEXTS = (HOSTILE_GROUP, "<b>m</b>", BOLD_REASON, HOSTILE_MODEL, HOSTILE_BATCH, HOSTILE_TIME)


def tiny_models(groups: list[str]) -> tuple[np.ndarray, ScoredModel, ScoredModel]:
    """Eight rows whose confusion counts can be worked out by hand."""
    y = np.array([1, 1, 0, 0, 1, 0, 1, 0])
    candidate = np.array([0.9, 0.4, 0.6, 0.1, 0.7, 0.2, 0.8, 0.3])
    champion = np.array([0.6, 0.3, 0.7, 0.6, 0.2, 0.1, 0.9, 0.4])
    sensitive = pd.DataFrame({"gender": groups})
    return (
        y,
        ScoredModel("candidate", "3", candidate, evaluate(y, candidate, sensitive)),
        ScoredModel("champion", "2", champion, evaluate(y, champion, sensitive)),
    )


def training_data(*bad: str) -> list[BatchEvidence]:
    good = [BatchEvidence("1990", True, "validated")]
    return good + [BatchEvidence(b, False, f"batch {b} failed <i>age_in_range</i>") for b in bad]


def report_of(holdout: Holdout, decision: Decision, *, gates: GatesSpec | None = None) -> tuple[str, list[PngFigure]]:
    champion = holdout.champion if decision.champion_version else None
    rendered = evaluation_figures(
        y=holdout.y, candidate=holdout.candidate, champion=champion, gates=gates or GatesSpec()
    )
    page = evaluation_report(
        model="gss_wages",
        decision=decision,
        candidate=holdout.candidate.evaluation,
        champion=champion.evaluation if champion else None,
        figures=rendered,
        threshold=DECISION_THRESHOLD,
        generated_at="2026-11-23T10:00:00+00:00",
    )
    return page, rendered


def decision_on(holdout: Holdout, gates: GatesSpec, **kwargs: object) -> Decision:
    args: dict = {
        "candidate_version": "3",
        "candidate": holdout.candidate.evaluation,
        "champion_version": "2",
        "champion": holdout.champion.evaluation,
        "gates": gates,
        "has_signature": True,
        "training_data": training_data(),
    }
    return decide(**{**args, **kwargs})


def hostile_report() -> tuple[str, list[PngFigure]]:
    """A report whose group values, model name, batch, override reason and time are markup."""
    y, candidate, champion = tiny_models([HOSTILE_GROUP, "<b>m</b>"] * 4)
    gates = GatesSpec(min_metrics={}, max_regression={})
    decision = decide(
        candidate_version="3",
        candidate=candidate.evaluation,
        champion_version="2",
        champion=champion.evaluation,
        gates=gates,
        has_signature=True,
        training_data=training_data(HOSTILE_BATCH),
        override_reason=BOLD_REASON,
    )
    rendered = evaluation_figures(y=y, candidate=candidate, champion=champion, gates=gates)
    page = evaluation_report(
        model=HOSTILE_MODEL,
        decision=decision,
        candidate=candidate.evaluation,
        champion=champion.evaluation,
        figures=rendered,
        threshold=DECISION_THRESHOLD,
        generated_at=HOSTILE_TIME,
    )
    return page, rendered
