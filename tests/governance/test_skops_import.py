"""The safe loader imports skops without its default trust list of every scikit-learn estimator.

skops builds that list on import by importing every estimator module (and, through
scikit-learn's array-API shim, torch): seconds of every scoring run. The loader imports skops
with the listing empty, so the types it admits are exactly the product's allow-list, never more.
Each case runs in a fresh interpreter: the first import of skops in a process is what counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.preprocessing import PolynomialFeatures

from mlops_assets.ml.trainers import build_estimator, prepare_inputs

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from resources.registry.errors import UnsafeModelError
from resources.registry.loading import load_skops
from mlops_assets.ml.trainers import SKOPS_TRUSTED_TYPES
outcome = {}
for path in sys.argv[1:]:
    try:
        model = load_skops(open(path, "rb").read(), SKOPS_TRUSTED_TYPES, what=path)
        outcome[path] = type(model).__name__
    except UnsafeModelError as e:
        outcome[path] = "refused: " + str(e)
outcome["torch imported"] = "torch" in sys.modules
outcome["sklearn.gaussian_process imported"] = "sklearn.gaussian_process" in sys.modules
print(json.dumps(outcome))
"""


def _probe(*paths: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, paths)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fitted(family: str) -> object:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=300), "c": rng.choice(["x", "y", "z"], 300)})
    inputs = prepare_inputs(frame, ["a"], ["c"])
    estimator = build_estimator(family, numeric=["a"], categorical=["c"], params={}, seed=0)
    return estimator.fit(inputs, (frame["a"] > 0).astype(int))


def test_the_product_models_load_without_importing_other_estimators_or_torch(tmp_path: Path) -> None:
    paths = []
    for family in ("sklearn_hgb", "sklearn_logreg"):
        (tmp_path / f"{family}.skops").write_bytes(sio.dumps(_fitted(family)))
        paths.append(tmp_path / f"{family}.skops")
    outcome = _probe(*paths)
    assert outcome[str(paths[0])] == "Pipeline"
    assert outcome[str(paths[1])] == "Pipeline"
    assert outcome["torch imported"] is False
    assert outcome["sklearn.gaussian_process imported"] is False


def test_an_estimator_outside_the_allow_list_is_refused_though_skops_trusts_it_by_default(tmp_path: Path) -> None:
    # PolynomialFeatures is in skops' own default list; it is in no model the product trains.
    path = tmp_path / "poly.skops"
    path.write_bytes(sio.dumps(PolynomialFeatures().fit(np.ones((4, 2)))))
    assert "sklearn.preprocessing._polynomial.PolynomialFeatures" not in sio.get_untrusted_types(file=path)
    outcome = _probe(path)
    assert str(outcome[str(path)]).startswith("refused: ")
    assert "sklearn.preprocessing._polynomial.PolynomialFeatures" in str(outcome[str(path)])
