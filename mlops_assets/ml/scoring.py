"""Scoring a batch with a loaded model, with its native thread pools sized to the idle CPUs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_assets.ml.cpus import idle_cpus

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def positive_scores(model: Any, inputs: pd.DataFrame, *, threads: int | None = None) -> np.ndarray:
    """P(y=1) for every row of ``inputs`` (the model's input frame, see ``prepare_inputs``).

    Args:
        threads: OpenMP/BLAS threads while predicting; default: the idle CPUs of this process's
            budget, so two runs on two cores do not each start two spinning threads.
    """
    import numpy as np
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads or idle_cpus()):
        return np.asarray(model.predict_proba(inputs))[:, 1]
