"""One-row request latency of `mlops serve` against `mlflow models serve`, on the same model and load.

Builds an MLOPS_HOME in a temporary folder: ``sklearn_hgb`` on the shipped ``gss_wages`` spec
(its resolved features and training params, trained on its first training data in this process)
registered twice in a SQLite MLflow store, version 1 champion and version 2 challenger. Then:

1. `mlops serve gss_wages` (one worker) with the request log on and the shadow on (the challenger
   scores every request off the response path);
2. a loopback load generator in a separate process (its own native thread pools sized to one):
   one-row ``dataframe_records`` requests of real GSS rows over keep-alive connections, open loop
   at a fixed rate (latency measured from each request's scheduled send time, so a stall counts
   against every request it delays), then closed loop as fast as it answers (peak req/s). The
   closed loop is `wrk` (one thread, 4 connections, a Lua script cycling the same bodies) where
   it is installed: the Python generator burns more CPU per request than the server, on the same
   cores, so it measured itself rather than the server's peak. Without wrk the Python generator
   measures it, with a note; the table says which one did;
3. `mlflow models serve -m models:/gss_wages/1 --env-manager local --workers 1` on the same
   model, under the same two loads;
4. the champion alias moved N times (promotions back and forth) while the fixed-rate load runs
   against `mlops serve`, counting failed requests.

The machine may be shared with other work: compare the two servers of one run, not numbers from
different runs, and read the load average printed with the table.

Usage: python benchmarks/bench_serve.py [--rate 300] [--seconds 20] [--moves 20]
The last line printed is
``serve: p50 <x> ms, p99 <y> ms at <r> req/s, peak <p> req/s, <k>x mlflow serve, <e> errors over <n> alias moves``
where ``k`` is our peak req/s over mlflow serve's (closed loop, same generator and connections). Not a ratio of
p50s at the fixed rate: where mlflow serve cannot keep up with that rate its queue grows for the
whole run and its p50 measures the run's length, not the server.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = "gss_wages"
SERVE_PORT = 18090
MLFLOW_PORT = 18091
PEAK_CONNECTIONS = 4
# Cycles the request bodies (one JSON document a line, the file named after `--`), as the Python
# generator does; each wrk thread has its own Lua state and reads the file once.
WRK_SCRIPT = """
local bodies = {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
function request()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""


# ----------------------------------------------------------------------------- load generator


def load(port: int, rate: float, seconds: float, threads: int, bodies: list[bytes]) -> dict:
    """Requests for ``seconds``: at ``rate`` req/s in total (open loop), or as fast as answered
    (``rate`` 0). Returns counts and latencies in ms."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    start = time.perf_counter() + 0.2
    end = start + seconds

    def worker(k: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Content-Type": "application/json"}
        interval = threads / rate if rate else 0.0
        i = 0
        while True:
            scheduled = start + (k / threads) * interval + i * interval if rate else time.perf_counter()
            if scheduled >= end:
                break
            now = time.perf_counter()
            if scheduled > now:
                time.sleep(scheduled - now)
            body = bodies[(i * threads + k) % len(bodies)]
            try:
                connection.request("POST", "/invocations", body, headers)
                reply = connection.getresponse()
                reply.read()
                ok = reply.status == 200
            except OSError:
                ok = False
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            done = time.perf_counter()
            if ok:
                latencies[k].append((done - (scheduled if rate else now)) * 1000)
            else:
                errors[k] += 1
            i += 1
        connection.close()

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    # Answered per second of the time it took to answer them: a server that falls behind the
    # schedule answers its last requests after ``end``, and its rate is below the offered one.
    elapsed = max(seconds, time.perf_counter() - start)
    all_latencies = sorted(x for part in latencies for x in part)
    return {
        "ok": len(all_latencies),
        "errors": sum(errors),
        "seconds": elapsed,
        "rate": len(all_latencies) / elapsed,
        "p50": _pct(all_latencies, 0.50),
        "p99": _pct(all_latencies, 0.99),
    }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def load_main(args: argparse.Namespace) -> None:
    from threadpoolctl import threadpool_limits

    bodies = [line.encode() for line in Path(args.bodies).read_text().splitlines()]
    with threadpool_limits(limits=1):
        result = load(args.port, args.rate, args.seconds, args.threads, bodies)
    print(json.dumps(result))


def run_load(port: int, rate: float, seconds: float, threads: int, bodies: Path, server: int | None = None) -> dict:
    """The load generator in its own process (so its CPU use is not the server's). With ``server``
    (a pid), adds both processes' CPU seconds per answered request."""
    command = [sys.executable, __file__, "load", "--port", str(port), "--rate", str(rate)]
    command += ["--seconds", str(seconds), "--threads", str(threads), "--bodies", str(bodies)]
    out, generator_cpu, server_cpu = _measured(command, server, env={**os.environ, "OMP_NUM_THREADS": "1"})
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "generator": "python", **_per_request(result, generator_cpu, server_cpu)}


def run_wrk(port: int, seconds: float, connections: int, bodies: Path, script: Path, server: int) -> dict:
    """Closed loop with `wrk` (one thread, keep-alive ``connections``), cycling ``bodies``; the
    latencies are wrk's, from each request's send (closed loop: no schedule to measure from)."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "--latency", "-s", str(script)]
    command += [f"http://127.0.0.1:{port}/invocations", "--", str(bodies)]
    out, generator_cpu, server_cpu = _measured(command, server)
    total, elapsed = re.search(r"(\d+) requests in ([\d.]+)(ms|s)", out).group(1, 2)
    elapsed_s = float(elapsed) / (1000 if re.search(r"requests in [\d.]+ms", out) else 1)
    not_ok = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = not_ok + (sum(int(x) for x in sockets.groups()) if sockets else 0)
    ok = int(total) - not_ok
    result = {
        "ok": ok,
        "errors": errors,
        "seconds": elapsed_s,
        "rate": ok / elapsed_s,
        "p50": _wrk_ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),
        "p99": _wrk_ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),
        "generator": "wrk",
    }
    return {**result, **_per_request(result, generator_cpu, server_cpu)}


def _wrk_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def _measured(command: list[str], server: int | None, env: dict | None = None) -> tuple[str, float, float | None]:
    """Runs ``command``: its stdout, its CPU seconds and those of ``server``'s process tree meanwhile."""
    before = _tree_cpu(server) if server else None
    children = _children_cpu()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = process.communicate()
    # communicate() reaped it: its CPU is now in this process's children's. The loads run one at
    # a time, so nothing else is reaped meanwhile (the moves' load runs alone, its figure unused).
    generator = _children_cpu() - children
    after = _tree_cpu(server) if server else None
    if process.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({process.returncode}):\n{err[-3000:]}")
    return out, generator, (after - before) if before is not None and after is not None else None


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tree_cpu(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` and its live descendants (mlflow serve's uvicorn is a
    child), from /proc; None where there is no /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return None
    for entry in entries:
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        used[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    if pid not in used:
        return None
    tree, frontier = {pid}, [pid]
    while frontier:
        children = [c for c, parent in parents.items() if parent in frontier and c not in tree]
        tree.update(children)
        frontier = children
    return sum(used[p] for p in tree)


def _per_request(result: dict, generator_cpu: float, server_cpu: float | None) -> dict:
    answered = max(1, result["ok"] + result["errors"])
    return {
        "generator_cpu_ms": 1000 * generator_cpu / answered,
        "server_cpu_ms": None if server_cpu is None else 1000 * server_cpu / answered,
    }


# ----------------------------------------------------------------------------- setup


def build_home(home: Path) -> tuple[object, list[str], list[dict]]:
    """Two registered HGB versions of gss_wages (champion, challenger) and real one-row request bodies."""
    from mlops_assets.ml.data import read_source, read_source_files
    from mlops_assets.ml.trainers import build_estimator, prepare_inputs
    from mlops_assets.preflight import resolve
    from mlops_assets.spec import load_specs
    from resources.settings import Settings, build_resources

    (spec,) = [s for s in load_specs() if s.name == MODEL]
    settings = Settings.from_env({"MLOPS_HOME": str(home)})
    pipeline = resolve(spec, cache_dir=settings.home / "cache")
    numeric, categorical = list(pipeline.columns.numeric), list(pipeline.columns.categorical)
    frame = read_source(spec.source)
    batch = spec.source.batch_column
    train = frame[frame[batch] <= spec.training.initial_until] if batch and spec.training.initial_until else frame
    inputs = prepare_inputs(train, numeric, categorical)
    label = (train[spec.label.column] >= spec.label.threshold).astype(int)
    registry = build_resources(settings)["registry"]
    versions = []
    for seed in (spec.training.seed, spec.training.seed + 1):
        model = build_estimator(
            "sklearn_hgb", numeric=numeric, categorical=categorical, params=dict(spec.training.params), seed=seed
        )
        model.fit(inputs, label)
        versions.append(
            registry.log_and_register(
                name=MODEL,
                experiment=MODEL,
                model=model,
                family="sklearn_hgb",
                params=dict(spec.training.params),
                metrics={},
                train_inputs=inputs,
                training_frame=train,
                label_column=spec.label.column,
                tags={},
                extra_artifacts={},
            ).version
        )
    registry.promote(name=MODEL, version=versions[0], expected_champion=None, record={}, reason="bench")
    registry.set_alias(MODEL, "challenger", versions[1])
    # Requests are rows of the later survey years (production traffic), complete ones so that
    # MLflow's schema enforcement accepts every one of them too.
    everything = read_source_files(spec.source)
    later = everything[everything[batch] > spec.training.initial_until]
    rows = later[numeric + categorical].dropna().head(2000)
    if rows.empty:
        raise SystemExit(f"{MODEL}: no complete rows after {spec.training.initial_until} to send")
    records = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in rows.to_dict("records")]
    return registry, versions, records


def wait_http(port: int, path: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server on port {port} exited:\n{log.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server on port {port} not ready after {timeout}s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def moves_under_load(registry: object, versions: list[str], n: int, port: int, rate: float, bodies: Path) -> dict:
    """N champion moves, one every 1.5 s, while the fixed-rate load runs; the load's error count."""
    seconds = 1.5 * n + 2
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(run_load(port, rate, seconds, 2, bodies)))
    runner.start()
    time.sleep(1.0)
    current = versions[0]
    for move in range(n):
        target = versions[1] if current == versions[0] else versions[0]
        registry.promote(name=MODEL, version=target, expected_champion=current, record={}, reason=f"bench {move}")
        current = target
        time.sleep(1.5)
    runner.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--moves", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        home = Path(tmp) / "home"
        registry, versions, records = build_home(home)
        bodies = Path(tmp) / "bodies.jsonl"
        bodies.write_text("\n".join(json.dumps({"dataframe_records": [r]}) for r in records))
        script = Path(tmp) / "bodies.lua"
        script.write_text(WRK_SCRIPT)
        if shutil.which("wrk") is None:
            print(
                "note: wrk is not installed (`apt-get install -y wrk`; `make bench-serve` installs it as root): "
                "the Python generator measures the closed-loop peak, and on a small machine its own CPU caps it",
                flush=True,
            )

        def closed_loop(port: int, pid: int) -> dict:
            seconds = min(args.seconds, 10)
            if shutil.which("wrk") is None:
                return run_load(port, 0, seconds, PEAK_CONNECTIONS, bodies, pid)
            return run_wrk(port, seconds, PEAK_CONNECTIONS, bodies, script, pid)

        env = {
            **os.environ,
            "MLOPS_HOME": str(home),
            "PYTHONPATH": str(REPO),
            "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
            # mlflow models serve starts `uvicorn` by name: this interpreter's scripts come first.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        env.pop("MLOPS_PIPELINES", None)
        results: dict[str, dict] = {}
        serve_log = Path(tmp) / "serve.log"
        pipelines = Path(tmp) / "pipelines"
        pipelines.mkdir()
        spec_text = (REPO / "mlops_assets" / "pipelines" / f"{MODEL}.yaml").read_text()
        (pipelines / f"{MODEL}.yaml").write_text(
            spec_text + "\nserving:\n  shadow: true\n  request_log: {enabled: true, interval_seconds: 5}\n"
        )
        serve = subprocess.Popen(
            [sys.executable, "-m", "mlops_assets.cli", "serve", MODEL, "--port", str(SERVE_PORT)],
            env={**env, "MLOPS_PIPELINES": str(pipelines)},
            stdout=serve_log.open("w"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(SERVE_PORT, "/health", serve, serve_log)
            run_load(SERVE_PORT, args.rate, 3, 2, bodies)  # warm-up
            results["mlops serve"] = run_load(SERVE_PORT, args.rate, args.seconds, 2, bodies, serve.pid)
            results["mlops serve peak"] = closed_loop(SERVE_PORT, serve.pid)
            print("measured:", json.dumps(results), flush=True)
            moved = moves_under_load(registry, versions, args.moves, SERVE_PORT, args.rate, bodies)
            print("moves:", json.dumps(moved), flush=True)
            metrics = _metrics(SERVE_PORT)
        finally:
            stop(serve)
        mlflow_log = Path(tmp) / "mlflow.log"
        mlflow_serve = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL}/{versions[0]}"]
            + ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(MLFLOW_PORT), "--workers", "1"],
            env={**env, "OMP_NUM_THREADS": "1"},
            stdout=mlflow_log.open("w"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(MLFLOW_PORT, "/ping", mlflow_serve, mlflow_log)
            run_load(MLFLOW_PORT, args.rate, 3, 2, bodies)
            results["mlflow models serve"] = run_load(MLFLOW_PORT, args.rate, args.seconds, 2, bodies, mlflow_serve.pid)
            results["mlflow models serve peak"] = closed_loop(MLFLOW_PORT, mlflow_serve.pid)
        finally:
            stop(mlflow_serve)
    load1, load5, _ = os.getloadavg()
    print(f"\none-row requests, loopback, one server worker; load average {load1:.2f} / {load5:.2f} (1 / 5 min)")
    print("CPU ms/req: CPU seconds of the server's processes and of the generator over the run, per request")
    header = f"{'server':<26}{'load':>16}{'generator':>10}{'req/s':>8}{'p50 ms':>10}{'p99 ms':>10}{'errors':>7}"
    print(f"{header}{'server CPU':>11}{'gen CPU':>8}")
    for name, r in [*results.items(), ("mlops serve, alias moves", moved)]:
        kind = f"closed, {PEAK_CONNECTIONS} conn" if name.endswith("peak") else f"{args.rate:.0f} req/s"
        cpu = "-" if r.get("server_cpu_ms") is None else f"{r['server_cpu_ms']:.2f}"
        print(
            f"{name:<26}{kind:>16}{r['generator']:>10}{r['rate']:>8.0f}{r['p50']:>10.2f}{r['p99']:>10.2f}"
            f"{r['errors']:>7}{cpu:>11}{r['generator_cpu_ms']:>8.2f}"
        )
    shadow = metrics.get(f'mlops_serve_shadow_rows_total{{model="{MODEL}"}}', 0)
    dropped = metrics.get(f'mlops_serve_follow_ups_dropped_total{{model="{MODEL}"}}', 0)
    swaps = metrics.get(f'mlops_serve_model_swaps_total{{model="{MODEL}",alias="champion"}}', 0)
    print(
        f"mlops serve counted {shadow:.0f} shadow rows, {dropped:.0f} follow-ups dropped (shadow and log entry, "
        f"background queue full) and {swaps:.0f} champion loads (the first and each move)"
    )
    ours, peak, their_peak = results["mlops serve"], results["mlops serve peak"], results["mlflow models serve peak"]
    print(
        f"serve: p50 {ours['p50']:.2f} ms, p99 {ours['p99']:.2f} ms at {ours['rate']:.0f} req/s, "
        f"peak {peak['rate']:.0f} req/s, {peak['rate'] / their_peak['rate']:.1f}x mlflow serve, "
        f"{moved['errors']} errors over {args.moves} alias moves"
    )


def _metrics(port: int) -> dict[str, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/metrics")
    out = {}
    for line in connection.getresponse().read().decode().splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        parser = argparse.ArgumentParser()
        parser.add_argument("mode")
        for flag in ("--port", "--threads"):
            parser.add_argument(flag, type=int, required=True)
        for flag in ("--rate", "--seconds"):
            parser.add_argument(flag, type=float, required=True)
        parser.add_argument("--bodies", required=True)
        load_main(parser.parse_args())
    else:
        main()
