"""The model cache: a version's files fetched once, kept on disk by version, checked against the
digest recorded at registration before every load, and memoised in the process.

On the governed pipeline's champion (a scikit-learn pipeline in a real MLflow store). The swapped
model used below holds only allow-listed types: the safe loader alone would load it, so what
refuses it is the digest.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from mlops_assets.ml.trainers import SKOPS_TRUSTED_TYPES, prepare_inputs
from resources.registry import CHAMPION, TAG_ARTIFACT_DIGEST, MlflowRegistry, RegisteredModel, UnsafeModelError
from resources.registry.loading import LoadedModels, load_skops, tree_digest
from tests.conftest import GSS_FEATURES
from tests.governance.conftest import NAME, Governed, failure_text
from tests.governance.faults import Fault, FaultyRegistry, count, faulty_copy

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def faults() -> Iterator[list[Fault]]:
    FaultyRegistry.FAULTS.clear()
    yield FaultyRegistry.FAULTS
    FaultyRegistry.FAULTS.clear()


@pytest.fixture
def champion(governed: Governed) -> Iterator[RegisteredModel]:
    """The champion with empty caches, emptied again afterwards."""
    governed.registry.evict(NAME)
    yield governed.registry.by_alias(NAME, CHAMPION)
    governed.registry.evict(NAME)


def store_folder(registry: MlflowRegistry, model: RegisteredModel) -> Path:
    return Path(registry.client().get_model_version_download_uri(NAME, model.version).removeprefix("file://"))


def cache_entry(registry: MlflowRegistry, model: RegisteredModel) -> Path:
    return Path(registry.model_cache_dir) / NAME / model.version


def inputs_2010(governed: Governed) -> object:
    frame = governed.lake.read_frame(NAME, "features", "2010")
    return prepare_inputs(frame, GSS_FEATURES["numeric"], GSS_FEATURES["categorical"])


def swapped_model() -> bytes:
    """A different model of only allow-listed types: a skops archive the safe loader accepts."""
    data = sio.dumps(LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1]))
    assert isinstance(load_skops(data, SKOPS_TRUSTED_TYPES, what="control"), LogisticRegression)
    return data


def test_a_version_whose_stored_files_changed_after_registration_is_refused(
    governed: Governed, champion: RegisteredModel, tmp_path: Path
) -> None:
    registry = governed.registry
    folder = store_folder(registry, champion)
    shutil.copytree(folder, tmp_path / "backup")
    (folder / "model.skops").write_bytes(swapped_model())
    try:
        with pytest.raises(UnsafeModelError, match="do not match the digest recorded when the version was registered"):
            registry.load_model(champion)
        before = governed.lake.read_bytes(NAME, "predictions", "2010", "parquet")
        scored = governed.harness.materialize(["predictions"], "2010")
        assert not scored.success
        refused = f"{NAME} version {champion.version}: the registered artifact's files do not match"
        assert refused in failure_text(scored)
        assert governed.lake.read_bytes(NAME, "predictions", "2010", "parquet") == before
        assert not cache_entry(registry, champion).exists(), "a refused artifact must not enter the cache"
    finally:
        shutil.rmtree(folder)
        shutil.copytree(tmp_path / "backup", folder)


def _replace_model(entry: Path) -> None:
    (entry / "model.skops").write_bytes(swapped_model())


def _add_a_file(entry: Path) -> None:
    (entry / "extra.pkl").write_bytes(b"\x80\x04planted")


def _plant_a_symlink(entry: Path) -> None:
    (entry / "model.skops").unlink()
    (entry / "model.skops").symlink_to("/etc/hostname")


def _entry_as_a_symlink(entry: Path) -> None:
    decoy = entry.parent / ".decoy"
    decoy.mkdir()
    (decoy / "model.skops").write_bytes(swapped_model())
    shutil.rmtree(entry)
    entry.symlink_to(decoy, target_is_directory=True)


CACHE_TAMPERINGS: dict[str, Callable[[Path], None]] = {
    "model.skops replaced by another allow-listed model": _replace_model,
    "a file added": _add_a_file,
    "model.skops replaced by a symlink": _plant_a_symlink,
    "the entry replaced by a symlink to another model": _entry_as_a_symlink,
}


@pytest.mark.parametrize("tamper", list(CACHE_TAMPERINGS))
def test_a_tampered_cache_entry_is_refused_and_fetched_again(
    tamper: str, governed: Governed, champion: RegisteredModel
) -> None:
    registry = governed.registry
    inputs = inputs_2010(governed)
    reference = registry.load_model(champion).predict_proba(inputs)
    entry = cache_entry(registry, champion)
    stored = (store_folder(registry, champion) / "model.skops").read_bytes()
    assert (entry / "model.skops").read_bytes() == stored, "the first load fills the cache"

    CACHE_TAMPERINGS[tamper](entry)
    registry.evict(NAME, champion.version, on_disk=False)
    again = registry.load_model(champion)

    assert not isinstance(again, LogisticRegression)
    np.testing.assert_array_equal(again.predict_proba(inputs), reference)
    assert not entry.is_symlink() and not (entry / "model.skops").is_symlink()
    assert (entry / "model.skops").read_bytes() == stored
    assert sorted(p.name for p in entry.iterdir()) == sorted(p.name for p in store_folder(registry, champion).iterdir())


def test_a_fresh_process_loads_a_cached_version_without_fetching_it(
    governed: Governed, champion: RegisteredModel, tmp_path: Path
) -> None:
    registry = governed.registry
    governed.lake.read_frame(NAME, "features", "2010").to_parquet(tmp_path / "features.parquet")
    reference = registry.load_model(champion).predict_proba(inputs_2010(governed))[:, 1]
    # In the new process (a run worker) every fetch of a version's files fails: it must need none.
    script = textwrap.dedent(f"""
        import numpy as np, pandas as pd
        from mlops_assets.ml.trainers import prepare_inputs
        from resources.registry import CHAMPION
        from tests.conftest import GSS_FEATURES
        from tests.governance.faults import Fault, FaultyRegistry, outage
        fetches = Fault("get_model_version_download_uri", outage)
        FaultyRegistry.FAULTS.append(fetches)
        r = FaultyRegistry(
            tracking_uri={registry.tracking_uri!r},
            artifact_root={registry.artifact_root!r},
            model_cache_dir={registry.model_cache_dir!r},
        )
        model = r.load_model(r.resolve({NAME!r}, CHAMPION))
        frame = pd.read_parquet({str(tmp_path / "features.parquet")!r})
        inputs = prepare_inputs(frame, GSS_FEATURES["numeric"], GSS_FEATURES["categorical"])
        scores = model.predict_proba(inputs)[:, 1]
        np.save({str(tmp_path / "scores.npy")!r}, scores)
        print(fetches.hits)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "0"
    np.testing.assert_array_equal(np.load(tmp_path / "scores.npy"), reference)


def test_concurrent_loads_of_one_version_fetch_and_load_it_once(
    governed: Governed, champion: RegisteredModel, faults: list[Fault]
) -> None:
    fetches = Fault("get_model_version_download_uri", count)
    faults.append(fetches)
    registry = faulty_copy(governed.registry)
    start = threading.Barrier(8)
    loaded: list[object] = []

    def load() -> None:
        start.wait(timeout=60)
        loaded.append(registry.load_version(champion))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(loaded) == 8
    assert len({id(m) for m in loaded}) == 1, "every thread gets the one loaded object"
    assert fetches.hits == 1
    registry.load_version(champion)
    assert fetches.hits == 1, "a memoised version is not fetched again"


def test_a_version_registered_before_digests_still_loads(
    governed: Governed, champion: RegisteredModel, faults: list[Fault]
) -> None:
    client = governed.registry.client()
    inputs = inputs_2010(governed)
    reference = governed.registry.load_model(champion).predict_proba(inputs)
    governed.registry.evict(NAME)
    client.delete_model_version_tag(NAME, champion.version, TAG_ARTIFACT_DIGEST)
    fetches = Fault("get_model_version_download_uri", count)
    faults.append(fetches)
    try:
        legacy = governed.registry.by_alias(NAME, CHAMPION)
        assert legacy.artifact_digest is None
        registry = faulty_copy(governed.registry)
        np.testing.assert_array_equal(registry.load_model(legacy).predict_proba(inputs), reference)
        assert not cache_entry(registry, legacy).exists(), "nothing can check a cached copy of it"
        registry.load_model(legacy)
        assert fetches.hits == 1, "memoised in the process"
    finally:
        client.set_model_version_tag(NAME, champion.version, TAG_ARTIFACT_DIGEST, champion.artifact_digest)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({"x": b"1", "y": b"2"}, {"y": b"2", "x": b"1"}, True),
        ({"x": b"1"}, {"x": b"2"}, False),
        ({"x": b"1"}, {"z": b"1"}, False),
        ({"x": b"1"}, {"x": b"1", "y": b""}, False),
        ({"a/b": b"1"}, {"a": b"", "b": b"1"}, False),
    ],
)
def test_the_digest_covers_every_path_and_byte(a: dict, b: dict, same: bool) -> None:
    assert (tree_digest(a) == tree_digest(b)) is same


def test_the_memo_keeps_the_most_recently_used_few() -> None:
    memo = LoadedModels(capacity=2)
    loads: list[str] = []

    def loader(key: str) -> Callable[[], str]:
        return lambda: loads.append(key) or key

    for key in ("a", "b", "a", "c", "a", "b"):
        assert memo.get_or_load(key, loader(key)) == key
    assert loads == ["a", "b", "c", "b"]
    assert memo.keys() == ["a", "b"]


def test_a_failed_load_is_not_memoised() -> None:
    memo = LoadedModels(capacity=2)

    def broken() -> str:
        raise UnsafeModelError("refused")

    with pytest.raises(UnsafeModelError):
        memo.get_or_load("k", broken)
    assert memo.get_or_load("k", lambda: "ok") == "ok"
