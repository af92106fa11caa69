"""Scoring request rows with a loaded model: a flat-array path for one-row HGB requests, else the model's own.

A one-row request through scikit-learn costs mostly overhead: a pandas frame, the
ColumnTransformer's validation and HGB's per-tree Cython calls (about 1.8 ms on one thread here).
``FlatHGB`` precomputes what the fitted pipeline does to one row (the ordinal codes of each
categorical column, the trees' nodes concatenated into flat numpy arrays) and walks every tree at
once, one numpy step per tree level. It replicates ``_predictor.pyx`` routing and HGB's own
summation order (baseline, then each tree in turn) and applies the model's own link function, so
its probabilities are bit-identical to ``predict_proba`` (tests/serving/test_predictor.py checks
it on every row of a GSS slice, with missing values and unseen categories).

Anything else (more rows, torch_mlp, logreg, a pipeline of another shape, a categorical code the
flat path cannot route) goes through ``prepare_inputs`` and the model's ``predict_proba``, the
same path batch scoring takes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mlops_assets.ml.trainers import MISSING_CATEGORY, prepare_inputs

# Codes a categorical split can route by its bitsets; one more slot for "routed as missing".
_CATEGORY_CODES = 256


class Scorer:
    """P(y=1) for request rows, given as column -> values (the model's input columns)."""

    def __init__(self, model: Any, *, numeric: list[str], categorical: list[str]) -> None:
        self.model = model
        self.numeric = numeric
        self.categorical = categorical
        self.flat = FlatHGB.compile(model, numeric=numeric, categorical=categorical)

    def score(self, columns: Mapping[str, Sequence[Any]], n_rows: int) -> list[float]:
        if self.flat is not None and n_rows == 1:
            row = {name: values[0] for name, values in columns.items()}
            fast = self.flat.positive_proba(row)
            if fast is not None:
                return [fast]
        import pandas as pd

        frame = pd.DataFrame({name: list(columns[name]) for name in (*self.numeric, *self.categorical)})
        inputs = prepare_inputs(frame, self.numeric, self.categorical)
        return np.asarray(self.model.predict_proba(inputs))[:, 1].tolist()


class FlatHGB:
    """One fitted ``Pipeline(ColumnTransformer(num passthrough, cat imputer+ordinal), HGB)`` as flat arrays."""

    def __init__(
        self,
        *,
        numeric: list[str],
        categorical: list[str],
        codes: list[dict[str, float]],
        missing_code: list[float],
        nodes: dict[str, np.ndarray],
        roots: np.ndarray,
        depth: int,
        baseline: float,
        link: Any,
    ) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self._codes = codes
        self._missing_code = missing_code
        self._n = nodes
        self._roots = roots
        self._depth = depth
        self._baseline = baseline
        self._link = link
        self._x = np.empty(len(numeric) + len(categorical), dtype=np.float64)
        # Per column the model's trees see (HGB may reorder them), its position in numeric + categorical.
        self._order: list[int] = list(range(len(numeric) + len(categorical)))

    @classmethod
    def compile(cls, model: Any, *, numeric: list[str], categorical: list[str]) -> FlatHGB | None:
        """The flat form of ``model``, or None when it is not a pipeline of the shape this knows."""
        try:
            from sklearn.ensemble import HistGradientBoostingClassifier
            from sklearn.pipeline import Pipeline
        except ImportError:
            return None
        if not isinstance(model, Pipeline) or len(model.steps) != 2:
            return None
        preprocess, hgb = model.steps[0][1], model.steps[1][1]
        if not isinstance(hgb, HistGradientBoostingClassifier) or any(len(p) != 1 for p in hgb._predictors):
            return None
        fitted = {name: (step, list(cols)) for name, step, cols in getattr(preprocess, "transformers_", [])}
        if set(fitted) - {"num", "cat", "remainder"} or fitted.get("remainder", ("drop",))[0] != "drop":
            return None
        if not _is_passthrough(fitted.get("num", ("passthrough", []))[0]):
            return None
        if fitted.get("num", (None, []))[1] != numeric or fitted.get("cat", (None, []))[1] != categorical:
            return None
        # The pipeline's own encoding: a category's string -> its ordinal code (the imputer's fill
        # value for a missing one, NaN for one unseen in training).
        outer: list[dict[str, float]] = []
        if categorical:
            imputer, encoder = fitted["cat"][0].steps[0][1], fitted["cat"][0].steps[1][1]
            if getattr(imputer, "fill_value", None) != MISSING_CATEGORY or not hasattr(encoder, "categories_"):
                return None
            if getattr(encoder, "_infrequent_enabled", False) or not _encodes_unknown_as_nan(encoder):
                return None
            outer = [{str(value): float(i) for i, value in enumerate(cats)} for cats in encoder.categories_]
        inner = _inner_columns(hgb, n_numeric=len(numeric), n_categorical=len(categorical))
        if inner is None:
            return None
        order, recode = inner
        codes: list[dict[str, float]] = []
        missing_code: list[float] = []
        for k, lookup in enumerate(outer):
            again = recode[k]
            composed = {value: again(code) for value, code in lookup.items()}
            codes.append(composed)
            missing_code.append(composed.get(MISSING_CATEGORY, math.nan))
        nodes, roots, depth = _flatten(hgb)
        flat = cls(
            numeric=numeric,
            categorical=categorical,
            codes=codes,
            missing_code=missing_code,
            nodes=nodes,
            roots=roots,
            depth=depth,
            baseline=float(np.asarray(hgb._baseline_prediction).ravel()[0]),
            link=hgb._loss.link,
        )
        flat._order = order
        return flat

    def positive_proba(self, row: Mapping[str, Any]) -> float | None:
        """P(y=1) of one row (validated values: numbers or None, scalars or None); None when a
        value is one the flat path does not route like the model (then the caller falls back)."""
        x = self._x
        n_numeric = len(self.numeric)
        for j, outer in enumerate(self._order):
            if outer < n_numeric:
                value = row[self.numeric[outer]]
                x[j] = math.nan if value is None else float(value)
            else:
                k = outer - n_numeric
                value = row[self.categorical[k]]
                x[j] = self._missing_code[k] if value is None else self._codes[k].get(str(value), math.nan)
        n = self._n
        current = self._roots
        for _ in range(self._depth):
            values = x[n["feature"][current]]
            missing = np.isnan(values)
            left = values <= n["threshold"][current]
            cat_row = n["cat_row"][current]
            is_cat = cat_row >= 0
            if is_cat.any():
                routed_by_code = is_cat & ~(missing | (values < 0))
                code = np.where(routed_by_code, values, _CATEGORY_CODES)
                if (routed_by_code & (code >= _CATEGORY_CODES)).any():
                    return None  # the predictor's uint8 cast of such a value is undefined
                # A categorical value is cast to uint8 by the predictor: truncated toward zero.
                left = np.where(is_cat, n["cat_left"][cat_row, code.astype(np.intp)], left)
            left = np.where(missing, n["missing_left"][current], left)
            current = np.where(left, n["left"][current], n["right"][current])
        # HGB adds the trees in order to the baseline (zeros + baseline, then += each tree).
        raw = np.add.accumulate(np.concatenate(([self._baseline], n["value"][current])))[-1:]
        return float(self._link.inverse(raw)[0])


def _is_passthrough(step: Any) -> bool:
    """ "passthrough" as given, or as scikit-learn >= 1.8 stores it fitted (an identity FunctionTransformer)."""
    if step == "passthrough":
        return True
    from sklearn.preprocessing import FunctionTransformer

    return isinstance(step, FunctionTransformer) and step.func is None and step.inverse_func is None


def _encodes_unknown_as_nan(encoder: Any) -> bool:
    unknown = getattr(encoder, "unknown_value", None)
    return encoder.handle_unknown == "use_encoded_value" and isinstance(unknown, float) and math.isnan(unknown)


def _inner_columns(hgb: Any, *, n_numeric: int, n_categorical: int) -> tuple[list[int], list[Any]] | None:
    """HGB's own preprocessing of its input (numeric then categorical codes): the order its trees
    see the columns in, and per categorical column how its code is re-encoded; None if unknown."""
    pre = getattr(hgb, "_preprocessor", None)
    n = n_numeric + n_categorical
    is_cat = np.asarray(getattr(hgb, "is_categorical_", None) if hgb.is_categorical_ is not None else [False] * n)
    if is_cat.tolist() != [False] * n_numeric + [True] * n_categorical:
        return None
    identity = [lambda code: code] * n_categorical
    if pre is None:
        return list(range(n)), identity
    order: list[int] = []
    recode: list[Any] = list(identity)
    for name, step, mask in pre.transformers_:
        columns = np.flatnonzero(np.asarray(mask)).tolist() if np.asarray(mask).dtype == bool else list(mask)
        if name == "encoder":
            if not _encodes_unknown_as_nan(step) or getattr(step, "_infrequent_enabled", False):
                return None
            for column, cats in zip(columns, step.categories_, strict=True):
                if column < n_numeric:
                    return None
                # The outer code (a float) -> its position among the codes seen in training.
                positions = {float(c): float(i) for i, c in enumerate(cats) if not math.isnan(c)}
                recode[column - n_numeric] = lambda code, p=positions: p.get(code, math.nan)
        elif name == "numerical" or _is_passthrough(step) or name == "remainder":
            if name == "remainder" and step == "drop":
                continue
        else:
            return None
        order += columns
    if sorted(order) != list(range(n)):
        return None
    return order, recode


def _flatten(hgb: Any) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """Every tree's nodes in one set of arrays (children as global indices, a leaf its own child),
    each categorical node's routing over the 256 codes plus missing, the roots and the deepest path."""
    known, f_idx_map = hgb._bin_mapper.make_known_categories_bitsets()
    fields: dict[str, list[np.ndarray]] = {k: [] for k in ("feature", "threshold", "missing_left", "left", "right")}
    fields["value"] = []
    cat_rows: list[np.ndarray] = []
    cat_left: list[np.ndarray] = []
    roots: list[int] = []
    offset = 0
    depth = 0
    categories = np.arange(_CATEGORY_CODES)
    for (predictor,) in hgb._predictors:
        nodes = predictor.nodes
        size = len(nodes)
        own = np.arange(size) + offset
        leaf = nodes["is_leaf"].astype(bool)
        roots.append(offset)
        fields["feature"].append(nodes["feature_idx"].astype(np.intp))
        fields["threshold"].append(nodes["num_threshold"].astype(np.float64))
        fields["missing_left"].append(nodes["missing_go_to_left"].astype(bool))
        fields["left"].append(np.where(leaf, own, nodes["left"].astype(np.intp) + offset))
        fields["right"].append(np.where(leaf, own, nodes["right"].astype(np.intp) + offset))
        fields["value"].append(nodes["value"].astype(np.float64))
        rows = np.full(size, -1, dtype=np.intp)
        for i in np.flatnonzero(nodes["is_categorical"].astype(bool) & ~leaf):
            node = nodes[i]
            in_left = _bits(predictor.raw_left_cat_bitsets[node["bitset_idx"]], categories)
            is_known = _bits(known[int(f_idx_map[node["feature_idx"]])], categories)
            missing_left = bool(node["missing_go_to_left"])
            # _predict_one_from_raw_data: in the left bitset -> left; a known category -> right;
            # else (and for missing or negative values) the missing direction.
            routed = np.where(in_left, True, np.where(is_known, False, missing_left))
            rows[i] = len(cat_left)
            cat_left.append(np.append(routed, missing_left))
        cat_rows.append(rows)
        depth = max(depth, _depth(nodes))
        offset += size
    flat = {k: np.concatenate(v) for k, v in fields.items()}
    flat["cat_row"] = np.concatenate(cat_rows)
    flat["cat_left"] = np.array(cat_left, dtype=bool) if cat_left else np.zeros((1, _CATEGORY_CODES + 1), dtype=bool)
    return flat, np.array(roots, dtype=np.intp), depth


def _depth(nodes: np.ndarray) -> int:
    deepest = 0
    stack = [(0, 0)]
    while stack:
        index, level = stack.pop()
        if nodes["is_leaf"][index]:
            deepest = max(deepest, level)
        else:
            stack += [(int(nodes["left"][index]), level + 1), (int(nodes["right"][index]), level + 1)]
    return deepest


def _bits(bitset: np.ndarray, values: np.ndarray) -> np.ndarray:
    return ((bitset[values // 32] >> (values % 32).astype(np.uint32)) & 1).astype(bool)
