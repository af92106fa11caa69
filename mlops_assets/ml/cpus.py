"""How many CPUs a process may use, for sizing the thread pools of native libraries.

OpenMP and BLAS start one thread per CPU they detect. On a shared two-core machine, or beside
another run, that oversubscribes the cores, and OpenMP's spinning barriers then make every call
several times slower (scikit-learn #30662); ``threadpoolctl`` limits them per block instead.
"""

from __future__ import annotations

import math
import os
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
