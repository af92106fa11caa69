"""The CPU share of a run: the pure decisions, and what the limits do to the native pools."""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from mlops_assets.ml.cpus import cpu_budget, cpu_share, requested_cpus, run_share


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
