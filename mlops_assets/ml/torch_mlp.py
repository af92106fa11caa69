"""A PyTorch MLP for binary classification of tabular data (the ``torch_mlp`` model family).

One :class:`TorchMLPClassifier` object carries both the fitted preprocessing and the
network, so whatever scores with it sees exactly the transformation used in training:

* numeric columns are standardised with the training mean and standard deviation;
  missing or non-finite values are imputed with the training mean and, by default,
  flagged by an extra 0/1 column for each numeric column that had missing values in
  training (as scikit-learn's ``SimpleImputer(add_indicator=True)`` does);
* categorical columns are mapped to indices of a vocabulary fitted on the training data
  and fed through learned embeddings. Index 0 is reserved for missing values and for
  categories never seen in training, so scoring never fails on a new category.

Persistence is pickle-free: :meth:`TorchMLPClassifier.save` writes the network's
``state_dict`` with ``torch.save`` (tensors only) and everything else as JSON, and
:meth:`TorchMLPClassifier.load` reads the tensors back with ``torch.load(...,
weights_only=True)``. Training checkpoints are loaded the same way.

This module imports nothing from Dagster or MLflow: the metric sink given to
:class:`BatchedMetricLogger` is any callable, e.g. one wrapping ``MlflowClient.log_batch``.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BatchedMetricLogger",
    "EncodedTable",
    "EpochReport",
    "MLPNet",
    "TabularPreprocessor",
    "TorchMLPClassifier",
    "default_embedding_dim",
    "mean_bce_loss",
    "resolve_device",
    "train_validation_split",
]

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.pt"
METADATA_FILE = "model.json"
CHECKPOINT_FILE = "checkpoint.pt"
# Bumped whenever the layout of model.json / weights.pt or of the checkpoint changes.
FORMAT_VERSION = 1
MODEL_FAMILY = "torch_mlp"

# Rows per forward pass when scoring or computing the validation loss; bounds memory only.
_EVAL_BATCH_SIZE = 65_536


@dataclass(frozen=True)
class EpochReport:
    """Progress of one training epoch, passed to ``on_epoch`` and kept in ``history``.

    Attributes:
        epoch: 1-based epoch number.
        train_loss: mean binary cross-entropy over the epoch's training mini-batches.
        val_loss: binary cross-entropy on the validation split after the epoch, or NaN
            when ``validation_fraction`` is 0.
        seconds: wall-clock time of the epoch's training pass and validation (the
            checkpoint write that follows is not included).
        samples_per_second: training rows processed per wall-clock second of the epoch.
    """

    epoch: int
    train_loss: float
    val_loss: float
    seconds: float
    samples_per_second: float


@dataclass(frozen=True)
class EncodedTable:
    """A table encoded for :class:`MLPNet`.

    Attributes:
        numeric: float32 tensor of shape ``(n, n_numeric_inputs)``: standardised numeric
            columns followed by the missing-indicator columns.
        categorical: int64 tensor of shape ``(n, n_categorical)`` of vocabulary indices,
            0 meaning missing or unseen.
    """

    numeric: torch.Tensor
    categorical: torch.Tensor

    def __len__(self) -> int:
        return self.numeric.shape[0]

    def to(self, device: torch.device) -> EncodedTable:
        return EncodedTable(self.numeric.to(device), self.categorical.to(device))

    def take(self, index: torch.Tensor) -> EncodedTable:
        return EncodedTable(self.numeric[index], self.categorical[index])


class TabularPreprocessor:
    """Standardisation, mean imputation and vocabulary encoding fitted on training data.

    The fitted state is plain JSON (:meth:`to_dict` / :meth:`from_dict`) and
    :meth:`transform` is a pure function of it, so a saved model reproduces its
    training-time encoding exactly.
    """

    def __init__(
        self, numeric: Sequence[str], categorical: Sequence[str], *, add_missing_indicator: bool = True
    ) -> None:
        overlap = set(numeric) & set(categorical)
        if overlap:
            raise ValueError(f"columns listed as both numeric and categorical: {sorted(overlap)}")
        if not numeric and not categorical:
            raise ValueError("at least one numeric or categorical column is required")
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.add_missing_indicator = add_missing_indicator
        self.means: list[float] = []
        self.stds: list[float] = []
        self.indicator_columns: list[str] = []
        self.vocabularies: dict[str, list[str]] = {}
        self.fitted = False

    @property
    def n_numeric_inputs(self) -> int:
        """Width of :attr:`EncodedTable.numeric`: numeric columns plus indicators."""
        return len(self.numeric) + len(self.indicator_columns)

    @property
    def cardinalities(self) -> list[int]:
        """Embedding rows needed per categorical column (vocabulary size + the unknown index)."""
        return [len(self.vocabularies[c]) + 1 for c in self.categorical]

    def fit(self, X: pd.DataFrame) -> TabularPreprocessor:
        values = self._numeric_values(X)
        finite = np.isfinite(values)
        self.means, self.stds = [], []
        for j in range(values.shape[1]):
            column = values[finite[:, j], j]
            mean = float(column.mean()) if column.size else 0.0
            std = float(column.std()) if column.size else 0.0
            self.means.append(mean)
            # A constant (or empty) column carries no information; std 1 keeps it at 0 instead of dividing by 0.
            self.stds.append(std if std > 0.0 and math.isfinite(std) else 1.0)
        has_missing = (~finite).any(axis=0)
        self.indicator_columns = (
            [c for c, missing in zip(self.numeric, has_missing, strict=True) if missing]
            if self.add_missing_indicator
            else []
        )
        self.vocabularies = {}
        for column in self.categorical:
            _, uniques = _factorize_as_str(self._column(X, column))
            # Sorted, so the vocabulary (and thus the embedding layout) does not depend on row order.
            self.vocabularies[column] = sorted(set(uniques.tolist()))
        self.fitted = True
        return self

    def transform(self, X: pd.DataFrame) -> EncodedTable:
        """Encode ``X`` with the fitted state; unseen categories and missing values map to index 0."""
        if not self.fitted:
            raise RuntimeError("TabularPreprocessor.transform called before fit")
        values = self._numeric_values(X)
        missing = ~np.isfinite(values)
        means = np.asarray(self.means, dtype=np.float64)
        values = np.where(missing, means, values)
        standardised = (values - means) / np.asarray(self.stds, dtype=np.float64)
        indicator_index = [self.numeric.index(c) for c in self.indicator_columns]
        numeric = np.concatenate([standardised, missing[:, indicator_index].astype(np.float64)], axis=1)
        categorical = np.zeros((len(X), len(self.categorical)), dtype=np.int64)
        for j, column in enumerate(self.categorical):
            codes, uniques = _factorize_as_str(self._column(X, column))
            # 0 (unknown) for categories outside the vocabulary, and for missing values, whose code is -1.
            unique_index = np.append(pd.Index(self.vocabularies[column]).get_indexer(uniques) + 1, 0)
            categorical[:, j] = unique_index[codes]
        return EncodedTable(
            numeric=torch.from_numpy(numeric.astype(np.float32)),
            categorical=torch.from_numpy(categorical),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "add_missing_indicator": self.add_missing_indicator,
            "means": self.means,
            "stds": self.stds,
            "indicator_columns": self.indicator_columns,
            "vocabularies": self.vocabularies,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> TabularPreprocessor:
        pre = cls(state["numeric"], state["categorical"], add_missing_indicator=state["add_missing_indicator"])
        pre.means = [float(v) for v in state["means"]]
        pre.stds = [float(v) for v in state["stds"]]
        pre.indicator_columns = list(state["indicator_columns"])
        pre.vocabularies = {k: list(v) for k, v in state["vocabularies"].items()}
        pre.fitted = True
        return pre

    def _numeric_values(self, X: pd.DataFrame) -> np.ndarray:
        if not self.numeric:
            return np.zeros((len(X), 0), dtype=np.float64)
        for column in self.numeric:
            self._column(X, column)
        # na_value covers None in object columns and pd.NA in nullable dtypes.
        return X[self.numeric].to_numpy(dtype=np.float64, na_value=np.nan)

    @staticmethod
    def _column(X: pd.DataFrame, column: str) -> pd.Series:
        if column not in X.columns:
            raise KeyError(f"column {column!r} is missing from the input frame")
        return X[column]


def _factorize_as_str(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes (-1 for missing) and the distinct non-missing values as strings.

    Categories are compared as strings so that e.g. ``3`` and ``"3"`` are one category;
    only the distinct values are converted, which is much cheaper than ``astype(str)``.
    """
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    return codes, np.asarray([str(v) for v in uniques], dtype=object)


def default_embedding_dim(cardinality: int) -> int:
    """Embedding width for a column with ``cardinality`` rows (fast.ai's rule of thumb, capped at 16)."""
    return max(2, min(16, round(1.6 * cardinality**0.56)))


class MLPNet(nn.Module):
    """Embeddings for categorical columns, concatenated with numeric inputs, into an MLP.

    ``forward(numeric, categorical)`` returns one logit per row (shape ``(n,)``).
    """

    def __init__(
        self,
        *,
        n_numeric: int,
        cardinalities: Sequence[int],
        embedding_dims: Sequence[int],
        hidden_sizes: Sequence[int],
        dropout: float,
    ) -> None:
        super().__init__()
        if len(cardinalities) != len(embedding_dims):
            raise ValueError("one embedding dimension per categorical column is required")
        embeddings = [nn.Embedding(n, d) for n, d in zip(cardinalities, embedding_dims, strict=True)]
        for embedding in embeddings:
            # The unknown/missing row starts neutral, so a category unseen in training adds nothing
            # unless training data had missing values to learn that row from.
            nn.init.zeros_(embedding.weight[0])
        self.embeddings = nn.ModuleList(embeddings)
        layers: list[nn.Module] = []
        width = n_numeric + sum(embedding_dims)
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.head = nn.Sequential(*layers)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        parts = [numeric] + [embedding(categorical[:, j]) for j, embedding in enumerate(self.embeddings)]
        return self.head(torch.cat(parts, dim=1)).squeeze(1)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means the current CUDA device when one is available, else the CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def train_validation_split(n: int, validation_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded row indices ``(train, validation)`` for ``n`` rows.

    Validation gets ``round(n * validation_fraction)`` rows, at least one when the fraction is
    positive and at most ``n - 1``.
    """
    n_val = 0 if validation_fraction == 0 else min(n - 1, max(1, round(n * validation_fraction)))
    # A generator of its own, so the split depends on the seed alone and not on the global RNG.
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_val:], order[:n_val]


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def mean_bce_loss(network: nn.Module, data: EncodedTable, y: torch.Tensor, device: torch.device) -> float:
    """Mean binary cross-entropy of ``network`` on ``data`` (already on ``device``), in eval mode."""
    was_training = network.training
    network.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(data), _EVAL_BATCH_SIZE):
        stop = start + _EVAL_BATCH_SIZE
        with _autocast(device):
            logits = network(data.numeric[start:stop], data.categorical[start:stop])
        total += F.binary_cross_entropy_with_logits(logits.float(), y[start:stop], reduction="sum").double()
    network.train(was_training)
    return total.item() / max(len(data), 1)


class TorchMLPClassifier:
    """Binary classifier for tabular data: fitted preprocessing plus an MLP, in one object.

    Contract:
        * ``fit(X, y)`` takes a DataFrame holding at least the ``numeric`` columns (floats,
          NaN/None for missing) and the ``categorical`` columns (strings or objects,
          None/NaN for missing) and labels ``y`` of 0/1 (or bools). Other columns are ignored.
        * ``predict_proba`` returns shape ``(n, 2)``, columns ordered as ``classes_``
          (``[0, 1]``), like scikit-learn; ``predict`` returns 0/1 at threshold 0.5.
        * ``save`` / ``load`` round-trip bit-identical predictions on the same device; nothing is pickled.

    Training:
        * A seeded ``validation_fraction`` of the rows is held out; training stops when the
          validation loss has not improved for ``patience`` epochs, and the weights of the
          best epoch are kept. With ``validation_fraction=0`` all epochs run and the last
          weights are kept.
        * The whole training set lives as tensors on the device; each epoch draws a seeded
          ``torch.randperm`` and slices mini-batches from it, which avoids the per-row
          indexing and collation of a ``DataLoader``.
        * Seeding: the same ``seed``, data and device give bit-identical weights and
          predictions on CPU. The global torch RNG is forked for the duration of ``fit``,
          so calling it does not disturb the caller's random state. On CUDA results agree
          only to float tolerance: not every CUDA kernel is bit-reproducible, and
          ``torch.use_deterministic_algorithms`` is process-wide, so it is left to the caller.
        * Precision on CUDA: forward passes (training, validation and scoring) run under
          ``torch.autocast`` with bfloat16, which puts matmuls on the tensor cores; weights,
          gradients, optimizer state and the loss stay float32. No process-wide flag
          (e.g. TF32 matmul) is changed. On CPU everything is float32. AdamW uses its fused
          kernel on every device.
        * Checkpointing: with ``checkpoint_dir`` set, a checkpoint (model, optimizer, epoch,
          RNG states, early-stopping state and history) is written after every epoch,
          atomically (temporary file, then rename). ``fit`` resumes from a checkpoint whose
          fingerprint (hyper-parameters, device type and encoded training data) matches, so
          an interrupted fit loses at most one epoch and, on CPU, ends with the same weights
          as an uninterrupted one. A checkpoint of a finished fit makes ``fit`` return its
          result without training. Any other checkpoint there is ignored and overwritten.
        * ``on_epoch`` is called after each epoch's checkpoint is written, so every reported
          epoch is durable. An exception raised by it stops training.

    Attributes set by ``fit`` (or ``load``):
        history: one :class:`EpochReport` per epoch run (including epochs restored from a checkpoint).
        best_epoch: epoch whose weights the model holds.
        resumed_from_epoch: last epoch restored from a checkpoint, or None when training started fresh.
        preprocessor: the fitted :class:`TabularPreprocessor`.
        network: the fitted :class:`MLPNet`, on ``device_``.
        device_: the device the network lives on.
    """

    classes_: ClassVar[np.ndarray] = np.array([0, 1])
    # Parameters that do not change what is learned; left out of saved configs and checkpoint fingerprints.
    _RUNTIME_PARAMS: ClassVar[frozenset[str]] = frozenset({"device", "checkpoint_dir", "on_epoch"})

    def __init__(
        self,
        *,
        numeric: list[str],
        categorical: list[str],
        hidden_sizes: tuple[int, ...] = (64, 32),
        embedding_dim: int | None = None,
        dropout: float = 0.1,
        epochs: int = 50,
        batch_size: int = 512,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        patience: int = 5,
        validation_fraction: float = 0.1,
        seed: int = 42,
        device: str | None = None,
        checkpoint_dir: str | None = None,
        on_epoch: Callable[[EpochReport], None] | None = None,
        add_missing_indicator: bool = True,
    ) -> None:
        """Set hyper-parameters; nothing is validated against data until ``fit``.

        ``embedding_dim=None`` picks a width per categorical column from its cardinality
        (:func:`default_embedding_dim`); an int uses that width for every column.
        ``device=None`` uses CUDA when available. The remaining arguments are described in
        the class docstring.
        """
        if epochs < 1 or batch_size < 1 or patience < 1:
            raise ValueError("epochs, batch_size and patience must be >= 1")
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError("validation_fraction must be in [0, 1)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        # Stored as given (not copied or converted), as scikit-learn's clone() requires.
        self.numeric = numeric
        self.categorical = categorical
        self.hidden_sizes = hidden_sizes
        self.embedding_dim = embedding_dim
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.on_epoch = on_epoch
        self.add_missing_indicator = add_missing_indicator

        self.history: list[EpochReport] = []
        self.best_epoch: int | None = None
        self.resumed_from_epoch: int | None = None
        self.preprocessor: TabularPreprocessor | None = None
        self.network: MLPNet | None = None
        self.device_: torch.device | None = None

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor arguments, so that ``sklearn.base.clone`` works."""
        names = [name for name in inspect.signature(type(self).__init__).parameters if name != "self"]
        return {name: getattr(self, name) for name in names}

    def config(self) -> dict[str, Any]:
        """The JSON-serialisable hyper-parameters that determine the trained model."""
        params = self.get_params()
        config = {k: v for k, v in params.items() if k not in self._RUNTIME_PARAMS}
        config.update(
            numeric=list(self.numeric),
            categorical=list(self.categorical),
            hidden_sizes=[int(h) for h in self.hidden_sizes],
        )
        return config

    # ----------------------------------------------------------------------------------- fit

    def fit(self, X: pd.DataFrame, y: np.ndarray | Sequence[int] | pd.Series) -> TorchMLPClassifier:
        """Fit preprocessing and network on ``X``/``y``; returns ``self``. See the class docstring."""
        labels = _binary_labels(y, len(X))
        if len(X) < 2:
            raise ValueError("at least two rows are needed to train")
        device = resolve_device(self.device)
        preprocessor = TabularPreprocessor(
            self.numeric, self.categorical, add_missing_indicator=self.add_missing_indicator
        ).fit(X)
        encoded = preprocessor.transform(X)
        target = torch.from_numpy(labels.astype(np.float32))

        rng_devices = [device.index] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices, device_type="cuda"):
            torch.manual_seed(self.seed)
            network = self.build_network(preprocessor).to(device)
            self._train(network, preprocessor, encoded, target, device)
        self.preprocessor = preprocessor
        self.network = network.eval()
        self.device_ = device
        return self

    def build_network(self, preprocessor: TabularPreprocessor) -> MLPNet:
        """A freshly initialised (from the global torch RNG) network sized for ``preprocessor``."""
        cardinalities = preprocessor.cardinalities
        if self.embedding_dim is None:
            dims = [default_embedding_dim(n) for n in cardinalities]
        else:
            dims = [self.embedding_dim] * len(cardinalities)
        return MLPNet(
            n_numeric=preprocessor.n_numeric_inputs,
            cardinalities=cardinalities,
            embedding_dims=dims,
            hidden_sizes=[int(h) for h in self.hidden_sizes],
            dropout=self.dropout,
        )

    def build_optimizer(self, network: nn.Module) -> torch.optim.Optimizer:
        """AdamW with this model's learning rate and weight decay."""
        # The fused kernel is one launch per step on CUDA and measurably faster on CPU too.
        return torch.optim.AdamW(
            network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay, fused=True
        )

    def _fingerprint(
        self, preprocessor: TabularPreprocessor, encoded: EncodedTable, target: torch.Tensor, device: torch.device
    ) -> str:
        digest = hashlib.sha256()
        header = {
            "format": FORMAT_VERSION,
            "config": self.config(),
            "device_type": device.type,
            "preprocessing": preprocessor.to_dict(),
        }
        digest.update(json.dumps(header, sort_keys=True).encode())
        for tensor in (encoded.numeric, encoded.categorical, target):
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()

    def _train(
        self,
        network: MLPNet,
        preprocessor: TabularPreprocessor,
        encoded: EncodedTable,
        target: torch.Tensor,
        device: torch.device,
    ) -> None:
        train_index, val_index = train_validation_split(len(encoded), self.validation_fraction, self.seed)
        train_x, train_y = encoded.take(train_index).to(device), target[train_index].to(device)
        val_x, val_y = encoded.take(val_index).to(device), target[val_index].to(device)
        n_train = len(train_x)

        optimizer = self.build_optimizer(network)
        shuffle_rng = torch.Generator(device=device).manual_seed(self.seed)
        state = _EarlyStopping(best_state=_copy_state(network))
        checkpoint: _Checkpointer | None = None
        self.history, self.resumed_from_epoch = [], None

        if self.checkpoint_dir is not None:
            fingerprint = self._fingerprint(preprocessor, encoded, target, device)
            checkpoint = _Checkpointer(Path(self.checkpoint_dir), fingerprint)
            saved = checkpoint.load(device)
            if saved is not None:
                network.load_state_dict(saved["model"])
                optimizer.load_state_dict(saved["optimizer"])
                _set_rng_state(saved["rng"], shuffle_rng, device)
                state = _EarlyStopping.from_dict(saved["early_stopping"])
                self.history = [EpochReport(**r) for r in saved["history"]]
                self.resumed_from_epoch = int(saved["epoch"])
                logger.info(
                    "resuming torch_mlp training from epoch %d in %s", self.resumed_from_epoch, self.checkpoint_dir
                )

        start_epoch = self.resumed_from_epoch or 0
        for epoch in range(start_epoch + 1, self.epochs + 1):
            if state.stopped:
                break
            started = time.perf_counter()
            network.train()
            # Accumulated on the device so that the loop never waits for the GPU mid-epoch.
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            permutation = torch.randperm(n_train, generator=shuffle_rng, device=device)
            for begin in range(0, n_train, self.batch_size):
                batch = permutation[begin : begin + self.batch_size]
                with _autocast(device):
                    logits = network(train_x.numeric[batch], train_x.categorical[batch])
                loss = F.binary_cross_entropy_with_logits(logits.float(), train_y[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach().double() * batch.numel()
            train_loss = loss_sum.item() / n_train

            if len(val_x):
                val_loss = mean_bce_loss(network, val_x, val_y, device)
                state.update(epoch, val_loss, network, self.patience)
            else:
                val_loss = math.nan
                state.best_epoch = epoch
            if epoch == self.epochs:
                state.stopped = True

            seconds = time.perf_counter() - started
            report = EpochReport(epoch, train_loss, val_loss, seconds, n_train / seconds if seconds > 0 else math.inf)
            self.history.append(report)
            if checkpoint is not None:
                checkpoint.save(
                    {
                        "epoch": epoch,
                        "model": network.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "rng": _get_rng_state(shuffle_rng, device),
                        "early_stopping": state.to_dict(),
                        "history": [asdict(r) for r in self.history],
                    }
                )
            if self.on_epoch is not None:
                self.on_epoch(report)

        if len(val_x):
            network.load_state_dict(state.best_state)
        self.best_epoch = state.best_epoch

    # ------------------------------------------------------------------------------ predict

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Probabilities of shape ``(len(X), 2)``: columns are P(y=0), P(y=1)."""
        network, preprocessor, device = self._fitted()
        encoded = preprocessor.transform(X).to(device)
        network.eval()
        chunks: list[torch.Tensor] = []
        with torch.inference_mode():
            for start in range(0, len(encoded), _EVAL_BATCH_SIZE):
                stop = start + _EVAL_BATCH_SIZE
                with _autocast(device):
                    logits = network(encoded.numeric[start:stop], encoded.categorical[start:stop])
                chunks.append(torch.sigmoid(logits.float()).cpu())
        positive = torch.cat(chunks).double().numpy() if chunks else np.zeros(0)
        return np.column_stack([1.0 - positive, positive])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Class labels 0/1 (threshold 0.5 on P(y=1))."""
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)

    def _fitted(self) -> tuple[MLPNet, TabularPreprocessor, torch.device]:
        if self.network is None or self.preprocessor is None or self.device_ is None:
            raise RuntimeError("TorchMLPClassifier is not fitted; call fit() or load() first")
        return self.network, self.preprocessor, self.device_

    # --------------------------------------------------------------------------- save/load

    def save(self, directory: str) -> None:
        """Write ``weights.pt`` (state_dict, tensors only) and ``model.json`` into ``directory``."""
        network, preprocessor, _ = self._fitted()
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().cpu() for k, v in network.state_dict().items()}
        _atomic_torch_save(weights, path / WEIGHTS_FILE)
        metadata = {
            "format_version": FORMAT_VERSION,
            "model_family": MODEL_FAMILY,
            "config": self.config(),
            "preprocessing": preprocessor.to_dict(),
            "architecture": {
                "n_numeric": preprocessor.n_numeric_inputs,
                "cardinalities": preprocessor.cardinalities,
                "embedding_dims": [e.embedding_dim for e in network.embeddings],
            },
            "best_epoch": self.best_epoch,
            "history": [_report_to_json(r) for r in self.history],
            "torch_version": torch.__version__,
        }
        _atomic_write_text(json.dumps(metadata, indent=2, allow_nan=False), path / METADATA_FILE)

    @classmethod
    def load(cls, directory: str, *, device: str | None = None) -> TorchMLPClassifier:
        """Load a model written by :meth:`save`; tensors are read with ``weights_only=True``."""
        path = Path(directory)
        metadata = json.loads((path / METADATA_FILE).read_text())
        if metadata.get("model_family") != MODEL_FAMILY or metadata.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path / METADATA_FILE} is not a {MODEL_FAMILY} model of format {FORMAT_VERSION}: "
                f"family={metadata.get('model_family')!r} format={metadata.get('format_version')!r}"
            )
        config = dict(metadata["config"])
        config["hidden_sizes"] = tuple(config["hidden_sizes"])
        model = cls(**config, device=device)
        resolved = resolve_device(device)
        architecture = metadata["architecture"]
        network = MLPNet(
            n_numeric=architecture["n_numeric"],
            cardinalities=architecture["cardinalities"],
            embedding_dims=architecture["embedding_dims"],
            hidden_sizes=model.hidden_sizes,
            dropout=model.dropout,
        )
        network.load_state_dict(torch.load(path / WEIGHTS_FILE, map_location=resolved, weights_only=True))
        model.network = network.to(resolved).eval()
        model.preprocessor = TabularPreprocessor.from_dict(metadata["preprocessing"])
        model.device_ = resolved
        model.best_epoch = metadata.get("best_epoch")
        model.history = [_report_from_json(r) for r in metadata.get("history", [])]
        return model


class BatchedMetricLogger:
    """Buffers per-epoch metrics and hands them to ``flush`` in batches.

    Use an instance as ``on_epoch``; each report adds ``(name, value, epoch)`` tuples for
    ``train_loss``, ``val_loss`` (skipped when NaN), ``epoch_seconds`` and
    ``samples_per_second``, each name prefixed with ``prefix``. The buffer goes to
    ``flush`` every ``every_n_epochs`` epochs and on :meth:`close` (or leaving a ``with``
    block, also on error), so a tracking server sees one request per batch instead of one
    per metric. For MLflow::

        client = MlflowClient()
        sink = lambda batch: client.log_batch(run_id, metrics=[
            Metric(name, value, int(time.time() * 1000), step) for name, value, step in batch])
        with BatchedMetricLogger(sink, every_n_epochs=10) as log:
            TorchMLPClassifier(..., on_epoch=log).fit(X, y)

    An exception from ``flush`` propagates (and so stops training when raised from
    ``on_epoch``); the failed batch stays buffered for the next flush. Leaving a ``with``
    block on an exception still flushes, but a flush error there is only logged.

    Attributes:
        flush_count: number of non-empty batches handed to ``flush`` so far.
        seconds_in_flush: wall-clock seconds spent inside ``flush``.
    """

    def __init__(
        self,
        flush: Callable[[list[tuple[str, float, int]]], None],
        *,
        every_n_epochs: int = 10,
        prefix: str = "",
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError("every_n_epochs must be >= 1")
        self._sink = flush
        self.every_n_epochs = every_n_epochs
        self.prefix = prefix
        self.flush_count = 0
        self.seconds_in_flush = 0.0
        self._buffer: list[tuple[str, float, int]] = []
        self._epochs_buffered = 0

    def __call__(self, report: EpochReport) -> None:
        metrics = {
            "train_loss": report.train_loss,
            "val_loss": report.val_loss,
            "epoch_seconds": report.seconds,
            "samples_per_second": report.samples_per_second,
        }
        self._buffer.extend(
            (self.prefix + name, float(value), report.epoch) for name, value in metrics.items() if math.isfinite(value)
        )
        self._epochs_buffered += 1
        if self._epochs_buffered >= self.every_n_epochs:
            self.flush()

    def flush(self) -> None:
        """Send everything buffered now (no-op when the buffer is empty)."""
        if not self._buffer:
            self._epochs_buffered = 0
            return
        started = time.perf_counter()
        try:
            self._sink(list(self._buffer))
        finally:
            self.seconds_in_flush += time.perf_counter() - started
        self.flush_count += 1
        self._buffer.clear()
        self._epochs_buffered = 0

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> BatchedMetricLogger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        # Still try to record the epochs that ran, but never replace the error that ended the block.
        try:
            self.close()
        except Exception:
            logger.warning("could not flush buffered metrics after %s", exc_type.__name__, exc_info=True)


# ---------------------------------------------------------------------------------- helpers


def _binary_labels(y: np.ndarray | Sequence[int] | pd.Series, n_rows: int) -> np.ndarray:
    labels = np.asarray(y)
    if labels.ndim != 1 or labels.shape[0] != n_rows:
        raise ValueError(f"y must be one-dimensional with {n_rows} entries, got shape {labels.shape}")
    if labels.dtype == bool:
        return labels.astype(np.int64)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("y must hold only 0/1 (or booleans)")
    return labels.astype(np.int64)


def _report_to_json(report: EpochReport) -> dict[str, Any]:
    """``asdict`` with non-finite floats (NaN val_loss without a validation split) as null, for strict JSON."""
    return {k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in asdict(report).items()}


def _report_from_json(data: Mapping[str, Any]) -> EpochReport:
    values: dict[str, Any] = {k: math.nan if v is None else v for k, v in data.items()}
    return EpochReport(**values)


def _copy_state(network: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


@dataclass
class _EarlyStopping:
    best_state: dict[str, torch.Tensor]
    best_loss: float = math.inf
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    stopped: bool = False

    def update(self, epoch: int, val_loss: float, network: nn.Module, patience: int) -> None:
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch = val_loss, epoch
            self.best_state = _copy_state(network)
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
            self.stopped = self.epochs_without_improvement >= patience

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_state": self.best_state,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "epochs_without_improvement": self.epochs_without_improvement,
            "stopped": self.stopped,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> _EarlyStopping:
        return cls(
            best_state=dict(state["best_state"]),
            best_loss=float(state["best_loss"]),
            best_epoch=state["best_epoch"],
            epochs_without_improvement=int(state["epochs_without_improvement"]),
            stopped=bool(state["stopped"]),
        )


def _get_rng_state(shuffle_rng: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state(), "shuffle": shuffle_rng.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, torch.Tensor], shuffle_rng: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    shuffle_rng.set_state(state["shuffle"].cpu())
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


class _Checkpointer:
    """One checkpoint file per directory, replaced atomically after every epoch."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.path = directory / CHECKPOINT_FILE
        self.fingerprint = fingerprint

    def load(self, device: torch.device) -> dict[str, Any] | None:
        """The saved state if it belongs to this exact training run, else None."""
        # Temporary files of a writer that was killed mid-write; the rename never happened, so they are garbage.
        for stale in self.path.parent.glob(_temporary_name(self.path, "*")):
            stale.unlink(missing_ok=True)
        if not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, map_location=device, weights_only=True)
        except Exception as error:  # a foreign or damaged file must not block training
            logger.warning("ignoring unreadable checkpoint %s: %s", self.path, error)
            return None
        if saved.get("format_version") != FORMAT_VERSION or saved.get("fingerprint") != self.fingerprint:
            logger.warning("ignoring checkpoint %s: it belongs to other data or hyper-parameters", self.path)
            return None
        return saved

    def save(self, state: dict[str, Any]) -> None:
        _atomic_torch_save({**state, "format_version": FORMAT_VERSION, "fingerprint": self.fingerprint}, self.path)


def _atomic_torch_save(obj: object, path: Path) -> None:
    with _atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _atomic_write_text(text: str, path: Path) -> None:
    with _atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _temporary_name(path: Path, writer: str) -> str:
    return f".{path.name}.{writer}.tmp"


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` that replaces ``path`` when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(_temporary_name(path, str(os.getpid())))
    try:
        yield tmp
        os.replace(tmp, path)
        # Make the rename itself durable, not just the file's bytes.
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    finally:
        tmp.unlink(missing_ok=True)
