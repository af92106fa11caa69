"""``mlops spec init``: a commented starter spec written from a look at the data.

Pure logic over a DataFrame (the CLI reads the source and writes the file): column kinds, batch
column candidates with their batch sizes, the label rule with its class balance, suggested
sensitive columns (left commented: only the user can confirm them) and floors set from the
baselines measured on the data (``ml/baseline.py``). With a label the written spec loads as is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from mlops_assets.spec import PipelineSpec, parse_spec

if TYPE_CHECKING:
    import pandas as pd

    from mlops_assets.ml.baseline import Baseline

# Names that usually mark a protected attribute: suggested for fairness, never used as features
# until the user decides.
_SENSITIVE = re.compile(r"(sex|gender|race|ethnic|colou?r|religio|citizen|national|disab|marital|married)", re.I)
_TIME_LIKE = re.compile(r"(year|date|month|week|quarter|period|wave|batch|day)", re.I)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_BATCHES = 60
# More categories than this cannot be a feature: sklearn_hgb takes at most 255 per column, and a
# column that keeps growing new values (a case number, free text) fails the validation suite's
# known-categories expectation on every new batch.
MAX_CATEGORIES = 255
# A single column that ranks the label this well on its own is usually the outcome recorded in
# another form (label leakage), not something known when the prediction is made.
LEAKAGE_ROC_AUC = 0.95
# How far below the logistic regression's holdout score the starter floor sits: a candidate
# that does worse than a linear model by more than this has not learned what the data allows.
FLOOR_MARGIN = 0.02


@dataclass(frozen=True)
class BatchCandidate:
    column: str
    counts: dict[str, int]

    @property
    def score(self) -> tuple[int, int]:
        return (1 if _TIME_LIKE.search(self.column) else 0, -abs(len(self.counts) - 8))


@dataclass(frozen=True)
class Profile:
    numeric: list[str]
    categorical: list[str]
    skipped: dict[str, str]
    batch_candidates: list[BatchCandidate]
    sensitive: list[str]
    # Feature -> its ROC AUC on its own, when high enough to suspect label leakage.
    leaking: dict[str, float] = field(default_factory=dict)


def absolute_source(source: str) -> str:
    """A local path, folder or glob made absolute: the spec is read by processes (``make demo``, the
    daemon's code server, run workers) whose working directory is not the one ``--source`` was
    typed in. URIs with a scheme are kept as given."""
    from pathlib import Path

    if "://" in source:
        return source
    return str(Path(source).expanduser().absolute())


def profile(frame: pd.DataFrame, *, label: str | None) -> Profile:
    """Column roles as a first guess: kinds, id-like columns skipped, batch and sensitive candidates."""
    import pandas as pd

    from mlops_assets.ml.data import batch_key, sorted_batches

    numeric, categorical, skipped, candidates, sensitive = [], [], {}, [], []
    for column in frame.columns:
        if column == label:
            continue
        values = frame[column]
        distinct = values.nunique(dropna=True)
        if not _IDENTIFIER.match(str(column)):
            skipped[column] = "not an identifier (feature names become asset check names); rename it to use it"
            continue
        if distinct <= 1:
            skipped[column] = "a single value"
            continue
        is_number = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if distinct == len(values) and (is_number or distinct > 0.95 * len(values)):
            skipped[column] = "a distinct value per row (an id)"
            continue
        if not is_number and distinct > MAX_CATEGORIES:
            skipped[column] = (
                f"{distinct} distinct values in {len(values)} rows (an id or free text?): more than the "
                f"{MAX_CATEGORIES} categories a feature may have"
            )
            continue
        if 3 <= distinct <= MAX_BATCHES and (not is_number or pd.api.types.is_integer_dtype(values)):
            keys = values.dropna().map(batch_key)
            counts = keys.value_counts()
            candidates.append(BatchCandidate(column, {b: int(counts[b]) for b in sorted_batches(keys)}))
        if _SENSITIVE.search(str(column)):
            sensitive.append(column)
            continue
        (numeric if is_number else categorical).append(column)
    candidates.sort(key=lambda c: c.score, reverse=True)
    # Only integer-valued columns with time-like names are proposed as the batch column itself.
    return Profile(numeric, categorical, skipped, candidates, sensitive)


def leaking_columns(frame: pd.DataFrame, label: pd.Series, columns: list[str]) -> dict[str, float]:
    """Columns that alone rank the binary ``label`` with a ROC AUC of at least ``LEAKAGE_ROC_AUC``
    (either direction): numbers by their value, categories by their positive share."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    found = {}
    for column in columns:
        values = frame[column]
        known = values.notna() & label.notna()
        y = label[known].astype(int)
        if y.nunique() < 2:
            continue
        x = values[known]
        if pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x):
            ranked = x.astype(float)
        else:
            ranked = x.astype(str).map(y.groupby(x.astype(str)).mean())
        auc = float(roc_auc_score(y, ranked))
        auc = max(auc, 1 - auc)
        if auc >= LEAKAGE_ROC_AUC:
            found[column] = auc
    return found


def label_rule(frame: pd.DataFrame, column: str) -> dict[str, Any]:
    """``positive_value`` for a label with few values (the minority, or "Yes"/1/True when present),
    ``threshold`` at the median for a numeric label with many."""
    import pandas as pd

    values = frame[column].dropna()
    if values.empty:
        raise ValueError(f"--label: column {column!r} holds no value")
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values) and values.nunique() > 2:
        return {"threshold": float(values.median())}
    counts = values.astype(str).value_counts()
    if len(counts) < 2:
        raise ValueError(f"--label: column {column!r} holds a single value ({counts.index[0]!r})")
    for usual in ("Yes", "yes", "1", "True", "true", "1.0"):
        if usual in counts.index:
            return {"positive_value": _plain(values[values.astype(str) == usual].iloc[0])}
    minority = counts.index[-1]
    return {"positive_value": _plain(values[values.astype(str) == minority].iloc[0])}


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def initial_until(candidate: BatchCandidate) -> str:
    """The batch by which half the rows have arrived: the rest replays as production."""
    total, seen = sum(candidate.counts.values()), 0
    batches = list(candidate.counts)
    for batch in batches[:-1]:
        seen += candidate.counts[batch]
        if seen >= total / 2:
            return batch
    return batches[0]


def starter_spec(name: str, *, source: str, frame: pd.DataFrame, label: str | None) -> tuple[dict[str, Any], Profile]:
    """The spec's keys (as the YAML will hold them, comments aside) and the profile behind them."""
    if not re.match(r"^[a-z][a-z0-9_]*$", name):
        raise ValueError(f"name: {name!r} must be lower_snake_case (it becomes an asset key prefix)")
    if label is not None and label not in frame.columns:
        shown = ", ".join(map(str, list(frame.columns)[:20]))
        raise ValueError(f"--label: no column {label!r} in {source} (it has: {shown})")
    found = profile(frame, label=label)
    data: dict[str, Any] = {"name": name, "source": {"uri": source}}
    batch = next((c for c in found.batch_candidates if _TIME_LIKE.search(c.column)), None)
    numeric, categorical = list(found.numeric), list(found.categorical)
    if batch is not None:
        data["source"]["batch_column"] = batch.column
        for kind in (numeric, categorical):
            if batch.column in kind:
                kind.remove(batch.column)
    if label is not None:
        data["label"] = {"column": label, **label_rule(frame, label)}
    data["features"] = {"numeric": numeric, "categorical": categorical}
    if batch is not None:
        data["training"] = {"initial_until": _batch_value(frame[batch.column], initial_until(batch))}
    if label is not None:
        positive = _positive(frame[label], data["label"])
        found = replace(found, leaking=leaking_columns(frame, positive, numeric + categorical))
    return data, found


def _positive(values: pd.Series, rule: dict[str, Any]) -> pd.Series:
    """The label as 1/0 (NaN where missing) under ``rule``, as the class balance counts it."""
    import pandas as pd

    if "threshold" in rule:
        positive = pd.to_numeric(values) >= rule["threshold"]
    else:
        positive = values.astype(str) == str(rule["positive_value"])
    return positive.astype(float).where(values.notna())


def _batch_value(values: pd.Series, key: str) -> Any:
    import pandas as pd

    return int(key) if pd.api.types.is_integer_dtype(values) else key


def floors(baseline: Baseline) -> dict[str, float]:
    """Starter floors: a little under the logistic regression, never under the best constant."""
    from mlops_assets.ml.baseline import BEST_CONSTANT, LOGISTIC_REGRESSION

    linear, constant = baseline.metrics[LOGISTIC_REGRESSION], baseline.metrics[BEST_CONSTANT]
    return {metric: round(max(constant[metric], linear[metric] - FLOOR_MARGIN) - 0.005, 2) for metric in ("roc_auc",)}


def render(data: dict[str, Any], found: Profile, *, frame: pd.DataFrame, baseline: Baseline | None, origin: str) -> str:
    """The commented YAML text of a starter spec."""
    import yaml

    def dump(value: Any) -> str:
        return yaml.safe_dump(value, default_flow_style=False, sort_keys=False).rstrip()

    def flow(value: Any) -> str:
        # A bare scalar dumps as a document ("x\n...\n"); as a mapping's value it is one token.
        return yaml.safe_dump({"k": value}, default_flow_style=True, width=10_000).strip()[len("{k: ") : -1]

    name = data["name"]
    lines = [
        f"# Starter spec written by `mlops spec init {name}` from {data['source']['uri']} ({len(frame)} rows).",
        "# Every line below is a guess: read it, change what is wrong, then run",
        "# `MLOPS_PIPELINES=<this file> make demo`.",
        "# Spec reference: README.md, 'Spec reference' (under 'Bring your own data').",
        f"name: {name}",
        "source:",
        f"  uri: {flow(data['source']['uri'])}",
    ]
    batch_column = data["source"].get("batch_column")
    lines.append("  # One Dagster partition per distinct value of the batch column. Candidates (batches: rows):")
    for candidate in found.batch_candidates[:5]:
        shown = ", ".join(f"{b}: {n}" for b, n in list(candidate.counts.items())[:12])
        more = ", ..." if len(candidate.counts) > 12 else ""
        lines.append(f"  #   {candidate.column} ({len(candidate.counts)} batches: {shown}{more})")
    if batch_column:
        lines.append(f"  batch_column: {batch_column}")
    else:
        lines.append(
            "  # None looks like time, so the whole source is one batch `all`; files landed later are batches too."
        )
        lines.append("  # batch_column: <column>")
    lines.append("label:")
    if "label" in data:
        rule = {k: v for k, v in data["label"].items() if k != "column"}
        column = data["label"]["column"]
        lines.append(f"  column: {column}")
        balance = _class_balance(frame, column, rule)
        lines.append(f"  # {balance}")
        lines.append("  " + dump(rule))
    else:
        lines.append("  # Name the column to predict and how it becomes 0/1 (or rerun with --label <column>).")
        # null, not a placeholder string: the spec must fail to load, naming label.column, until edited.
        lines.append("  column: null   # the column to predict")
        lines.append("  positive_value: null   # the value that counts as positive; or threshold: <number>")
    lines.append("features:")
    lines.append("  " + dump(data["features"]).replace("\n", "\n  "))
    for column, why in found.skipped.items():
        lines.append(f"  # left out: {column}: {why}")
    for column, auc in found.leaking.items():
        lines.append(
            f"  # check: {column} alone ranks the label with roc_auc {auc:.3f}. If it is only known once the "
            "outcome is (label leakage), remove it."
        )
    lines.append("# Suggested sensitive columns, kept out of the features: uncomment the ones that are, to have")
    lines.append("# fairness gated at training and monitored on every labelled batch.")
    if found.sensitive:
        lines.append("# sensitive_features: " + flow(found.sensitive))
    else:
        lines.append("# sensitive_features: []   # no column name suggested one")
    if "training" in data:
        until = data["training"]["initial_until"]
        lines += [
            "training:",
            "  # The batches up to this one train the first model; `mlops demo` replays the later ones as production.",
            f"  initial_until: {flow(until)}",
        ]
    lines.append("gates:")
    if baseline is not None and "gates" in data:
        lines.append(f"  # Measured on the first training data's holdout: roc_auc {baseline.describe('roc_auc')};")
        lines.append(f"  # accuracy {baseline.describe('accuracy')}.")
        lines.append(
            f"  # The floor sits {FLOOR_MARGIN} under the logistic regression: a model below it learned less than a"
        )
        lines.append("  # linear model does. Raise it once you know what the use needs.")
        lines.append("  " + dump({"min_metrics": data["gates"]["min_metrics"]}).replace("\n", "\n  "))
    else:
        lines.append("  # No baseline without a label: the default floor roc_auc >= 0.70 applies until you set one.")
        lines.append("  min_metrics: {roc_auc: 0.70}")
    text = "\n".join(lines) + "\n"
    _check_loads(text, origin=origin, complete="label" in data)
    return text


def _class_balance(frame: pd.DataFrame, column: str, rule: dict[str, Any]) -> str:
    import pandas as pd

    values = frame[column].dropna()
    if "threshold" in rule:
        positive = pd.to_numeric(values) >= rule["threshold"]
        what = f">= {rule['threshold']:g} (the median)"
    else:
        positive = values.astype(str) == str(rule["positive_value"])
        what = f"== {rule['positive_value']!r}"
    others = values.astype(str).value_counts().index.tolist()[:6]
    return (
        f"positive when {what}: {int(positive.sum())} of {len(values)} labelled rows ({positive.mean():.1%}); "
        f"{len(frame) - len(values)} rows without a label. Values seen: {', '.join(map(str, others))}"
    )


def _check_loads(text: str, *, origin: str, complete: bool) -> None:
    import yaml

    if complete:
        parse_spec(yaml.safe_load(text), origin=origin)


def write_starter_spec(name: str, *, source: str, label: str | None, frame: pd.DataFrame, origin: str) -> str:
    """The text of the starter spec for ``frame`` read from ``source``; floors measured when labelled.

    Raises:
        ValueError: the label column is missing or holds one value.
        SpecError: the guessed spec does not load (a bug here, named with the field).
    """
    from mlops_assets.ml.baseline import measure_baseline

    data, found = starter_spec(name, source=source, frame=frame, label=label)
    baseline = None
    if label is not None:
        spec: PipelineSpec = parse_spec(data, origin=origin)
        baseline = measure_baseline(spec, frame)
        data["gates"] = {"min_metrics": floors(baseline)}
    return render(data, found, frame=frame, baseline=baseline, origin=origin)
