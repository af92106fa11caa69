"""The MLflow pyfunc of a ``torch_mlp`` model, logged as "models from code".

MLflow records this file instead of pickling a Python object, and the weights travel as a
``state_dict`` loaded with ``weights_only=True``, so serving the model with ``mlflow models
serve`` executes no code from the artifact store beyond this file. The product itself never
loads through here: ``MlflowRegistry.load_model`` reads the weights directly.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class TorchMLPModel(PythonModel):
    """Positive-class probabilities of the registered ``TorchMLPClassifier``."""

    def load_context(self, context: Any) -> None:
        from mlops_assets.ml.torch_mlp import TorchMLPClassifier

        self.model = TorchMLPClassifier.load(context.artifacts["torch_model"])

    # DataFrame in, array out, not Any: MLflow tries to build a schema from any other hint and warns that
    # it cannot; the logged signature (from the training data) is what it enforces.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        return self.model.predict_proba(model_input)[:, 1]


mlflow.models.set_model(TorchMLPModel())
