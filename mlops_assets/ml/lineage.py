"""Fingerprints that decide whether work is new: the code version and the training fingerprint."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from pathlib import Path

from mlops_assets.spec import PipelineSpec

_ML_SOURCES = Path(__file__).parent


@functools.cache
def code_version() -> str:
    """A hash of the ML logic's source (this package's ``ml`` modules).

    Changing how models are trained or scored changes it; editing a README or a sensor does not.
    """
    digest = hashlib.sha256()
    for source in sorted(_ML_SOURCES.glob("*.py")):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


def training_fingerprint(spec: PipelineSpec, batch_fingerprints: Mapping[str, str]) -> str:
    """Same batches, same data, same spec training policy and same code => same fingerprint."""
    digest = hashlib.sha256()
    for batch, fingerprint in sorted(batch_fingerprints.items()):
        digest.update(f"{batch}={fingerprint}\n".encode())
    digest.update(spec.model_dump_json(include={"label", "features", "sensitive_features", "training"}).encode())
    digest.update(code_version().encode())
    return digest.hexdigest()[:16]
