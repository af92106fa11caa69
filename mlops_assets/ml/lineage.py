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
    """A hash of the ML logic's source: every Python file under this package's ``ml`` folder, subpackages included.

    Changing how models are trained, scored or checked for drift changes it; editing a README or a
    sensor does not.
    """
    return source_digest(_ML_SOURCES)


def source_digest(root: Path) -> str:
    """A hash of every ``*.py`` file under ``root`` (recursively), with its path relative to ``root``."""
    digest = hashlib.sha256()
    for source in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        digest.update(source.relative_to(root).as_posix().encode())
        digest.update(b"\0")
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
