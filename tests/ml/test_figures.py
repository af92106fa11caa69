"""The evaluation figures draw the holdout's numbers, deterministically, on real GSS models."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from mlops_assets.contract import Fairness
from mlops_assets.ml import figures
from mlops_assets.ml.evaluation import DECISION_THRESHOLD, calibration_bins, calibration_error, evaluate
from mlops_assets.ml.figures import FigureName, PngFigure, ScoredModel, evaluation_figures
from mlops_assets.spec import GatesSpec
from tests.ml.conftest import Holdout
from tests.ml.report_cases import HOSTILE_GROUP, MATH_GROUP, tiny_models

EVERY_FIGURE = [str(n) for n in FigureName]


def line(ax: Axes, label: str) -> tuple[np.ndarray, np.ndarray]:
    (found,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return np.asarray(found.get_xdata(), dtype=float), np.asarray(found.get_ydata(), dtype=float)


def bar_heights(ax: Axes, label: str) -> list[float]:
    (container,) = [c for c in ax.containers if c.get_label() == label]
    return [patch.get_height() for patch in container]


def legend_texts(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None, f"axes {ax.get_title()!r} has no legend"
    return [t.get_text() for t in legend.get_texts()]


def test_every_figure_is_a_png_titled_with_both_versions(gss_holdout: Holdout) -> None:
    rendered = evaluation_figures(
        y=gss_holdout.y, candidate=gss_holdout.candidate, champion=gss_holdout.champion, gates=GatesSpec()
    )
    assert [f.name for f in rendered] == EVERY_FIGURE
    rows = f"{len(gss_holdout.y):,} rows"
    for figure in rendered:
        width, height = figure.size
        assert width >= 600 and height >= 400, figure.name
        assert "candidate v3" in figure.title and "champion v2" in figure.title and rows in figure.title
        assert figure.filename == f"{figure.name}.png"


def test_same_inputs_give_the_same_bytes(gss_holdout: Holdout) -> None:
    def draw() -> list[PngFigure]:
        return evaluation_figures(
            y=gss_holdout.y, candidate=gss_holdout.candidate, champion=gss_holdout.champion, gates=GatesSpec()
        )

    first, second = draw(), draw()
    assert [f.png for f in first] == [f.png for f in second]
    # The PNG's metadata names no matplotlib version, so an upgrade changes no byte by itself.
    assert all(b"Matplotlib" not in f.png for f in first)


def test_roc_curves_are_the_holdouts_with_the_operating_point(gss_holdout: Holdout) -> None:
    y, models = gss_holdout.y, [gss_holdout.candidate, gss_holdout.champion]
    ax = figures.roc_figure(y, models, threshold=DECISION_THRESHOLD).axes[0]
    auc = gss_holdout.candidate.evaluation.metrics["roc_auc"]
    assert f"candidate v3 (AUC {auc:.3f})" in legend_texts(ax)
    for model in models:
        (label,) = [t for t in legend_texts(ax) if t.startswith(model.label)]
        fpr, tpr = line(ax, label)
        expected_fpr, expected_tpr, _ = roc_curve(y, model.proba)
        np.testing.assert_array_equal(fpr, expected_fpr)
        np.testing.assert_array_equal(tpr, expected_tpr)
        predicted = model.proba >= DECISION_THRESHOLD
        point = line(ax, f"_operating point {model.label}")
        assert point[0][0] == pytest.approx((predicted & (y == 0)).sum() / (y == 0).sum())
        assert point[1][0] == pytest.approx((predicted & (y == 1)).sum() / (y == 1).sum())
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("false positive rate", "true positive rate")


def test_precision_recall_points_sit_at_the_threshold(gss_holdout: Holdout) -> None:
    y, model = gss_holdout.y, gss_holdout.candidate
    ax = figures.precision_recall_figure(y, [model], threshold=0.3).axes[0]
    recall, precision = line(ax, "_operating point candidate v3")
    predicted = model.proba >= 0.3
    assert recall[0] == pytest.approx((predicted & (y == 1)).sum() / (y == 1).sum())
    assert precision[0] == pytest.approx((predicted & (y == 1)).sum() / predicted.sum())
    assert any(t.startswith("positive rate ") for t in legend_texts(ax))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("recall", "precision")


def test_calibration_points_are_the_bins_of_the_metric(gss_holdout: Holdout) -> None:
    y, model = gss_holdout.y, gss_holdout.champion
    ax = figures.calibration_figure(y, [model]).axes[0]
    error = model.evaluation.metrics["calibration_error"]
    mean_score, positive_rate = line(ax, f"champion v2 (calibration error {error:.3f})")
    bins = [b for b in calibration_bins(y, model.proba) if b[0] > 0]
    np.testing.assert_allclose(mean_score, [b[1] for b in bins])
    np.testing.assert_allclose(positive_rate, [b[2] for b in bins])


@pytest.mark.parametrize(
    ("threshold", "candidate_cells", "champion_cells"),
    [
        # (tn, fp, fn, tp) counted by hand from tiny_models
        (0.5, (3, 1, 1, 3), (2, 2, 2, 2)),
        (0.65, (4, 0, 1, 3), (3, 1, 3, 1)),
        (0.35, (3, 1, 0, 4), (1, 3, 2, 2)),
    ],
)
def test_confusion_matrix_counts_at_the_threshold(
    threshold: float, candidate_cells: tuple[int, ...], champion_cells: tuple[int, ...]
) -> None:
    y, candidate, champion = tiny_models(["f", "m"] * 4)
    figure = figures.confusion_figure(y, [candidate, champion], threshold=threshold)
    assert f"at threshold {threshold:.2f}" in figure.get_suptitle()
    for ax, cells in zip(figure.axes, (candidate_cells, champion_cells), strict=True):
        shown = {tuple(round(v) for v in t.get_position()): t.get_text().split("\n")[0] for t in ax.texts}
        # (column, row) of the drawn matrix: rows are actual, columns predicted
        assert [shown[(0, 0)], shown[(1, 0)], shown[(0, 1)], shown[(1, 1)]] == [str(c) for c in cells]
        assert (ax.get_xlabel().split(" ")[0], ax.get_ylabel()) == ("predicted", "actual")


def test_group_bars_are_fairlearns_values_side_by_side(gss_holdout: Holdout) -> None:
    models = [gss_holdout.candidate, gss_holdout.champion]
    figure = figures.group_metrics_figure(models, threshold=DECISION_THRESHOLD)
    assert len(figure.axes) == len(figures.GROUP_METRICS)
    for ax, metric in zip(figure.axes, figures.GROUP_METRICS, strict=True):
        for model in models:
            (gender,) = model.evaluation.fairness
            assert bar_heights(ax, model.label) == pytest.approx(
                [gender.by_group[g][metric] for g in ("Female", "Male")]
            )
        assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["Female", "Male"]
    assert legend_texts(figure.axes[0]) == ["candidate v3", "champion v2"]


@pytest.mark.parametrize(
    ("gates", "legend"),
    [
        (GatesSpec(), ["spec limit 0.250", "spec limit 0.250"]),
        (
            GatesSpec(max_demographic_parity_difference=0.1, max_equalized_odds_difference=None),
            ["spec limit 0.100", "no limit in the spec"],
        ),
    ],
)
def test_fairness_gap_bars_with_the_specs_limits(gss_holdout: Holdout, gates: GatesSpec, legend: list[str]) -> None:
    models = [gss_holdout.candidate, gss_holdout.champion]
    figure = figures.fairness_gaps_figure(models, gates=gates, threshold=DECISION_THRESHOLD)
    limits = [gates.max_demographic_parity_difference, gates.max_equalized_odds_difference]
    for ax, gap, limit, limit_label in zip(figure.axes, Fairness.GAPS, limits, legend, strict=True):
        for model in models:
            assert bar_heights(ax, model.label) == pytest.approx([model.evaluation.worst(gap)])
        assert limit_label in legend_texts(ax)
        if limit is not None:
            assert line(ax, limit_label)[1][0] == pytest.approx(limit)


def test_a_first_model_is_drawn_alone(gss_holdout: Holdout) -> None:
    rendered = evaluation_figures(y=gss_holdout.y, candidate=gss_holdout.candidate, champion=None, gates=GatesSpec())
    assert [f.name for f in rendered] == EVERY_FIGURE
    assert all("candidate v3 (no champion to compare)" in f.title and "champion v" not in f.title for f in rendered)
    ax = figures.roc_figure(gss_holdout.y, [gss_holdout.candidate], threshold=DECISION_THRESHOLD).axes[0]
    assert legend_texts(ax) == [
        "chance",
        f"candidate v3 (AUC {gss_holdout.candidate.evaluation.metrics['roc_auc']:.3f})",
        "operating point (threshold 0.50)",
    ]


def test_without_sensitive_features_there_is_no_fairness_figure(gss_holdout: Holdout) -> None:
    def blind(model: ScoredModel) -> ScoredModel:
        return dataclasses.replace(model, evaluation=dataclasses.replace(model.evaluation, fairness=[]))

    rendered = evaluation_figures(
        y=gss_holdout.y, candidate=blind(gss_holdout.candidate), champion=blind(gss_holdout.champion), gates=GatesSpec()
    )
    assert [f.name for f in rendered] == EVERY_FIGURE[:4]


def test_group_values_are_drawn_as_written() -> None:
    y, candidate, champion = tiny_models([MATH_GROUP, HOSTILE_GROUP] * 4)
    rendered = evaluation_figures(y=y, candidate=candidate, champion=champion, gates=GatesSpec())
    assert [f.name for f in rendered] == EVERY_FIGURE
    with figures._style():
        figure = figures.group_metrics_figure([candidate, champion], threshold=DECISION_THRESHOLD)
        figures.to_png(figure)
    labels = [t.get_text().split("\n")[0] for t in figure.axes[0].get_xticklabels()]
    assert labels == sorted([MATH_GROUP, figures._cut(HOSTILE_GROUP)])


def test_a_single_class_holdout_says_the_curves_are_undefined() -> None:
    y = np.zeros(6, dtype=int)
    proba = np.linspace(0.1, 0.6, 6)
    model = ScoredModel("candidate", "1", proba, evaluate(y, proba, pd.DataFrame({"g": list("aabbab")})))
    rendered = evaluation_figures(y=y, candidate=model, champion=None, gates=GatesSpec())
    assert [f.name for f in rendered] == EVERY_FIGURE
    ax = figures.roc_figure(y, [model], threshold=DECISION_THRESHOLD).axes[0]
    assert [t.get_text() for t in ax.texts] == ["undefined: the holdout holds a single class"]


def _bad(holdout: Holdout, **changes: object) -> dict:
    args: dict = {
        "y": holdout.y,
        "candidate": holdout.candidate,
        "champion": holdout.champion,
        "gates": GatesSpec(),
    }
    for key, value in changes.items():
        args[key] = value(holdout) if callable(value) else value
    return args


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"y": lambda h: h.y[:-1]}, r"candidate v3: \d+ scores for \d+ holdout labels"),
        (
            {"y": lambda h: np.where(np.arange(len(h.y)) == 0, 2, h.y)},
            "labels must be 0 or 1; 1 rows hold other values: 2",
        ),
        (
            {"champion": lambda h: dataclasses.replace(h.champion, proba=np.where(h.y == 1, np.nan, h.champion.proba))},
            "champion v2: \\d+ scores are not probabilities",
        ),
        (
            {"champion": lambda h: dataclasses.replace(h.champion, proba=h.champion.proba * 1.5)},
            "champion v2: \\d+ scores are not probabilities",
        ),
        (
            {
                "candidate": lambda h: dataclasses.replace(
                    h.candidate, evaluation=dataclasses.replace(h.candidate.evaluation, rows=10)
                )
            },
            "candidate v3: its evaluation covers 10 rows",
        ),
        ({"threshold": 1.0}, "threshold must lie strictly between 0 and 1"),
    ],
)
def test_bad_input_names_the_model(gss_holdout: Holdout, changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluation_figures(**_bad(gss_holdout, **changes))


def test_a_figure_that_is_no_png_says_so() -> None:
    with pytest.raises(ValueError, match="figure 'roc': the bytes are not a PNG image"):
        _ = PngFigure("roc", "ROC", b"<svg onload=alert(1)>").size


def test_calibration_bins_by_hand() -> None:
    y = np.array([0, 1, 1, 0])
    proba = np.array([0.05, 0.15, 0.95, 0.5])
    bins = calibration_bins(y, proba)
    filled = {i: b for i, b in enumerate(bins) if b[0]}
    # 0.5 opens the bin [0.5, 0.6), as in the calibration error the gate reads
    assert filled == {0: (1, 0.05, 0.0), 1: (1, 0.15, 1.0), 5: (1, 0.5, 0.0), 9: (1, 0.95, 1.0)}
    assert all(np.isnan(b[1]) and np.isnan(b[2]) for i, b in enumerate(bins) if i not in filled)
    assert calibration_error(y, proba) == pytest.approx((0.05 + 0.85 + 0.5 + 0.05) / 4)


def test_importing_figures_and_report_draws_in_nothing() -> None:
    probe = "import sys, mlops_assets.ml.figures, mlops_assets.ml.report; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_drawing_leaves_pyplot_alone() -> None:
    probe = (
        "import sys, numpy as np, pandas as pd;"
        "from mlops_assets.ml.evaluation import evaluate;"
        "from mlops_assets.ml.figures import ScoredModel, evaluation_figures;"
        "from mlops_assets.spec import GatesSpec;"
        "y = np.array([0, 1] * 20); p = np.linspace(0.05, 0.95, 40);"
        "m = ScoredModel('candidate', '1', p, evaluate(y, p, pd.DataFrame({'g': ['a', 'b'] * 20})));"
        "evaluation_figures(y=y, candidate=m, champion=None, gates=GatesSpec());"
        "print('matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_figures_are_matplotlib_figures_with_titles_and_labels(gss_holdout: Holdout) -> None:
    y, models = gss_holdout.y, [gss_holdout.candidate, gss_holdout.champion]
    built: list[Figure] = [
        figures.roc_figure(y, models, threshold=0.5),
        figures.precision_recall_figure(y, models, threshold=0.5),
        figures.calibration_figure(y, models),
        figures.confusion_figure(y, models, threshold=0.5),
        figures.group_metrics_figure(models, threshold=0.5),
        figures.fairness_gaps_figure(models, gates=GatesSpec(), threshold=0.5),
    ]
    for figure in built:
        what = figure.get_suptitle()
        assert "candidate v3 vs champion v2" in what
        assert figure.axes[0].get_ylabel(), what
        assert all(ax.get_xlabel() or ax.get_title() for ax in figure.axes), what
        named = [t for ax in figure.axes if ax.get_legend() for t in legend_texts(ax)]
        named += [ax.get_title() for ax in figure.axes]
        for model in models:
            assert any(text.startswith(model.label) for text in named), (what, model.label)
