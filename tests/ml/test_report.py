"""The evaluation report: self-contained, escaped, and saying what the decision said."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import pytest

from mlops_assets.ml.evaluation import DECISION_THRESHOLD
from mlops_assets.ml.figures import PngFigure
from mlops_assets.ml.promotion import GateResult
from mlops_assets.ml.report import CONTENT_SECURITY_POLICY, evaluation_report, gate_margin
from mlops_assets.spec import GatesSpec
from tests.ml.conftest import Holdout
from tests.ml.report_cases import HOSTILE_TEXTS, decision_on, hostile_report, report_of


class Page(HTMLParser):
    """Every start tag with its attributes, and the text, of one HTML document."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.tags if t == tag]

    @property
    def body_text(self) -> str:
        return " ".join(self.text)


@pytest.mark.parametrize(
    ("gate", "margin"),
    [
        (GateResult("min_roc_auc", 0.85, 0.70, True, ""), 0.15),
        (GateResult("min_roc_auc", 0.65, 0.70, False, ""), -0.05),
        (GateResult("min_log_loss", 0.40, 0.50, True, ""), 0.10),
        (GateResult("min_log_loss", 0.60, 0.50, False, ""), -0.10),
        # a regression gate's value is the loss against the champion; a gain is a negative loss
        (GateResult("max_regression_roc_auc", -0.02, 0.01, True, ""), 0.03),
        (GateResult("max_regression_roc_auc", 0.05, 0.01, False, ""), -0.04),
        (GateResult("max_demographic_parity_difference", 0.14, 0.25, True, ""), 0.11),
        (GateResult("signature_present", 0.0, 1.0, False, ""), -1.0),
        (GateResult("signature_present", 1.0, 1.0, True, ""), 0.0),
        (GateResult("training_data_validated", 2.0, 0.0, False, ""), -2.0),
        (GateResult("min_roc_auc", None, 0.70, False, ""), None),
    ],
)
def test_gate_margin_is_positive_on_the_passing_side(gate: GateResult, margin: float | None) -> None:
    assert gate_margin(gate) == (None if margin is None else pytest.approx(margin))


def test_the_report_holds_its_figures_inline_and_nothing_else(gss_holdout: Holdout) -> None:
    page, rendered = report_of(gss_holdout, decision_on(gss_holdout, GatesSpec()))
    parsed = Page(page)
    images = parsed.all("img")
    assert len(images) == len(rendered) == 6
    prefix = "data:image/png;base64,"
    for attrs, figure in zip(images, rendered, strict=True):
        assert str(attrs["src"]).startswith(prefix)
        assert base64.b64decode(str(attrs["src"])[len(prefix) :]) == figure.png
        assert (attrs["width"], attrs["height"]) == tuple(str(v) for v in figure.size)
        assert attrs["alt"] == figure.title
    tags = {t for t, _ in parsed.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "base", "form", "frame", "svg", "a"}
    assert all(name not in ("href", "srcset", "action", "poster") for _, attrs in parsed.tags for name in attrs)
    assert not any(name.startswith("on") for _, attrs in parsed.tags for name in attrs)
    assert page.count("<style>") == 1
    style = page.split("<style>", 1)[1].split("</style>", 1)[0]
    assert "url(" not in style and "@import" not in style
    (policy,) = [a for a in parsed.all("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert policy["content"] == CONTENT_SECURITY_POLICY


def test_every_gate_shows_value_limit_and_margin(gss_holdout: Holdout) -> None:
    gates = GatesSpec(min_metrics={"roc_auc": 0.9, "log_loss": 0.6}, max_regression={"roc_auc": 0.01})
    decision = decision_on(gss_holdout, gates)
    page, _ = report_of(gss_holdout, decision, gates=gates)
    rows = gate_rows(page)
    assert [r[0] for r in rows] == [g.gate for g in decision.gates]
    for row, gate in zip(rows, decision.gates, strict=True):
        assert row[1:5] == [
            "—" if gate.value is None else f"{gate.value:.4f}",
            f"{gate.limit:.4f}",
            "—" if gate.value is None else f"{gate_margin(gate):+.4f}",
            "pass" if gate.passed else "FAIL",
        ]
        assert row[5] == gate.detail
    auc = gss_holdout.candidate.evaluation.metrics["roc_auc"]
    (floor,) = [r for r in rows if r[0] == "min_roc_auc"]
    assert floor[3] == f"{auc - 0.9:+.4f}" and floor[4] == "FAIL"
    assert "NOT PROMOTED" in page


def gate_rows(page: str) -> list[list[str]]:
    """The cells of the gates table, row by row."""
    table = page.split("<h2>Gates</h2>", 1)[1].split("</table>", 1)[0]

    class Cells(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.rows: list[list[str]] = []
            self.cell: list[str] | None = None

        def handle_starttag(self, tag: str, attrs: list) -> None:
            if tag == "tr":
                self.rows.append([])
            elif tag == "td":
                self.cell = []

        def handle_endtag(self, tag: str) -> None:
            if tag == "td" and self.cell is not None:
                self.rows[-1].append("".join(self.cell))
                self.cell = None

        def handle_data(self, data: str) -> None:
            if self.cell is not None:
                self.cell.append(data)

    cells = Cells()
    cells.feed(table)
    return [r for r in cells.rows if r]


@pytest.mark.parametrize(
    ("kwargs", "verdict", "champion_after"),
    [
        ({}, "PROMOTED", "v3"),
        ({"has_signature": False}, "NOT PROMOTED", "v2"),
        ({"has_signature": False, "override_reason": "approved by review"}, "PROMOTED BY OVERRIDE", "v3"),
        ({"champion_version": None, "champion": None}, "PROMOTED", "v3"),
    ],
)
def test_the_verdict_and_the_champion_after(
    gss_holdout: Holdout, kwargs: dict, verdict: str, champion_after: str
) -> None:
    decision = decision_on(gss_holdout, GatesSpec(), **kwargs)
    page, _ = report_of(gss_holdout, decision)
    shown = page.split('<span class="verdict ', 1)[1].split("</span>", 1)[0].split(">", 1)[1]
    assert shown == verdict
    assert f"<dt>champion after</dt><dd>{champion_after}</dd>" in page
    text = Page(page).body_text
    assert all(reason in text for reason in decision.reasons)


def test_data_and_spec_text_is_escaped() -> None:
    page, rendered = hostile_report()
    parsed = Page(page)
    assert len(parsed.all("img")) == len(rendered)
    assert not {t for t, _ in parsed.tags} & {"script", "b", "i"}
    text = parsed.body_text
    for written in HOSTILE_TEXTS:
        assert written in text, written
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page


def test_a_champion_evaluation_must_match_the_decision(gss_holdout: Holdout) -> None:
    decision = decision_on(gss_holdout, GatesSpec(), champion_version=None, champion=None)
    with pytest.raises(ValueError, match="gss_wages: the decision's champion version is None but a champion"):
        evaluation_report(
            model="gss_wages",
            decision=decision,
            candidate=gss_holdout.candidate.evaluation,
            champion=gss_holdout.champion.evaluation,
            figures=[],
            threshold=DECISION_THRESHOLD,
            generated_at="now",
        )


def test_a_figure_that_is_not_png_is_refused(gss_holdout: Holdout) -> None:
    decision = decision_on(gss_holdout, GatesSpec())
    with pytest.raises(ValueError, match="figure 'roc': the bytes are not a PNG image"):
        evaluation_report(
            model="gss_wages",
            decision=decision,
            candidate=gss_holdout.candidate.evaluation,
            champion=gss_holdout.champion.evaluation,
            figures=[PngFigure("roc", "ROC", b"<svg onload=alert(1)></svg>")],
            threshold=DECISION_THRESHOLD,
            generated_at="now",
        )
