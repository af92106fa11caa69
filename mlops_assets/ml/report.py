"""The evaluation report: one self-contained HTML page per promotion decision.

What a reviewer opens to see why a candidate did or did not replace the champion: the decision
and its reasons, every gate with its value, limit and margin, the candidate's and the champion's
metrics side by side, per-group metrics and fairness gaps, and the evaluation figures inline.

The page is a single file that opens anywhere, also without a network: the figures are ``data:``
URIs, the style is inline, there is no script and no external URL. Its Content-Security-Policy
forbids loading anything but inline images and style, so even a value that slipped through
unescaped could not fetch or run anything. Every text that comes from the data, the registry or
the spec (group values, feature and model names, versions, gate details, reasons) is escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mlops_assets.contract import Fairness
from mlops_assets.ml.figures import GAP_LABELS, GROUP_METRICS, PngFigure
from mlops_assets.spec import METRICS

if TYPE_CHECKING:
    from mlops_assets.ml.evaluation import Evaluation
    from mlops_assets.ml.promotion import Decision, GateResult

CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
# Metrics shown beyond the gated ones, with whether higher is better.
EXTRA_METRICS = {"brier": False}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1320px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.verdict { display: inline-block; padding: 0.3em 0.8em; border-radius: 4px; font-weight: bold; color: #fff; }
.promoted { background: #2e7d32; } .rejected { background: #c62828; } .overridden { background: #ef6c00; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fdecea; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: bold; }
.figures { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
figure { margin: 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
"""


def gate_margin(gate: GateResult) -> float | None:
    """How far the gate's value is from its limit, positive on the passing side (None when the
    value is undefined).

    Every gate passes on one side of its limit, so the distance signed by the outcome is the
    margin whatever the gate's direction: a floor met by 0.05, a regression 0.02 within its
    allowance, a fairness gap 0.1 under its limit are all +; a miss is -.
    """
    if gate.value is None:
        return None
    distance = abs(gate.value - gate.limit)
    return distance if gate.passed else -distance


def evaluation_report(
    *,
    model: str,
    decision: Decision,
    candidate: Evaluation,
    champion: Evaluation | None,
    figures: Sequence[PngFigure],
    threshold: float,
    generated_at: str,
) -> str:
    """The HTML report of one promotion decision.

    Args:
        model: the registered model's name.
        decision: what ``promotion.decide`` returned for the candidate.
        candidate: the candidate's evaluation on the holdout.
        champion: the champion's on the same holdout; None exactly when the decision had none.
        figures: the evaluation's figures (``figures.evaluation_figures``), shown in this order.
        threshold: the decision threshold the evaluation used.
        generated_at: when the decision was made, as it should be shown (the page reads no clock).

    Raises:
        ValueError: a champion evaluation without a champion version in the decision or the
            other way round, or a figure whose bytes are not PNG.
    """
    if (champion is None) != (decision.champion_version is None):
        raise ValueError(
            f"{model}: the decision's champion version is {decision.champion_version!r} but a champion "
            f"evaluation was {'not ' if champion is None else ''}given"
        )
    verdict, verdict_class = _verdict(decision)
    champion_label = f"v{decision.champion_version}" if decision.champion_version else "none (first model)"
    title = f"{model} v{decision.candidate_version}: {verdict}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CONTENT_SECURITY_POLICY)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)} (evaluation report)</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(model)}: candidate v{_e(decision.candidate_version)} against champion {_e(champion_label)}</h1>",
        f'<p><span class="verdict {verdict_class}">{_e(verdict)}</span></p>',
        "<dl>",
        _fact("model", model),
        _fact("candidate", f"v{decision.candidate_version}"),
        _fact("champion at decision", champion_label),
        _fact("champion after", f"v{decision.candidate_version}" if decision.promote else champion_label),
        _fact("holdout rows", f"{candidate.rows:,}"),
        _fact("decision threshold", f"{threshold:.2f}"),
        _fact("decided at", generated_at),
        "</dl>",
        "<h2>Reasons</h2>",
        _list(decision.reasons),
    ]
    if decision.overridden:
        parts.append(f"<p><strong>Override reason:</strong> {_e(decision.override_reason)}</p>")
    parts += ["<h2>Gates</h2>", _gates_table(decision.gates)]
    parts += ["<h2>Candidate and champion on the holdout</h2>", _metrics_table(decision, candidate, champion)]
    if candidate.fairness:
        parts += ["<h2>Fairness gaps</h2>", _gaps_table(decision, candidate, champion)]
        parts += ["<h2>Metrics by group</h2>", _groups_table(decision, candidate, champion)]
    notes = [f"candidate: {n}" for n in candidate.notes] + [
        f"champion: {n}" for n in (champion.notes if champion else [])
    ]
    if notes:
        parts += ["<h2>Notes</h2>", _list(notes)]
    parts.append("<h2>Figures</h2>")
    if figures:
        parts += ['<div class="figures">', *(_figure(f) for f in figures), "</div>"]
    else:
        parts.append("<p>No figure was drawn for this evaluation.</p>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _verdict(decision: Decision) -> tuple[str, str]:
    if decision.overridden:
        return "PROMOTED BY OVERRIDE", "overridden"
    if decision.promote:
        return "PROMOTED", "promoted"
    return "NOT PROMOTED", "rejected"


def _gates_table(gates: Sequence[GateResult]) -> str:
    if not gates:
        return "<p>No gate was evaluated.</p>"
    rows = [
        (
            ' class="failed"' if not g.passed else "",
            [
                _e(g.gate),
                _num(g.value),
                _num(g.limit),
                _num(gate_margin(g), signed=True),
                "pass" if g.passed else "FAIL",
                _e(g.detail),
            ],
        )
        for g in gates
    ]
    return _table(["gate", "value", "limit", "margin", "result", "detail"], rows, numeric={1, 2, 3})


def _metrics_table(decision: Decision, candidate: Evaluation, champion: Evaluation | None) -> str:
    directions = {**METRICS, **EXTRA_METRICS}
    names = [m for m in directions if m in candidate.metrics]
    names += sorted(set(candidate.metrics) - set(names))
    rows = []
    for name in names:
        ours = candidate.metrics.get(name)
        theirs = champion.metrics.get(name) if champion else None
        delta = None if ours is None or theirs is None else ours - theirs
        direction = directions.get(name)
        better = "" if direction is None else "higher" if direction else "lower"
        rows.append(("", [_e(name), _num(ours), _num(theirs), _num(delta, signed=True), better]))
    for label, attribute in (
        ("positive rate", "positive_rate"),
        ("predicted positive rate", "predicted_positive_rate"),
    ):
        ours = getattr(candidate, attribute)
        theirs = getattr(champion, attribute) if champion else None
        delta = None if theirs is None else ours - theirs
        rows.append(("", [_e(label), _num(ours), _num(theirs), _num(delta, signed=True), ""]))
    for gap in Fairness.GAPS:
        ours, theirs = candidate.worst(gap), champion.worst(gap) if champion else None
        delta = None if ours is None or theirs is None else ours - theirs
        rows.append(("", [_e(f"worst {GAP_LABELS[gap]}"), _num(ours), _num(theirs), _num(delta, signed=True), "lower"]))
    headers = [
        "metric",
        f"candidate v{decision.candidate_version}",
        f"champion v{decision.champion_version}" if champion else "champion",
        "candidate − champion",
        "better",
    ]
    return _table(headers, rows, numeric={1, 2, 3})


def _gaps_table(decision: Decision, candidate: Evaluation, champion: Evaluation | None) -> str:
    theirs = {f.feature: f for f in champion.fairness} if champion else {}
    rows = []
    for fairness in candidate.fairness:
        for gap in Fairness.GAPS:
            other = theirs.get(fairness.feature)
            rows.append(
                (
                    "",
                    [
                        _e(fairness.feature),
                        _e(GAP_LABELS[gap]),
                        _num(getattr(fairness, gap)),
                        _num(getattr(other, gap) if other else None),
                    ],
                )
            )
    headers = ["sensitive feature", "gap", f"candidate v{decision.candidate_version}", "champion"]
    if champion:
        headers[3] = f"champion v{decision.champion_version}"
    return _table(headers, rows, numeric={2, 3})


def _groups_table(decision: Decision, candidate: Evaluation, champion: Evaluation | None) -> str:
    models = [(f"candidate v{decision.candidate_version}", candidate)]
    if champion is not None:
        models.append((f"champion v{decision.champion_version}", champion))
    rows = []
    for fairness in candidate.fairness:
        for group in sorted(fairness.by_group):
            for label, evaluation in models:
                values = next(
                    (f.by_group.get(group, {}) for f in evaluation.fairness if f.feature == fairness.feature), {}
                )
                count = values.get("count")
                cells = [_e(fairness.feature), _e(group), _e(label), _num(None if count is None else int(count))]
                rows.append(("", cells + [_num(values.get(metric)) for metric in GROUP_METRICS]))
    headers = ["sensitive feature", "group", "model", "rows", *GROUP_METRICS.values()]
    return _table(headers, rows, numeric=set(range(3, 4 + len(GROUP_METRICS))))


def _figure(figure: PngFigure) -> str:
    width, height = figure.size
    data = base64.b64encode(figure.png).decode("ascii")
    return (
        "<figure>"
        f'<img src="data:image/png;base64,{data}" width="{width}" height="{height}" alt="{_e(figure.title)}">'
        f"<figcaption>{_e(figure.title)}</figcaption>"
        "</figure>"
    )


def _table(headers: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]], *, numeric: set[int]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        f"<tr{attributes}>"
        + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(cells))
        + "</tr>"
        for attributes, cells in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fact(term: str, value: str) -> str:
    return f"<dt>{_e(term)}</dt><dd>{_e(value)}</dd>"


def _list(items: Sequence[str]) -> str:
    if not items:
        return "<p>(none)</p>"
    return "<ul>" + "".join(f"<li>{_e(item)}</li>" for item in items) + "</ul>"


def _num(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)
