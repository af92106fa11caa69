"""Integrated gradients for the ``torch_mlp`` family, with the completeness error of every row.

Method (Sundararajan et al. 2017)
---------------------------------
The network's input for a row is ``e(x)``: the standardised numeric columns, their missing-value
indicators and each categorical column's embedding, concatenated (``MLPNet.forward``). The
baseline ``b`` is the mean of ``e`` over the training rows (standardised numerics at their
training mean, indicators at the training missing rate, each embedding at its frequency-weighted
mean), computed at training time by :func:`input_baseline` and stored with the model. The
attribution of input dimension ``d`` is

    (e_d - b_d) * integral_0^1 dlogit/de_d (b + a (e - b)) da,

integrated with the midpoint rule on ``steps`` points, in float64 on a copy of the network in eval
mode. A numeric column gets its own dimension plus its indicator's, a categorical column the sum
over its embedding's dimensions. The base value is the logit at ``b``. Integrated gradients is
complete only in the limit of infinitely many steps (a ReLU network's gradient jumps along the
path), so every row reports ``logit(x) - logit(b) - sum(attributions)``, its completeness error;
more steps shrink it. The logit is computed in float64; the float32 model's own agrees to ~1e-6.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

# Rows x steps evaluated per backward pass; bounds memory, not the result.
_CHUNK_EVALUATIONS = 1 << 16


def input_baseline(model: Any, inputs: Any) -> list[float]:
    """The mean network input over ``inputs`` (the training rows): what the training step stores."""
    import torch

    with torch.no_grad():
        return [float(v) for v in _network_inputs(_network_copy(model), model.preprocessor, inputs).mean(dim=0)]


def explain_integrated_gradients(
    model: Any, inputs: Any, *, columns: Sequence[str], baseline: Sequence[float], steps: int
) -> tuple[np.ndarray, float, np.ndarray]:
    """Per-row attributions ``(rows, len(columns))``, the base value and the float64 logit of
    every row.

    Raises:
        ValueError: ``steps`` below 1, or a baseline of another width than the network's input.
    """
    import torch

    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    network = _network_copy(model)
    head = network.head
    with torch.no_grad():
        points = _network_inputs(network, model.preprocessor, inputs)
    width = points.shape[1]
    origin = torch.tensor(list(baseline), dtype=torch.float64)
    if origin.numel() != width:
        raise ValueError(f"baseline: has {origin.numel()} values, the network takes {width} inputs")
    alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    gradients = torch.zeros_like(points)
    rows_per_chunk = max(1, _CHUNK_EVALUATIONS // steps)
    for start in range(0, points.shape[0], rows_per_chunk):
        chunk = points[start : start + rows_per_chunk]
        path = (origin + alphas[:, None, None] * (chunk - origin)).requires_grad_(True)
        (grad,) = torch.autograd.grad(head(path).sum(), path)
        gradients[start : start + rows_per_chunk] = grad.mean(dim=0)
    with torch.no_grad():
        logits = head(points).squeeze(-1).numpy()
        base = float(head(origin[None, :]).squeeze())
    per_dimension = ((points - origin) * gradients).numpy()
    owner = _dimension_owner(model, columns)
    values = np.zeros((points.shape[0], len(columns)), dtype=np.float64)
    for dimension, column in enumerate(owner):
        values[:, column] += per_dimension[:, dimension]
    return values, base, logits.astype(np.float64)


def _network_copy(model: Any) -> Any:
    """The fitted network in float64 on the CPU, in eval mode; a copy, so the model is untouched."""
    if model.network is None or model.preprocessor is None:
        raise RuntimeError("TorchMLPClassifier is not fitted; call fit() or load() first")
    return copy.deepcopy(model.network).double().cpu().eval()


def _network_inputs(network: Any, preprocessor: Any, inputs: Any) -> Any:
    """``e(x)``: exactly what ``MLPNet.forward`` concatenates before its head."""
    import torch

    encoded = preprocessor.transform(inputs)
    parts = [encoded.numeric.double()] + [
        embedding(encoded.categorical[:, j]) for j, embedding in enumerate(network.embeddings)
    ]
    return torch.cat(parts, dim=1)


def _dimension_owner(model: Any, columns: Sequence[str]) -> list[int]:
    """For each network input dimension, the index in ``columns`` of the column it encodes."""
    position = {c: i for i, c in enumerate(columns)}
    pre = model.preprocessor
    names = list(pre.numeric) + list(pre.indicator_columns)
    for column, embedding in zip(pre.categorical, model.network.embeddings, strict=True):
        names += [column] * embedding.embedding_dim
    missing = sorted(set(names) - set(position))
    if missing:
        raise ValueError(f"columns: the model encodes {missing}, which are not among {list(columns)}")
    return [position[name] for name in names]
