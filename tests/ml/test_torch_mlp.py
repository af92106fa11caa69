"""Tests for the torch_mlp model family (mlops_assets.ml.torch_mlp)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from mlops_assets.ml.torch_mlp import (
    CHECKPOINT_FILE,
    METADATA_FILE,
    WEIGHTS_FILE,
    BatchedMetricLogger,
    EpochReport,
    TorchMLPClassifier,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
NUMERIC = ["x1", "x2"]
CATEGORICAL = ["color", "size"]


def make_data(n: int = 3000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A nearly separable problem: a linear score in two numerics (on different scales) and a category."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.normal(loc=50.0, scale=10.0, size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    size = rng.choice(["S", "M", "L", "XL"], size=n)
    score = 2.5 * x1 + 0.2 * (x2 - 50.0) + np.where(color == "red", 3.0, -1.0)
    y = (score + rng.normal(scale=0.3, size=n) > 0).astype(np.int64)
    X = pd.DataFrame(
        {"x1": x1, "x2": x2, "color": color.astype(object), "size": size.astype(object), "noise": rng.random(n)}
    )
    X.loc[rng.random(n) < 0.05, "x2"] = np.nan
    X.loc[rng.random(n) < 0.03, "color"] = None
    return X, y


def make_model(**overrides: Any) -> TorchMLPClassifier:
    params: dict[str, Any] = {
        "numeric": NUMERIC,
        "categorical": CATEGORICAL,
        "hidden_sizes": (16, 8),
        "epochs": 6,
        "batch_size": 128,
        "learning_rate": 1e-2,
        "seed": 7,
        "device": "cpu",
    }
    params.update(overrides)
    return TorchMLPClassifier(**params)


def assert_same_weights(a: TorchMLPClassifier, b: TorchMLPClassifier) -> None:
    assert a.network is not None and b.network is not None
    state_a, state_b = a.network.state_dict(), b.network.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key].cpu(), state_b[key].cpu()), key


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # These models are tiny: on shared cores a second intra-op thread only adds synchronisation
    # (measured: this file ran 4x slower with 2 threads on a busy 2-core machine).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    return make_data()


@pytest.fixture(scope="module")
def fitted(data: tuple[pd.DataFrame, np.ndarray]) -> TorchMLPClassifier:
    X, y = data
    return make_model().fit(X, y)


def test_learns_a_separable_problem(fitted: TorchMLPClassifier) -> None:
    X_test, y_test = make_data(n=2000, seed=1)
    proba = fitted.predict_proba(X_test)
    assert proba.shape == (2000, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert roc_auc_score(y_test, proba[:, 1]) > 0.9
    assert set(np.unique(fitted.predict(X_test))) <= {0, 1}
    assert list(fitted.classes_) == [0, 1]
    assert [r.epoch for r in fitted.history] == list(range(1, len(fitted.history) + 1))
    assert fitted.best_epoch is not None and 1 <= fitted.best_epoch <= len(fitted.history)
    report = fitted.history[-1]
    assert report.train_loss > 0 and report.val_loss > 0 and report.seconds > 0 and report.samples_per_second > 0


def test_same_seed_gives_bit_identical_model_and_leaves_global_rng_alone(
    data: tuple[pd.DataFrame, np.ndarray], fitted: TorchMLPClassifier
) -> None:
    X, y = data
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    again = make_model().fit(X, y)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert_same_weights(fitted, again)
    assert np.array_equal(fitted.predict_proba(X), again.predict_proba(X))
    assert [r.val_loss for r in fitted.history] == [r.val_loss for r in again.history]

    other = make_model(seed=8).fit(X, y)
    assert not np.array_equal(fitted.predict_proba(X), other.predict_proba(X))


def test_save_load_round_trip_is_pickle_free_and_exact(
    data: tuple[pd.DataFrame, np.ndarray], fitted: TorchMLPClassifier, tmp_path: Path
) -> None:
    X, _ = data
    fitted.save(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([WEIGHTS_FILE, METADATA_FILE])
    # Both files must be readable without unpickling arbitrary objects.
    weights = torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)
    assert all(isinstance(t, torch.Tensor) for t in weights.values())
    metadata = json.loads((tmp_path / METADATA_FILE).read_text())
    assert metadata["model_family"] == "torch_mlp"
    assert metadata["preprocessing"]["vocabularies"]["size"] == ["L", "M", "S", "XL"]

    loaded = TorchMLPClassifier.load(str(tmp_path), device="cpu")
    assert np.array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    assert loaded.history == fitted.history
    assert loaded.get_params() == {**fitted.get_params(), "on_epoch": None}


def test_unseen_and_missing_categories_map_to_the_unknown_embedding(fitted: TorchMLPClassifier) -> None:
    rows = pd.DataFrame(
        {
            "x1": [0.5] * 4,
            "x2": [50.0] * 4,
            "color": ["purple", None, np.nan, "red"],
            "size": ["XXL", "M", "M", None],
        }
    )
    proba = fitted.predict_proba(rows)
    assert np.isfinite(proba).all()
    encoded = fitted.preprocessor.transform(rows)  # type: ignore[union-attr]
    assert encoded.categorical[:, 0].tolist() == [0, 0, 0, 3]  # vocabulary: blue, green, red
    assert encoded.categorical[:, 1].tolist() == [0, 2, 2, 0]
    # Unseen and missing are the same input to the network.
    assert proba[1, 1] == proba[2, 1]


def test_nan_numerics_are_imputed_and_flagged(
    data: tuple[pd.DataFrame, np.ndarray], fitted: TorchMLPClassifier
) -> None:
    X, y = data
    pre = fitted.preprocessor
    assert pre is not None
    # Only x2 had missing values in training, so only x2 gets an indicator column.
    assert pre.indicator_columns == ["x2"]
    assert pre.means[1] == pytest.approx(np.nanmean(X["x2"]))
    rows = pd.DataFrame({"x1": [np.nan, 0.1], "x2": [np.nan, np.inf], "color": ["red", "red"], "size": ["S", "S"]})
    encoded = pre.transform(rows)
    assert encoded.numeric.tolist() == [[0.0, 0.0, 1.0], [pytest.approx(encoded.numeric[1, 0].item()), 0.0, 1.0]]
    assert np.isfinite(fitted.predict_proba(rows)).all()

    without = make_model(add_missing_indicator=False, epochs=1).fit(X, y)
    assert without.preprocessor is not None and without.preprocessor.n_numeric_inputs == 2


def test_without_validation_split_all_epochs_run_and_saved_json_is_strict(
    data: tuple[pd.DataFrame, np.ndarray], tmp_path: Path
) -> None:
    X, y = data
    model = make_model(categorical=[], validation_fraction=0.0, epochs=3, patience=1).fit(X, y)
    assert [r.epoch for r in model.history] == [1, 2, 3] and model.best_epoch == 3
    assert all(math.isnan(r.val_loss) for r in model.history)
    model.save(str(tmp_path))

    def reject(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    json.loads((tmp_path / METADATA_FILE).read_text(), parse_constant=reject)
    loaded = TorchMLPClassifier.load(str(tmp_path))
    assert math.isnan(loaded.history[0].val_loss)
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))


# Shared by the child process and the parent: any difference would (rightly) make the checkpoint incompatible.
KILL_TEST_ROWS = 3000
KILL_TEST_SETTINGS: dict[str, Any] = {"epochs": 6, "patience": 100, "batch_size": 64}

_CHILD = """
import sys
import torch
from tests.ml.test_torch_mlp import KILL_TEST_ROWS, KILL_TEST_SETTINGS, make_data, make_model

torch.set_num_threads(1)  # as in the parent, so that both runs do the same arithmetic
X, y = make_data(n=KILL_TEST_ROWS)
def on_epoch(report):
    print(f"epoch {report.epoch}", flush=True)
make_model(checkpoint_dir=sys.argv[1], on_epoch=on_epoch, **KILL_TEST_SETTINGS).fit(X, y)
print("finished", flush=True)
"""


def test_killed_training_resumes_from_checkpoint_and_matches_uninterrupted_run(tmp_path: Path) -> None:
    checkpoint_dir = tmp_path / "ckpt"
    checkpoint_dir.mkdir()
    (checkpoint_dir / f".{CHECKPOINT_FILE}.12345.tmp").write_bytes(b"half-written by a killed process")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(checkpoint_dir)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    seen = []
    for line in child.stdout:
        seen.append(line.strip())
        if line.strip() == "epoch 2":
            child.send_signal(signal.SIGKILL)  # mid-epoch 3, possibly mid-write of its checkpoint
            break
    child.wait(timeout=60)
    stderr = child.stderr.read() if child.stderr else ""
    assert child.returncode == -signal.SIGKILL, (seen, stderr)
    assert (checkpoint_dir / CHECKPOINT_FILE).exists()

    X, y = make_data(n=KILL_TEST_ROWS)
    reported: list[int] = []
    resumed = make_model(
        checkpoint_dir=str(checkpoint_dir), on_epoch=lambda r: reported.append(r.epoch), **KILL_TEST_SETTINGS
    ).fit(X, y)
    assert resumed.resumed_from_epoch is not None and resumed.resumed_from_epoch >= 2
    assert reported == list(range(resumed.resumed_from_epoch + 1, KILL_TEST_SETTINGS["epochs"] + 1))

    uninterrupted = make_model(**KILL_TEST_SETTINGS).fit(X, y)
    assert_same_weights(resumed, uninterrupted)
    assert np.array_equal(resumed.predict_proba(X), uninterrupted.predict_proba(X))
    assert [(r.epoch, r.train_loss, r.val_loss) for r in resumed.history] == [
        (r.epoch, r.train_loss, r.val_loss) for r in uninterrupted.history
    ]
    assert [p.name for p in checkpoint_dir.iterdir()] == [CHECKPOINT_FILE]  # no temporary file left behind


def test_checkpoint_of_other_run_is_ignored_and_finished_run_is_not_repeated(
    data: tuple[pd.DataFrame, np.ndarray], tmp_path: Path
) -> None:
    X, y = data
    first = make_model(epochs=2, checkpoint_dir=str(tmp_path)).fit(X, y)
    assert first.resumed_from_epoch is None

    other = make_model(epochs=2, seed=99, checkpoint_dir=str(tmp_path)).fit(X, y)
    assert other.resumed_from_epoch is None

    reported: list[EpochReport] = []
    done = make_model(epochs=2, seed=99, checkpoint_dir=str(tmp_path), on_epoch=reported.append).fit(X, y)
    assert done.resumed_from_epoch == 2 and reported == []
    assert_same_weights(done, other)
    assert done.history == other.history


def test_batched_metric_logger_flushes_every_n_epochs_and_on_close(data: tuple[pd.DataFrame, np.ndarray]) -> None:
    batches: list[list[tuple[str, float, int]]] = []
    with BatchedMetricLogger(batches.append, every_n_epochs=3, prefix="mlp/") as log:
        for epoch in range(1, 8):
            log(EpochReport(epoch, 0.5, math.nan if epoch == 1 else 0.4, 0.1, 1000.0))
        assert log.flush_count == 2
    assert log.flush_count == 3
    assert [len(b) for b in batches] == [3 * 4 - 1, 3 * 4, 4]  # epoch 1's NaN val_loss is dropped
    assert batches[0][0] == ("mlp/train_loss", 0.5, 1)
    assert {name for name, _, _ in batches[1]} == {
        "mlp/train_loss",
        "mlp/val_loss",
        "mlp/epoch_seconds",
        "mlp/samples_per_second",
    }
    assert [step for _, _, step in batches[2]] == [7] * 4

    def failing(batch: list[tuple[str, float, int]]) -> None:
        raise ConnectionError("tracking server down")

    # A flush error while leaving the block on another error must not hide that error.
    with pytest.raises(KeyError), BatchedMetricLogger(failing, every_n_epochs=5) as log:
        log(EpochReport(1, 0.5, 0.4, 0.1, 1000.0))
        raise KeyError("training failed")

    X, y = data
    flushed: list[list[tuple[str, float, int]]] = []
    with BatchedMetricLogger(flushed.append, every_n_epochs=2) as log:
        model = make_model(epochs=5, patience=100, on_epoch=log).fit(X, y)
    assert log.flush_count == 3 == len(flushed)
    assert sorted({step for batch in flushed for _, _, step in batch}) == [r.epoch for r in model.history]


def test_input_validation_and_sklearn_clone(data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    with pytest.raises(RuntimeError, match="not fitted"):
        make_model().predict(X)
    with pytest.raises(ValueError, match="0/1"):
        make_model().fit(X, y * 2)
    with pytest.raises(KeyError, match="color"):
        make_model(epochs=1).fit(X.drop(columns="color"), y)
    copy = clone(make_model(epochs=3))
    assert isinstance(copy, TorchMLPClassifier) and copy.epochs == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_on_cuda_with_data_resident_on_the_gpu(data: tuple[pd.DataFrame, np.ndarray], tmp_path: Path) -> None:
    X, y = data
    allocated: list[int] = []
    model = make_model(device="cuda", on_epoch=lambda r: allocated.append(torch.cuda.memory_allocated())).fit(X, y)
    assert model.device_ is not None and model.device_.type == "cuda"
    assert model.network is not None and all(p.is_cuda for p in model.network.parameters())
    # The whole encoded training set (about 3000 x (3 float32 + 2 int64) bytes) is held on the GPU during fit.
    assert min(allocated) > len(X) * (3 * 4 + 2 * 8)
    X_test, y_test = make_data(n=2000, seed=1)
    assert roc_auc_score(y_test, model.predict_proba(X_test)[:, 1]) > 0.9
    model.save(str(tmp_path))
    on_cpu = TorchMLPClassifier.load(str(tmp_path), device="cpu")
    np.testing.assert_allclose(on_cpu.predict_proba(X_test), model.predict_proba(X_test), atol=2e-2)
