"""Evaluation figures: what a reviewer looks at before a candidate replaces the champion.

Every figure is drawn from the shared holdout: its labels, the positive-class scores of the
candidate and of the champion (when there is one) and each model's ``Evaluation``, so a picture
shows the very numbers the promotion gates read. ``evaluation_figures`` draws all of them and
returns PNG bytes, which is what an MLflow run, a lake file and the HTML report take.

The figures use matplotlib's object-oriented API on the Agg canvas, never pyplot: no backend is
selected, nothing registers in pyplot's global figure list, so a long-lived process (a Dagster run
worker, the serving process) keeps no figure alive after it is rendered. Each figure is drawn in
matplotlib's default style with math text off, whatever a user's ``matplotlibrc`` says, so the
same inputs give the same bytes and a group value with ``$`` in it is drawn as written. The
style is set for the duration of one call and matplotlib is not thread-safe: draw from one
thread at a time (a Dagster step does).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from mlops_assets.contract import Fairness
from mlops_assets.ml.evaluation import DECISION_THRESHOLD, Evaluation, GroupFairness

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from mlops_assets.spec import GatesSpec

DPI = 100
CANDIDATE_COLOR = "#1f77b4"
CHAMPION_COLOR = "#ff7f0e"
LIMIT_COLOR = "#d62728"
CALIBRATION_BINS = 10
# Per-group metrics drawn side by side, with their labels (fairlearn's MetricFrame columns).
GROUP_METRICS = {
    "selection_rate": "selection rate",
    "true_positive_rate": "true positive rate",
    "false_positive_rate": "false positive rate",
    "accuracy": "accuracy",
}
GAP_LABELS = {
    Fairness.DEMOGRAPHIC_PARITY: "demographic parity difference",
    Fairness.EQUALIZED_ODDS: "equalized odds difference",
}
# Longer group values are cut in tick labels (the HTML report's tables show them whole).
TICK_LABEL_CHARS = 14


class FigureName(StrEnum):
    """The figures of one evaluation; a figure's file is ``<name>.png``."""

    ROC = "roc"
    PRECISION_RECALL = "precision_recall"
    CALIBRATION = "calibration"
    CONFUSION_MATRIX = "confusion_matrix"
    GROUP_METRICS = "group_metrics"
    FAIRNESS_GAPS = "fairness_gaps"


@dataclass(frozen=True)
class ScoredModel:
    """One model on the shared holdout: its positive-class scores and its evaluation there."""

    role: str
    version: str
    proba: np.ndarray
    evaluation: Evaluation

    @property
    def label(self) -> str:
        return f"{self.role} v{self.version}"


@dataclass(frozen=True)
class PngFigure:
    """A rendered figure: its name (the file stem), its title (the image's alt text) and PNG bytes."""

    name: str
    title: str
    png: bytes

    @property
    def filename(self) -> str:
        return f"{self.name}.png"

    @property
    def size(self) -> tuple[int, int]:
        """Width and height in pixels, read from the PNG header.

        Raises:
            ValueError: the bytes are not a PNG image.
        """
        if len(self.png) < 24 or self.png[:8] != b"\x89PNG\r\n\x1a\n" or self.png[12:16] != b"IHDR":
            raise ValueError(f"figure {self.name!r}: the bytes are not a PNG image")
        width, height = struct.unpack(">II", self.png[16:24])
        return width, height


def evaluation_figures(
    *,
    y: np.ndarray,
    candidate: ScoredModel,
    champion: ScoredModel | None,
    gates: GatesSpec,
    threshold: float = DECISION_THRESHOLD,
) -> list[PngFigure]:
    """Every figure of one evaluation, rendered as PNG.

    ROC and precision-recall curves with the operating point at ``threshold``, the reliability
    plot, the confusion matrix at ``threshold``, and, when the holdout has sensitive features,
    the per-group metrics side by side and the fairness gaps with the limits of ``gates``.

    Args:
        y: the holdout's labels (0/1).
        candidate: the candidate's scores and evaluation on that holdout.
        champion: the champion's on the same rows, or None for a first model.
        gates: the spec's gates; their fairness limits are drawn on the gaps.
        threshold: the decision threshold the evaluation used.

    Raises:
        ValueError: labels that are not 0/1, scores outside [0, 1] or of another length than the
            labels, an evaluation of another number of rows, or a threshold outside (0, 1); the
            message names the model.
    """
    y = _checked_labels(y)
    models = [_checked(m, len(y)) for m in (candidate, champion) if m is not None]
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold!r}")
    builders: dict[FigureName, Callable[[], Figure]] = {
        FigureName.ROC: lambda: roc_figure(y, models, threshold=threshold),
        FigureName.PRECISION_RECALL: lambda: precision_recall_figure(y, models, threshold=threshold),
        FigureName.CALIBRATION: lambda: calibration_figure(y, models),
        FigureName.CONFUSION_MATRIX: lambda: confusion_figure(y, models, threshold=threshold),
    }
    if candidate.evaluation.fairness:
        builders[FigureName.GROUP_METRICS] = lambda: group_metrics_figure(models, threshold=threshold)
        builders[FigureName.FAIRNESS_GAPS] = lambda: fairness_gaps_figure(models, gates=gates, threshold=threshold)
    rendered = []
    with _style():
        for name, build in builders.items():
            figure = build()
            rendered.append(PngFigure(str(name), _title_of(figure), to_png(figure)))
    return rendered


def to_png(figure: Figure) -> bytes:
    """The figure as PNG bytes, without the matplotlib version in the file's metadata."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer, metadata={"Software": None})
    return buffer.getvalue()


def roc_figure(y: np.ndarray, models: Sequence[ScoredModel], *, threshold: float) -> Figure:
    """ROC curves of the models, each with its operating point at ``threshold``."""
    from sklearn.metrics import roc_curve

    figure, (ax,) = _figure((6.4, 5.4))
    _suptitle(figure, "ROC curve", models, len(y))
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    if _single_class(ax, y):
        return _finish(ax, "false positive rate", "true positive rate")
    for model, color in _with_colors(models):
        fpr, tpr, _ = roc_curve(y, model.proba)
        ax.plot(fpr, tpr, color=color, label=f"{model.label} (AUC {_fmt(model.evaluation.metrics.get('roc_auc'))})")
        counts = _counts(y, model.proba, threshold)
        _operating_point(ax, counts.fpr, counts.tpr, model, color)
    ax.plot([], [], "o", color="white", markeredgecolor="black", label=f"operating point (threshold {threshold:.2f})")
    return _finish(ax, "false positive rate", "true positive rate", legend="lower right")


def precision_recall_figure(y: np.ndarray, models: Sequence[ScoredModel], *, threshold: float) -> Figure:
    """Precision-recall curves of the models, each with its operating point at ``threshold``."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    figure, (ax,) = _figure((6.4, 5.4))
    _suptitle(figure, "Precision-recall curve", models, len(y))
    prevalence = float(y.mean())
    ax.axhline(prevalence, linestyle=":", color="grey", label=f"positive rate {prevalence:.3f}")
    if _single_class(ax, y):
        return _finish(ax, "recall", "precision")
    for model, color in _with_colors(models):
        precision, recall, _ = precision_recall_curve(y, model.proba)
        ap = average_precision_score(y, model.proba)
        ax.plot(recall, precision, drawstyle="steps-post", color=color, label=f"{model.label} (AP {ap:.3f})")
        counts = _counts(y, model.proba, threshold)
        if counts.tp + counts.fp:
            _operating_point(ax, counts.tpr, counts.precision, model, color)
    ax.plot([], [], "o", color="white", markeredgecolor="black", label=f"operating point (threshold {threshold:.2f})")
    return _finish(ax, "recall", "precision", legend="lower left")


def calibration_figure(y: np.ndarray, models: Sequence[ScoredModel]) -> Figure:
    """Reliability plot (positive rate against mean score per score bin) over the score histogram."""
    import numpy as np

    from mlops_assets.ml.evaluation import calibration_bins

    figure, (ax, hist) = _figure((6.4, 6.4), rows=2, height_ratios=(3, 1), sharex=True)
    _suptitle(figure, "Calibration", models, len(y))
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    for model, color in _with_colors(models):
        bins = np.array(calibration_bins(y, model.proba, CALIBRATION_BINS), dtype=float)
        filled = bins[:, 0] > 0
        error = _fmt(model.evaluation.metrics.get("calibration_error"))
        ax.plot(bins[filled, 1], bins[filled, 2], "o-", color=color, label=f"{model.label} (calibration error {error})")
        hist.stairs(bins[:, 0], edges, color=color, linewidth=1.5, label=model.label)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("reliability: the positive rate of the rows in each score bin", fontsize="medium")
    ax.set_ylabel("observed positive rate")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)
    hist.set_xlim(0.0, 1.0)
    hist.set_xlabel(f"mean score in each of {CALIBRATION_BINS} equal-width bins")
    hist.set_ylabel("rows in bin")
    hist.grid(alpha=0.3)
    return figure


def confusion_figure(y: np.ndarray, models: Sequence[ScoredModel], *, threshold: float) -> Figure:
    """Confusion matrix of each model at ``threshold``: counts, with each actual class's share."""
    import numpy as np

    figure, axes = _figure((max(7.0, 5.0 * len(models) + 0.6), 4.6), columns=len(models))
    _suptitle(figure, f"Confusion matrix at threshold {threshold:.2f}", models, len(y))
    for ax, model in zip(axes, models, strict=True):
        counts = _counts(y, model.proba, threshold)
        matrix = np.array([[counts.tn, counts.fp], [counts.fn, counts.tp]])
        actual = matrix.sum(axis=1, keepdims=True)
        share = np.divide(matrix, actual, out=np.zeros((2, 2)), where=actual > 0)
        ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        for (row, column), count in np.ndenumerate(matrix):
            ax.text(
                column,
                row,
                f"{count:,}\n{share[row, column]:.1%} of actual",
                ha="center",
                va="center",
                color="white" if share[row, column] > 0.6 else "black",
            )
        ax.set_xticks([0, 1], ["negative", "positive"])
        ax.set_yticks([0, 1], ["negative", "positive"])
        ax.set_xlabel(f"predicted (score >= {threshold:.2f} is positive)")
        ax.set_ylabel("actual")
        ax.set_title(f"{model.label}: accuracy {_fmt(model.evaluation.metrics.get('accuracy'))}")
    return figure


def group_metrics_figure(models: Sequence[ScoredModel], *, threshold: float) -> Figure:
    """Per sensitive feature (a row of panels), each group's metrics with the models side by side."""
    import numpy as np

    features = [f.feature for f in models[0].evaluation.fairness]
    most = max(len(f.by_group) for f in models[0].evaluation.fairness)
    width = min(20.0, max(10.0, 1.0 + len(GROUP_METRICS) * (0.6 + 0.9 * most)))
    figure, axes = _figure(
        (width, 3.2 * len(features) + 0.8), rows=len(features), columns=len(GROUP_METRICS), sharey=True
    )
    _suptitle(figure, f"Metrics by group at threshold {threshold:.2f}", models, models[0].evaluation.rows)
    grid = np.asarray(axes, dtype=object).reshape(len(features), len(GROUP_METRICS))
    width = 0.8 / len(models)
    for row, feature in enumerate(features):
        by_model = [_feature_of(m, feature).by_group for m in models]
        groups = sorted(by_model[0])
        for ax, (metric, label) in zip(grid[row], GROUP_METRICS.items(), strict=True):
            for i, (model, color) in enumerate(_with_colors(models)):
                offsets = np.arange(len(groups)) + (i - (len(models) - 1) / 2) * width
                values = [by_model[i].get(g, {}).get(metric) for g in groups]
                _bars(ax, offsets, values, width=width, color=color, label=model.label)
            ticks = [f"{_cut(g)}\nn={_count(by_model[0][g])}" for g in groups]
            ax.set_xticks(np.arange(len(groups)), ticks, fontsize="small")
            ax.set_title(f"{label} by {_cut(feature)}", fontsize="medium")
            ax.grid(axis="y", alpha=0.3)
        grid[row][0].set_ylabel("rate")
        grid[row][0].legend(loc="upper left", fontsize="small")
    grid[0][0].set_ylim(0.0, 1.1)
    grid[0][0].set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
    return figure


def fairness_gaps_figure(models: Sequence[ScoredModel], *, gates: GatesSpec, threshold: float) -> Figure:
    """Each fairness gap per sensitive feature, the models side by side, the spec's limit as a line."""
    import numpy as np

    features = [f.feature for f in models[0].evaluation.fairness]
    width = min(16.0, max(7.0, 1.0 + len(Fairness.GAPS) * (1.2 + 1.0 * len(features))))
    figure, axes = _figure((width, 4.8), columns=len(Fairness.GAPS), sharey=True)
    _suptitle(figure, f"Fairness gaps at threshold {threshold:.2f}", models, models[0].evaluation.rows)
    limits = {gap: getattr(gates, attribute) for gap, attribute in Fairness.CHECKS.values()}
    width = 0.8 / len(models)
    highest = 0.0
    for ax, gap in zip(axes, Fairness.GAPS, strict=True):
        top = 0.0
        for i, (model, color) in enumerate(_with_colors(models)):
            offsets = np.arange(len(features)) + (i - (len(models) - 1) / 2) * width
            values = [getattr(_feature_of(model, f), gap) for f in features]
            _bars(ax, offsets, values, width=width, color=color, label=model.label, annotate=True)
            top = max([top, *(v for v in values if v is not None)])
        limit = limits[gap]
        if limit is None:
            ax.plot([], [], " ", label="no limit in the spec")
        else:
            ax.axhline(limit, color=LIMIT_COLOR, linestyle="--", linewidth=1.5, label=f"spec limit {limit:.3f}")
            top = max(top, limit)
        ax.set_xticks(np.arange(len(features)), [_cut(f) for f in features])
        ax.set_title(GAP_LABELS[gap], fontsize="medium")
        ax.set_xlabel("sensitive feature")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")
        highest = max(highest, top)
    # Headroom above the highest bar or limit for the legend.
    axes[0].set_ylim(0.0, max(0.1, highest * 1.45))
    axes[0].set_ylabel("largest difference between groups")
    return figure


@dataclass(frozen=True)
class _Counts:
    tn: int
    fp: int
    fn: int
    tp: int

    @property
    def fpr(self) -> float:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else float("nan")

    @property
    def tpr(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")


def _counts(y: np.ndarray, proba: np.ndarray, threshold: float) -> _Counts:
    import numpy as np

    predicted = (proba >= threshold).astype(np.int64)
    tn, fp, fn, tp = (int(c) for c in np.bincount(y * 2 + predicted, minlength=4))
    return _Counts(tn=tn, fp=fp, fn=fn, tp=tp)


@contextmanager
def _style() -> Iterator[None]:
    import matplotlib.style

    with matplotlib.style.context("default"), matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        yield


def _figure(
    size: tuple[float, float],
    *,
    rows: int = 1,
    columns: int = 1,
    height_ratios: tuple[float, ...] | None = None,
    sharex: bool = False,
    sharey: bool = False,
) -> tuple[Figure, list[Axes]]:
    """A figure of ``size`` inches with fixed margins (in inches) for the titles and labels.

    Fixed margins rather than constrained layout: the labels are short and of known size, and
    the layout solver took about half of the drawing time.
    """
    from matplotlib.figure import Figure

    width, height = size
    figure = Figure(figsize=size, dpi=DPI)
    figure.subplots_adjust(
        left=0.8 / width,
        right=1.0 - 0.25 / width,
        bottom=0.65 / height,
        top=1.0 - 0.8 / height,
        wspace=0.08 if sharey else 0.3,
        hspace=0.45 if rows > 1 and not sharex else 0.08,
    )
    axes = figure.subplots(
        rows, columns, squeeze=False, height_ratios=height_ratios, sharex=sharex, sharey=sharey
    ).ravel()
    return figure, list(axes)


def _suptitle(figure: Figure, what: str, models: Sequence[ScoredModel], rows: int) -> None:
    versus = " vs ".join(m.label for m in models)
    if len(models) == 1:
        versus += " (no champion to compare)"
    figure.suptitle(f"{what}: {versus}\non the holdout of {rows:,} rows", fontsize="large")


def _title_of(figure: Figure) -> str:
    text = figure.get_suptitle()
    return text.replace("\n", " ")


def _finish(ax: Axes, xlabel: str, ylabel: str, *, legend: str = "best") -> Figure:
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend, fontsize="small")
    return ax.figure


def _operating_point(ax: Axes, x: float, y: float, model: ScoredModel, color: str) -> None:
    # A leading underscore keeps the point out of the legend, which has one entry for all points.
    ax.plot([x], [y], "o", color=color, markersize=7, markeredgecolor="black", label=f"_operating point {model.label}")


def _single_class(ax: Axes, y: np.ndarray) -> bool:
    import numpy as np

    if len(np.unique(y)) == 2:
        return False
    ax.text(0.5, 0.5, "undefined: the holdout holds a single class", ha="center", va="center", transform=ax.transAxes)
    return True


def _bars(
    ax: Axes,
    positions: np.ndarray,
    values: Sequence[float | None],
    *,
    width: float,
    color: str,
    label: str,
    annotate: bool = False,
) -> None:
    heights = [0.0 if v is None else v for v in values]
    ax.bar(positions, heights, width=width, color=color, label=label)
    for x, value in zip(positions, values, strict=True):
        if value is None:
            ax.text(x, 0.01, "undefined", rotation=90, ha="center", va="bottom", fontsize="x-small")
        elif annotate:
            ax.text(x, value, f"{value:.3f}", ha="center", va="bottom", fontsize="small")


def _with_colors(models: Sequence[ScoredModel]) -> list[tuple[ScoredModel, str]]:
    return list(zip(models, (CANDIDATE_COLOR, CHAMPION_COLOR), strict=False))


def _feature_of(model: ScoredModel, feature: str) -> GroupFairness:
    for fairness in model.evaluation.fairness:
        if fairness.feature == feature:
            return fairness
    raise ValueError(f"{model.label}: its evaluation has no fairness for sensitive feature {feature!r}")


def _count(values: dict[str, float | None]) -> str:
    count = values.get("count")
    return "?" if count is None else f"{int(count):,}"


def _cut(text: str) -> str:
    return text if len(text) <= TICK_LABEL_CHARS else text[: TICK_LABEL_CHARS - 1] + "…"


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def _checked_labels(y: np.ndarray) -> np.ndarray:
    import numpy as np

    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"holdout labels: need a non-empty 1-d array, got shape {labels.shape}")
    unexpected = labels[~np.isin(labels, [0, 1])]
    if len(unexpected):
        shown = ", ".join(repr(v) for v in np.unique(unexpected)[:5].tolist())
        raise ValueError(f"holdout labels must be 0 or 1; {len(unexpected)} rows hold other values: {shown}")
    return labels.astype(np.int64)


def _checked(model: ScoredModel, rows: int) -> ScoredModel:
    import numpy as np

    proba = np.asarray(model.proba, dtype=float)
    if proba.shape != (rows,):
        raise ValueError(f"{model.label}: {proba.shape[0] if proba.ndim else 0} scores for {rows} holdout labels")
    if not np.isfinite(proba).all() or proba.min() < 0.0 or proba.max() > 1.0:
        bad = int((~np.isfinite(proba) | (proba < 0.0) | (proba > 1.0)).sum())
        raise ValueError(f"{model.label}: {bad} scores are not probabilities in [0, 1]")
    if model.evaluation.rows != rows:
        raise ValueError(
            f"{model.label}: its evaluation covers {model.evaluation.rows} rows, the holdout has {rows}; "
            "both must be of the same holdout"
        )
    return ScoredModel(model.role, model.version, proba, model.evaluation)
