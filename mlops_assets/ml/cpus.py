"""How many CPUs a process may use, for sizing the thread pools of native libraries.

OpenMP and BLAS start one thread per CPU they detect. On a shared two-core machine, or beside
another run, that oversubscribes the cores, and OpenMP's spinning barriers then make every call
several times slower (scikit-learn #30662); ``threadpoolctl`` limits them per block instead.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
_PROC_STAT = Path("/proc/stat")


def cpu_budget() -> int:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota (a
    container's limit, which ``os.cpu_count`` does not see)."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:
        allowed = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(allowed, quota)) if quota else max(1, allowed)


def idle_cpus() -> int:
    """The CPUs of the budget not already kept busy by other work, at least one.

    Other work is the larger of two readings: the one-minute load average less the caller (a
    long-running caller has counted in it), and the tasks runnable right now less the caller
    (``procs_running``): a run worker that starts beside a busy process sees the load average of
    the minute before, which does not count that process yet. Beside one CPU-bound process on two
    cores, the GSS retrain's fit took 0.30 s with this share (one thread) and 2.51 s with HGB's
    default two (``make bench-batch``, 2026-12-03).
    """
    budget = cpu_budget()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return idle_share(budget, load=load, running_now=_running_now())


def idle_share(budget: int, *, load: float, running_now: int | None) -> int:
    """The CPUs left to the caller: ``budget`` less the other work the readings show, at least one."""
    others = round(load) - 1
    if running_now is not None:
        others = max(others, running_now - 1)
    return max(1, min(budget, budget - max(0, others)))


def _running_now(samples: int = 3, gap_s: float = 0.01) -> int | None:
    """Runnable tasks on the machine, this one included (the least of a few readings, so a
    task that runs for a moment is not taken for a busy one); None where /proc/stat is absent."""
    readings = []
    for i in range(samples):
        try:
            with _PROC_STAT.open() as stat:
                for line in stat:
                    if line.startswith("procs_running "):
                        readings.append(int(line.split()[1]))
                        break
        except OSError:
            return None
        if i + 1 < samples:
            time.sleep(gap_s)
    return min(readings) if readings else None


def _cgroup_quota() -> int | None:
    try:
        quota, period = _CGROUP_CPU_MAX.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def requested_cpus(quantity: str | None) -> int | None:
    """Whole CPUs of a Kubernetes CPU quantity ('4', '1.5', '500m'), rounded up; None when unset
    or unreadable."""
    if not quantity:
        return None
    text = quantity.strip()
    try:
        value = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        return None
    return max(1, math.ceil(value)) if value > 0 else None


def run_share(requested: str | None = None) -> int:
    """The threads a run's native pools should use.

    A pod given a CPU request (``training.cpu``) uses that much, within its budget: the node's load
    average says nothing about a pod's share. Anywhere else, the idle CPUs of this process's
    budget, so a run beside another on two cores does not start two spinning threads each.
    """
    pod = requested_cpus(requested)
    if pod is not None:
        return min(pod, cpu_budget())
    return idle_cpus()


@contextmanager
def cpu_share(threads: int) -> Iterator[None]:
    """OpenMP and BLAS pools (threadpoolctl) and torch's intra-op pool, when torch is loaded,
    limited to ``threads`` for the block."""
    from threadpoolctl import threadpool_limits

    # Not imported here: only a torch model's run has loaded it.
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=threads):
        if torch is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if torch is not None and before is not None:
                torch.set_num_threads(before)
