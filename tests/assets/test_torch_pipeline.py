"""The torch_mlp family through the same lifecycle as the scikit-learn ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlops_assets.contract import LakeFolder, TrainingFile
from tests.assets.pipeline_harness import Harness
from tests.conftest import GSS_FEATURES, WriteSpec, gss_spec

NAME = "gss_slice"


@pytest.fixture(autouse=True)
def one_torch_thread():  # noqa: ANN201 - two threads on a shared 2-core machine swing wildly
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_torch_model_is_trained_registered_promoted_and_served(
    tmp_path: Path, gss_slice: Path, write_spec: WriteSpec
) -> None:
    spec = gss_spec(gss_slice)
    spec["training"] = {"initial_until": 1976, "model": "torch_mlp", "seed": 7, "params": {"epochs": 8, "patience": 3}}
    write_spec(spec)
    h = Harness(tmp_path / "home", tmp_path / "pipelines", NAME)
    h.history("1976")
    registry, lake = h.resources["registry"], h.resources["lake"]

    champion = registry.by_alias(NAME, "champion")
    assert champion is not None and champion.family == "torch_mlp"
    curve = registry.client().get_metric_history(champion.run_id, "val_loss")
    assert [m.step for m in curve] == list(range(1, len(curve) + 1)) and len(curve) >= 3
    # The run records the hyper-parameters used: the spec's and the defaults it left alone.
    params = registry.client().get_run(champion.run_id).data.params
    assert (params["epochs"], params["patience"], params["hidden_sizes"]) == ("8", "3", "(64, 32)"), params
    fingerprint = h.metadata("training_dataset")["training_fingerprint"]
    assert lake.exists(NAME, LakeFolder.CHECKPOINTS, fingerprint, "pt"), "the per-epoch checkpoint must reach the lake"

    scored = h.materialize(["raw_batch", "validated_batch", "features", "predictions"], "2010")
    assert scored.success, h.failure_message(scored)
    assert h.metadata("predictions", "2010")["model_version"] == champion.version

    import mlflow

    from mlops_assets.ml.trainers import prepare_inputs

    holdout = h.training_data(TrainingFile.HOLDOUT).head(100)
    inputs = prepare_inputs(holdout, GSS_FEATURES["numeric"], GSS_FEATURES["categorical"])
    served = mlflow.pyfunc.load_model(registry.client().get_model_version_download_uri(NAME, champion.version)).predict(
        inputs
    )
    np.testing.assert_allclose(served, registry.load_model(champion).predict_proba(inputs)[:, 1], rtol=1e-6)

    # The batch explained by integrated gradients, the completeness error kept per row.
    from mlops_assets.ml.attribution import read_attributions

    explained = h.materialize(["attributions"], "2010")
    assert explained.success, h.failure_message(explained)
    info, stored = read_attributions(lake.path(NAME, "attributions", "2010"))
    assert info.method == "integrated_gradients" and info.model_version == champion.version
    assert len(stored) == h.metadata("predictions", "2010")["dagster/row_count"]
    assert np.isfinite(stored["residual"]).all() and info.max_abs_residual == np.abs(stored["residual"]).max()
    assert h.metadata("attributions", "2010")["max_abs_residual"] == info.max_abs_residual
