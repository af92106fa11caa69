"""How many CPUs a process may use, for sizing the thread pools of native libraries.

OpenMP and BLAS start one thread per CPU they detect. On a shared two-core machine, or beside
another run, that oversubscribes the cores, and OpenMP's spinning barriers then make every call
several times slower (scikit-learn #30662); ``threadpoolctl`` limits them per block instead.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


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
    """The CPUs of the budget not already kept busy by other work (the one-minute load average,
    which counts the caller itself as one), at least one."""
    budget = cpu_budget()
    try:
        load = os.getloadavg()[0]
    except OSError:
        return budget
    return max(1, min(budget, round(budget - load) + 1))


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
