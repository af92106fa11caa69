"""Exact path-dependent TreeSHAP for scikit-learn's ``HistGradientBoostingClassifier``.

Contract
--------
``HGBTreeShap.from_estimator(hgb)`` compiles a fitted binary classifier once;
``explain(X)`` returns, per row, one Shapley value per input column of the estimator such that
``base_value + phi.sum(axis=1) == hgb.decision_function(X)`` up to float rounding (about 1e-14
on logits of order 1). The values are those of path-dependent TreeSHAP (Lundberg et al. 2020,
Algorithm 2, the default of shap's ``TreeExplainer`` without background data): the value function
of a coalition ``S`` is the tree's prediction when the features in ``S`` follow the row and the
others split the way the training samples did (each node's ``count``). On numeric-only models the
values equal shap's to ~1e-15. Unlike shap, routing replicates scikit-learn's own predictor
exactly (``_predictor.pyx``): NaN follows ``missing_go_to_left``; a native categorical split sends
a category in the node's left bitset left, any other category seen in training right, and a
category never seen in training, a negative value or NaN the way missing values go. The
estimator's internal re-encoding of categorical columns (``_preprocessor``, which puts them first)
is applied before routing, and the values are returned in the estimator's input column order.

How it is fast
--------------
For one leaf with path features ``U`` (``d`` distinct features; a feature split on twice counts
once), each feature has a zero fraction ``z_j`` (the product of ``count(child) / count(node)`` over
the path's nodes on ``j``) and, per row, a one fraction ``o_j`` in {0, 1} (does the row take the
path's direction at every node on ``j``). The leaf's Shapley values are

    phi_i = v * (o_i - z_i) * integral_0^1 prod_{j in U, j != i} (z_j + (o_j - z_j) t) dt

(the Shapley weights are Beta integrals), a polynomial of degree ``d - 1`` in ``t`` that
``ceil(d / 2)``-point Gauss-Legendre integrates exactly. Since ``o`` is binary, a leaf has only
``2**d`` possible outputs: they are tabulated once (as Fast TreeSHAP v2 does). Going further,
every feature's values are cut into codes (numeric: the intervals between all thresholds any tree
uses on it, plus NaN; categorical: the 256 category values plus "routed as missing"), and a whole
subtree is tabulated over the cells of its features' codes that its leaves can tell apart, as long
as it has at most ``cell_budget`` cells. Explaining a row is then, per tabulated subtree, one
table index (a sum of per-feature lookups) and one gather per feature it uses, vectorised over
rows in numpy on one thread. Leaves with more than ``max_leaf_features`` path features, which no
table holds, are evaluated per row with the formula above.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

# Codes of a categorical feature: the category value (0..255) or this one for "routed as missing".
_CATEGORY_CODES = 256
_MISSING_CATEGORY = _CATEGORY_CODES
# Rows per chunk: one chunk's per-feature vectors stay in the L2 cache, and numpy's per-call
# overhead (a few calls per table) is spread over many rows.
_CHUNK_ROWS = 4096
_CHUNK_TABLE_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class _Leaf:
    value: float
    features: np.ndarray  # inner feature indices on the path, distinct, ascending
    zero: np.ndarray  # zero fraction per path feature
    masks: list[np.ndarray]  # per path feature: bool over the feature's codes, True = takes the path


@dataclass(frozen=True)
class _Block:
    features: np.ndarray  # inner feature indices the subtree's leaves use
    lookups: list[np.ndarray]  # per feature: int over codes, class index times the mixed-radix stride
    table: np.ndarray  # (n features, cells) summed Shapley values of the subtree's leaves


@dataclass(frozen=True)
class ExplainerStats:
    """What the compiled explainer holds, for benchmarks and logs."""

    trees: int
    leaves: int
    blocks: int
    direct_leaves: int
    table_cells: int
    lookups_per_row: int


class HGBTreeShap:
    """A compiled path-dependent TreeSHAP explainer of one fitted binary HGB classifier.

    Args (of ``from_estimator``):
        estimator: a fitted ``HistGradientBoostingClassifier`` with one tree per iteration.
        cell_budget: the most cells one table may have; larger tables mean fewer lookups per row
            and a longer compile.
        max_leaf_features: leaves with more distinct path features than this are evaluated per
            row instead of tabulated.

    Raises:
        ValueError: a multiclass model, or an unfitted one.
    """

    def __init__(
        self,
        *,
        n_features: int,
        inner_to_input: np.ndarray,
        preprocessor: Any,
        thresholds: list[np.ndarray | None],
        base_value: float,
        blocks: list[_Block],
        direct: list[_Leaf],
        stats: ExplainerStats,
    ) -> None:
        self.n_features = n_features
        self.base_value = base_value
        self.stats = stats
        self._inner_to_input = inner_to_input
        self._preprocessor = preprocessor
        self._thresholds = thresholds
        self._direct = direct
        self._blocks = blocks

    @classmethod
    def from_estimator(cls, estimator: Any, *, cell_budget: int = 4096, max_leaf_features: int = 12) -> HGBTreeShap:
        predictors = getattr(estimator, "_predictors", None)
        if predictors is None:
            raise ValueError("the HistGradientBoostingClassifier is not fitted")
        if any(len(p) != 1 for p in predictors):
            raise ValueError(
                f"only binary classifiers are supported; this model has {len(predictors[0])} trees per iteration"
            )
        if cell_budget < 2:
            raise ValueError(f"cell_budget must be at least 2, got {cell_budget}")
        n_features = int(estimator.n_features_in_)
        remapped = getattr(estimator, "_is_categorical_remapped", None)
        is_categorical = np.zeros(n_features, dtype=bool) if remapped is None else np.asarray(remapped, dtype=bool)
        preprocessor = getattr(estimator, "_preprocessor", None)
        if preprocessor is None:
            inner_to_input = np.arange(n_features)
        else:
            # The internal ColumnTransformer emits the categorical columns first, then the others.
            input_categorical = np.asarray(estimator.is_categorical_, dtype=bool)
            inner_to_input = np.concatenate([np.flatnonzero(input_categorical), np.flatnonzero(~input_categorical)])
        known, f_idx_map = estimator._bin_mapper.make_known_categories_bitsets()

        trees = [p[0] for p in predictors]
        thresholds = _numeric_thresholds(trees, is_categorical, n_features)
        base = float(np.asarray(estimator._baseline_prediction).ravel()[0])
        per_tree = [_leaves_of(tree, thresholds, is_categorical, known, f_idx_map) for tree in trees]
        leaves_per_tree = [leaves for leaves, _ in per_tree]
        all_leaves = [leaf for leaves in leaves_per_tree for leaf in leaves]
        base += sum(leaf.value * float(np.prod(leaf.zero)) for leaf in all_leaves)
        tables = _leaf_tables([leaf if leaf.features.size <= max_leaf_features else _EMPTY for leaf in all_leaves])
        blocks: list[_Block] = []
        direct: list[_Leaf] = []
        first = 0
        for tree, (leaves, ranges) in zip(trees, per_tree, strict=True):
            tree_tables = tables[first : first + len(leaves)]
            first += len(leaves)
            tree_blocks, tree_direct = _cut(tree.nodes, leaves, tree_tables, ranges, cell_budget, max_leaf_features)
            blocks += tree_blocks
            direct += tree_direct
        stats = ExplainerStats(
            trees=len(trees),
            leaves=sum(len(leaves) for leaves in leaves_per_tree),
            blocks=len(blocks),
            direct_leaves=len(direct),
            table_cells=sum(b.table.shape[1] for b in blocks),
            lookups_per_row=sum(len(b.features) for b in blocks),
        )
        return cls(
            n_features=n_features,
            inner_to_input=inner_to_input,
            preprocessor=preprocessor,
            thresholds=thresholds,
            base_value=base,
            blocks=blocks,
            direct=direct,
            stats=stats,
        )

    def explain(self, X: Any) -> np.ndarray:
        """Shapley values of the estimator's raw output, shape ``(n_rows, n_features)``, in the
        estimator's input column order.

        Raises:
            ValueError: ``X`` has the wrong number of columns, or a categorical column holds a
                value of 256 or more (which the estimator itself cannot route; the message names
                the column).
        """
        inner = self._preprocessor.transform(X) if self._preprocessor is not None else X
        inner = np.asarray(inner, dtype=np.float64)
        if inner.ndim != 2 or inner.shape[1] != self.n_features:
            raise ValueError(f"expected {self.n_features} columns, got an array of shape {inner.shape}")
        n_rows = inner.shape[0]
        phi_inner = np.zeros((self.n_features, n_rows), dtype=np.float64)
        for start in range(0, n_rows, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, n_rows)
            codes = self._codes(inner[start:stop])
            self._add_blocks(codes, phi_inner[:, start:stop])
            for leaf in self._direct:
                _add_direct_leaf(leaf, codes, phi_inner[:, start:stop])
        phi = np.empty((n_rows, self.n_features), dtype=np.float64)
        phi[:, self._inner_to_input] = phi_inner.T
        return phi

    # ------------------------------------------------------------------------------ internals

    def _codes(self, inner: np.ndarray) -> np.ndarray:
        """Per feature and row, the code the compiled masks and lookups are indexed by: (features, rows)."""
        codes = np.empty((self.n_features, inner.shape[0]), dtype=np.intp)
        for j, thresholds in enumerate(self._thresholds):
            values = inner[:, j]
            missing = np.isnan(values)
            if thresholds is not None:
                column = np.searchsorted(thresholds, values, side="left")
                column[missing] = thresholds.size + 1
            else:
                missing |= values < 0
                truncated = np.trunc(np.where(missing, 0.0, values))
                if (truncated >= _CATEGORY_CODES).any():
                    column_index = int(self._inner_to_input[j])
                    raise ValueError(
                        f"categorical input column {column_index} holds the value "
                        f"{values[truncated >= _CATEGORY_CODES][0]!r}; HistGradientBoosting categories "
                        f"are codes below {_CATEGORY_CODES}"
                    )
                column = truncated.astype(np.intp)
                column[missing] = _MISSING_CATEGORY
            codes[j] = column
        return codes

    def _add_blocks(self, codes: np.ndarray, phi: np.ndarray) -> None:
        for block in self._blocks:
            features = block.features
            cell = np.take(block.lookups[0], codes[features[0]])
            for k in range(1, features.size):
                cell += np.take(block.lookups[k], codes[features[k]])
            values = np.take(block.table, cell, axis=1)
            for k in range(features.size):
                phi[features[k]] += values[k]


def _numeric_thresholds(trees: list[Any], is_categorical: np.ndarray, n_features: int) -> list[np.ndarray | None]:
    """Per numeric feature, every threshold any tree splits it at, sorted; None for categorical ones."""
    found: list[list[np.ndarray]] = [[] for _ in range(n_features)]
    for tree in trees:
        nodes = tree.nodes
        split = (nodes["is_leaf"] == 0) & (nodes["is_categorical"] == 0)
        for j in np.unique(nodes["feature_idx"][split]):
            found[int(j)].append(nodes["num_threshold"][split & (nodes["feature_idx"] == j)])
    return [
        None if is_categorical[j] else np.unique(np.concatenate(found[j] or [np.zeros(0)])) for j in range(n_features)
    ]


def _goes_left(
    node: dict[str, Any],
    thresholds: list[np.ndarray | None],
    known: np.ndarray,
    f_idx_map: np.ndarray,
    raw_left_bitsets: np.ndarray,
) -> np.ndarray:
    """Over the node's feature's codes: does a row with that code go to the left child?"""
    j = node["feature_idx"]
    missing_left = bool(node["missing_go_to_left"])
    if node["is_categorical"]:
        categories = np.arange(_CATEGORY_CODES)
        in_left = _bits(raw_left_bitsets[node["bitset_idx"]], categories)
        is_known = _bits(known[int(f_idx_map[j])], categories)
        # The order of _predict_one_from_raw_data: left bitset, then known categories, else missing.
        # In scikit-learn 1.9 the internal encoder maps a never-seen category to NaN and every code it
        # emits is a known category, so the last branch is only reached by NaN; it is kept so routing
        # stays the predictor's own should the encoder and the bin mapper ever disagree.
        left = in_left | (~is_known & missing_left)
        return np.append(left, missing_left)
    column_thresholds = thresholds[j]
    assert column_thresholds is not None
    k = int(np.searchsorted(column_thresholds, node["num_threshold"]))
    left = np.arange(column_thresholds.size + 1) <= k
    return np.append(left, missing_left)


def _bits(bitset: np.ndarray, values: np.ndarray) -> np.ndarray:
    return ((bitset[values // 32] >> (values % 32).astype(np.uint32)) & 1).astype(bool)


_NODE_FIELDS = (
    "value",
    "count",
    "feature_idx",
    "num_threshold",
    "missing_go_to_left",
    "left",
    "right",
    "is_leaf",
    "is_categorical",
    "bitset_idx",
)


def _leaves_of(
    tree: Any,
    thresholds: list[np.ndarray | None],
    is_categorical: np.ndarray,
    known: np.ndarray,
    f_idx_map: np.ndarray,
) -> tuple[list[_Leaf], dict[int, tuple[int, int]]]:
    """The tree's leaves in depth-first order, and per node the range of leaves under it."""
    # Plain Python values: reading fields of a structured array one element at a time is slow.
    columns = {name: tree.nodes[name].tolist() for name in _NODE_FIELDS}
    nodes = [dict(zip(_NODE_FIELDS, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    raw_left = tree.raw_left_cat_bitsets
    leaves: list[_Leaf] = []
    ranges: dict[int, tuple[int, int]] = {}
    # (node, per path feature: (mask, zero fraction), whether the node's subtree is finished)
    stack: list[tuple[int, dict[int, tuple[np.ndarray, float]], bool]] = [(0, {}, False)]
    first: dict[int, int] = {}
    while stack:
        index, path, finished = stack.pop()
        node = nodes[index]
        if finished:
            ranges[index] = (first[index], len(leaves))
            continue
        first[index] = len(leaves)
        if node["is_leaf"]:
            features = sorted(path)
            leaves.append(
                _Leaf(
                    value=float(node["value"]),
                    features=np.array(features, dtype=np.intp),
                    zero=np.array([path[j][1] for j in features], dtype=np.float64),
                    masks=[path[j][0] for j in features],
                )
            )
            ranges[index] = (first[index], len(leaves))
            continue
        j = node["feature_idx"]
        left = _goes_left(node, thresholds, known, f_idx_map, raw_left)
        stack.append((index, path, True))
        mask, zero = path.get(j, (None, 1.0))
        for child, takes in ((node["right"], ~left), (node["left"], left)):
            ratio = nodes[child]["count"] / node["count"]
            stack.append((child, {**path, j: (takes if mask is None else mask & takes, zero * ratio)}, False))
    return leaves, ranges


def _leaf_tables(leaves: list[_Leaf]) -> list[np.ndarray]:
    """Per leaf, its Shapley values for every pattern of one fractions: (2**d, d), where bit k of
    the pattern is the one fraction of the leaf's k-th path feature. Leaves of one path length are
    computed together."""
    tables: list[np.ndarray] = [np.zeros((1, 0))] * len(leaves)
    by_length: dict[int, list[int]] = {}
    for i, leaf in enumerate(leaves):
        by_length.setdefault(leaf.features.size, []).append(i)
    for d, members in by_length.items():
        if d == 0:
            continue
        patterns = ((np.arange(1 << d)[:, None] >> np.arange(d)) & 1).astype(np.float64)
        # Bounds the work arrays (leaves x patterns x quadrature points x d) to a few MB.
        step = max(1, _CHUNK_TABLE_ELEMENTS // (patterns.size * ((d + 1) // 2)))
        for start in range(0, len(members), step):
            chunk = members[start : start + step]
            values = np.array([leaves[i].value for i in chunk])[:, None, None]
            zero = np.stack([leaves[i].zero for i in chunk])[:, None, :]
            computed = _leaf_shapley(values, zero, np.broadcast_to(patterns, (len(chunk), *patterns.shape)))
            for i, table in zip(chunk, computed, strict=True):
                tables[i] = table
    return tables


def _leaf_shapley(value: Any, zero: np.ndarray, ones: np.ndarray) -> np.ndarray:
    """``phi_i = v (o_i - z_i) integral prod_{j != i} (z_j + (o_j - z_j) t) dt`` for each row of
    ``ones`` (the last axis is the path features; leading axes broadcast with ``value`` and ``zero``)."""
    d = zero.shape[-1]
    t, weights = _gauss_legendre((d + 1) // 2)
    factors = zero[..., None, :] + (ones - zero)[..., None, :] * t[:, None]  # (..., points, d)
    if np.all(zero > 0):
        # Every factor is then positive (the nodes lie strictly inside (0, 1)), so dividing the full
        # product by one factor is exact to rounding and half the work of prefix and suffix products.
        excluded = np.prod(factors, axis=-1, keepdims=True) / factors
    else:
        excluded = np.ones_like(factors)
        if d > 1:
            excluded[..., 1:] = np.cumprod(factors[..., :-1], axis=-1)
            excluded[..., :-1] *= np.cumprod(factors[..., :0:-1], axis=-1)[..., ::-1]
    integral = np.einsum("q,...qd->...d", weights, excluded)
    return value * (ones - zero) * integral


@functools.cache
def _gauss_legendre(points: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [0, 1]: exact for polynomials of degree < 2 * points."""
    nodes, weights = np.polynomial.legendre.leggauss(points)
    return (nodes + 1.0) / 2.0, weights / 2.0


def _cut(
    nodes: np.ndarray,
    leaves: list[_Leaf],
    tables: list[np.ndarray],
    ranges: dict[int, tuple[int, int]],
    cell_budget: int,
    max_leaf_features: int,
) -> tuple[list[_Block], list[_Leaf]]:
    """Tabulates the largest subtrees that fit the budget, top-down; leaves too deep for a table
    go to the per-row list."""
    blocks: list[_Block] = []
    direct: list[_Leaf] = []
    pending = [0]
    while pending:
        index = pending.pop()
        first, last = ranges[index]
        members = leaves[first:last]
        if all(leaf.features.size == 0 for leaf in members):
            continue  # a single-leaf tree: its value is all base value, no feature gets any of it
        if max(leaf.features.size for leaf in members) <= max_leaf_features:
            block = _tabulate(members, tables[first:last], cell_budget)
            if block is not None:
                blocks.append(block)
                continue
        if nodes[index]["is_leaf"]:
            direct.append(members[0])
        else:
            pending += [int(nodes[index]["left"]), int(nodes[index]["right"])]
    return blocks, direct


_EMPTY = _Leaf(value=0.0, features=np.zeros(0, dtype=np.intp), zero=np.zeros(0), masks=[])


def _code_classes(masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Codes that every mask treats alike form one class: the class of each code, and per class
    and mask whether the mask holds (classes, masks)."""
    if len(masks) < 63:
        keys = np.left_shift(np.array(masks, dtype=np.int64), np.arange(len(masks))[:, None]).sum(axis=0)
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        starts = np.empty(ordered.size, dtype=bool)
        starts[0] = True
        np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
        inverse = np.empty_like(order)
        inverse[order] = np.cumsum(starts) - 1
        unique = ordered[starts]
        return inverse, ((unique[:, None] >> np.arange(len(masks))) & 1).astype(bool)
    unique, inverse = np.unique(np.array(masks).T, axis=0, return_inverse=True)
    return inverse.ravel(), unique


def _tabulate(members: list[_Leaf], leaf_tables: list[np.ndarray], cell_budget: int) -> _Block | None:
    """The summed Shapley values of ``members`` over the cells their features' codes fall in, or
    None when there would be more than ``cell_budget`` cells.

    The cells form a grid with one axis per feature (its classes of codes); a leaf's values depend
    only on the axes of its own path features, so each leaf is evaluated on that sub-grid and
    added to the table by broadcasting.
    """
    features = np.unique(np.concatenate([leaf.features for leaf in members]))
    if features.size >= cell_budget.bit_length():
        return None  # every feature splits its codes into at least two classes: 2**features cells
    position = {int(j): k for k, j in enumerate(features)}
    per_leaf = [dict(zip(leaf.features.tolist(), leaf.masks, strict=True)) for leaf in members]
    class_of_code: list[np.ndarray] = []
    # per block feature: leaf index -> whether that leaf's mask holds, per class
    holds: list[dict[int, np.ndarray]] = []
    users_of = {j: [i for i, masks in enumerate(per_leaf) if j in masks] for j in features.tolist()}
    # Features that many leaves use tend to have the most classes: trying them first makes a subtree
    # over the budget fail after a few features instead of all of them.
    order = sorted(users_of, key=lambda j: -len(users_of[j]))
    classes_of: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    cells = 1
    for j in order:
        classes_of[j] = _code_classes([per_leaf[i][j] for i in users_of[j]])
        cells *= classes_of[j][1].shape[0]
        if cells > cell_budget:
            return None
    for j in features.tolist():
        users = users_of[j]
        classes, by_class = classes_of[j]
        class_of_code.append(classes)
        holds.append({i: by_class[:, n] for n, i in enumerate(users)})
    shape = tuple(h[next(iter(h))].size for h in holds)
    table = np.zeros((features.size, *shape), dtype=np.float64)
    for i, (leaf, leaf_table) in enumerate(zip(members, leaf_tables, strict=True)):
        if leaf.features.size == 0:
            continue
        axes = [position[j] for j in leaf.features.tolist()]
        pattern = np.zeros((1,) * len(shape), dtype=np.intp)
        for bit, k in enumerate(axes):
            ones = holds[k][i].astype(np.intp) << bit
            pattern = pattern + ones.reshape([-1 if axis == k else 1 for axis in range(len(shape))])
        values = leaf_table[pattern]  # the sub-grid of the leaf's own axes, then one value per path feature
        for path_position, k in enumerate(axes):
            table[k] += values[..., path_position]
    strides = np.cumprod((1, *shape[:0:-1]))[::-1]
    lookups = [classes * stride for classes, stride in zip(class_of_code, strides, strict=True)]
    return _Block(features=features, lookups=lookups, table=table.reshape(features.size, cells))


def _add_direct_leaf(leaf: _Leaf, codes: np.ndarray, phi: np.ndarray) -> None:
    ones = np.stack([mask[codes[j]] for j, mask in zip(leaf.features, leaf.masks, strict=True)], axis=1)
    phi[leaf.features] += _leaf_shapley(leaf.value, leaf.zero, ones.astype(np.float64)).T
