"""The CPU share of a run: the pure decisions, and what the limits do to the native pools."""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from mlops_assets.ml.cpus import cpu_budget, cpu_share, idle_share, requested_cpus, run_share


@pytest.mark.parametrize(
    ("quantity", "cpus"),
    [
        (None, None),
        ("", None),
        ("4", 4),
        ("1.5", 2),
        ("500m", 1),
        ("2500m", 3),
        ("0", None),
        ("four", None),
    ],
)
def test_a_kubernetes_cpu_quantity_is_read_as_whole_cpus(quantity: str | None, cpus: int | None) -> None:
    assert requested_cpus(quantity) == cpus


def test_a_pod_request_is_the_share_within_the_budget() -> None:
    assert run_share("1") == 1
    assert run_share("512") == cpu_budget()


def test_without_a_request_the_share_is_at_least_one_and_within_the_budget() -> None:
    assert 1 <= run_share(None) <= cpu_budget()


def _openmp_threads() -> list[int]:
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"]


def test_the_share_limits_openmp_and_torch_for_the_block_only() -> None:
    torch = pytest.importorskip("torch")
    import sklearn.ensemble  # noqa: F401 - loads the OpenMP runtime HGB trains with

    # Two threads before the block, whatever OMP_NUM_THREADS the suite runs with.
    torch.set_num_threads(2)
    with threadpool_limits(limits=2):
        assert _openmp_threads() and set(_openmp_threads()) == {2}, "no OpenMP runtime at 2 threads"
        with cpu_share(1):
            assert set(_openmp_threads()) == {1}
            assert torch.get_num_threads() == 1
        assert set(_openmp_threads()) == {2}
        assert torch.get_num_threads() == 2


@pytest.mark.parametrize(
    ("budget", "load", "running_now", "share"),
    [
        (2, 0.0, 1, 2),  # quiet: only the caller runs
        (2, 1.0, 1, 2),  # a long-running caller's own load
        (2, 1.0, 2, 1),  # a fresh caller beside a busy process the load average shows as 1
        (2, 0.1, 2, 1),  # the same before the load average has caught up
        (2, 2.0, 1, 1),  # a busy minute, quiet at this instant
        (8, 3.2, 2, 6),
        (2, 6.0, 7, 1),  # never below one
        (4, 0.0, None, 4),  # no /proc/stat
    ],
)
def test_the_idle_share_counts_the_other_work_either_reading_shows(
    budget: int, load: float, running_now: int | None, share: int
) -> None:
    assert idle_share(budget, load=load, running_now=running_now) == share


def test_a_run_that_starts_beside_a_busy_process_leaves_it_a_cpu() -> None:
    import subprocess
    import sys
    import time

    if cpu_budget() < 2:
        pytest.skip("one CPU: nothing to leave")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # running, but far too short for the one-minute load average
        assert run_share(None) <= cpu_budget() - 1
    finally:
        burner.kill()
        burner.wait()
