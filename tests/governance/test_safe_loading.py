"""Planted model artifacts never run code on any load path of the product.

The champion's stored artifact is replaced by a skops archive holding a type whose construction
writes a marker file (and an MLmodel that lists that type as trusted), or by a pickle whose
``__reduce__`` writes a marker file. Control tests show both payloads do run when loaded the
unsafe way; the product's paths (``MlflowRegistry.load_model``, the predictions asset, the
evaluation asset) refuse them with an error naming the model and version, and no marker appears.

The attacker here also rewrites the version's artifact digest to match the planted files, so
what refuses them is the safe loader itself, not the digest check (``test_model_cache.py``
covers that); the model caches are emptied first, so every path reads the store.
"""

from __future__ import annotations

import pickle
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import skops.io as sio
import yaml

from resources.registry import CHAMPION, TAG_ARTIFACT_DIGEST, UnsafeModelError
from resources.registry.loading import read_tree, tree_digest
from tests.governance.conftest import NAME, Governed, failure_text

PLANTED = f"{__name__}.Planted"


class Planted:
    """A type whose construction writes a marker file: the payload of a planted skops archive."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).write_text("code ran")
        self.__dict__.update(state)


class Boom:
    """Pickles to a call that writes a marker file when unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (Path(self.marker), "code ran"))


def test_the_payloads_are_live_when_loaded_unsafely(tmp_path: Path) -> None:
    archive = tmp_path / "planted.skops"
    sio.dump({"model": Planted(str(tmp_path / "skops_ran"))}, archive)
    assert PLANTED in sio.get_untrusted_types(file=archive)
    sio.load(archive, trusted=[PLANTED])
    assert (tmp_path / "skops_ran").exists()
    pickle.loads(pickle.dumps(Boom(str(tmp_path / "pickle_ran"))))
    assert (tmp_path / "pickle_ran").exists()


def _untrusted_skops(folder: Path, marker: Path) -> None:
    sio.dump({"model": Planted(str(marker))}, folder / "model.skops")
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    mlmodel["flavors"]["sklearn"]["skops_trusted_types"].append(PLANTED)
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))


def _pickle_flavor(folder: Path) -> None:
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    mlmodel["flavors"]["sklearn"].update({"serialization_format": "cloudpickle", "pickled_model": "model.pkl"})
    mlmodel["flavors"]["python_function"]["model_path"] = "model.pkl"
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))


def _pickle_as_skops(folder: Path, marker: Path) -> None:
    payload = pickle.dumps(Boom(str(marker)))
    (folder / "model.skops").write_bytes(payload)
    (folder / "model.pkl").write_bytes(payload)
    _pickle_flavor(folder)


def _pickle_only(folder: Path, marker: Path) -> None:
    (folder / "model.skops").unlink()
    (folder / "model.pkl").write_bytes(pickle.dumps(Boom(str(marker))))
    _pickle_flavor(folder)


TAMPERINGS: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "skops archive with an untrusted type, listed as trusted in MLmodel": (_untrusted_skops, "outside the allow-list"),
    "pickle renamed to model.skops, MLmodel says cloudpickle": (_pickle_as_skops, "is not a skops archive (a pickle)"),
    "only a pickle, MLmodel says cloudpickle": (_pickle_only, "no model.skops in the registered artifact"),
}


@pytest.fixture
def tampered_champion(governed: Governed, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """The champion's artifact folder tampered with as the test's parameter says; restored afterwards."""
    tamper, message = TAMPERINGS[request.param]
    champion = governed.registry.by_alias(NAME, CHAMPION)
    folder = Path(
        governed.registry.client().get_model_version_download_uri(NAME, champion.version).removeprefix("file://")
    )
    backup = tmp_path / "backup"
    shutil.copytree(folder, backup)
    marker = tmp_path / "code_ran"
    tamper(folder, marker)
    client = governed.registry.client()
    client.set_model_version_tag(NAME, champion.version, TAG_ARTIFACT_DIGEST, tree_digest(read_tree(folder)))
    governed.registry.evict(NAME)
    try:
        yield marker, message
    finally:
        shutil.rmtree(folder)
        shutil.copytree(backup, folder)
        client.set_model_version_tag(NAME, champion.version, TAG_ARTIFACT_DIGEST, champion.artifact_digest)
        governed.registry.evict(NAME)


@pytest.mark.parametrize("tampered_champion", list(TAMPERINGS), indirect=True)
def test_no_load_path_runs_a_planted_artifact(governed: Governed, tampered_champion: tuple[Path, str]) -> None:
    marker, message = tampered_champion
    h, registry = governed.harness, governed.registry
    champion = registry.by_alias(NAME, CHAMPION)
    what = f"{NAME} version {champion.version}"

    with pytest.raises(UnsafeModelError, match=re.escape(message)) as raised:
        registry.load_model(champion)
    assert str(raised.value).startswith(what)
    assert not marker.exists()

    before = governed.lake.read_bytes(NAME, "predictions", "2010", "parquet")
    scored = h.materialize(["predictions"], "2010")
    assert not scored.success
    assert what in failure_text(scored) and message in failure_text(scored)
    assert governed.lake.read_bytes(NAME, "predictions", "2010", "parquet") == before
    assert not marker.exists()

    evaluated = h.materialize(["evaluation"])
    assert not evaluated.success
    assert what in failure_text(evaluated) and message in failure_text(evaluated)
    assert not marker.exists()


def test_the_restored_champion_loads_again(governed: Governed) -> None:
    champion = governed.registry.by_alias(NAME, CHAMPION)
    assert hasattr(governed.registry.load_model(champion), "predict_proba")
