"""Safe loading of registered models, with a verified on-disk cache and an in-process memo.

Every load goes through one path:

1. the in-process memo, keyed by store, name, version and digest (a long-lived process such as
   the server loads a version once);
2. else the version's files from the disk cache (``<cache>/<name>/<version>/``), read into memory
   and checked against the digest recorded on the version when it was registered;
3. else (no entry, or one that fails the check: tampered or stale) the files fetched from the
   registry's artifact store, checked against the same digest, and then put into the cache.

Only files that passed the check are handed to a loader, from memory, so nothing can swap them
between the check and the load. The loaders never unpickle: scikit-learn models through skops
with our allow-list, torch models as a ``state_dict`` with ``weights_only=True``.

A version registered before digests existed has nothing to check a cached copy against: it is
fetched from the registry whenever it is not memoised, and never written to the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import dagster as dg

from resources.registry.errors import ArtifactIntegrityError, UnsafeModelError
from resources.registry.locks import file_lock
from resources.registry.versions import RegisteredModel

# Serializes the first import of skops (the patched listing must not leak into another thread).
_IMPORT_LOCK = threading.Lock()
# Fetches a version's model folder into the given directory and returns where it landed.
Fetch = Callable[[Path], Path]

_ZIP_MAGIC = b"PK\x03\x04"
_TORCH_FOLDER = "artifacts/torch_model/"
# Champion and challenger, plus the versions they replace while a server swaps them in.
MEMO_ENTRIES = 4
# Cache entries kept per model; older ones are fetched again if ever needed.
CACHE_ENTRIES_PER_MODEL = 8


def tree_digest(files: Mapping[str, bytes]) -> str:
    """One digest over a folder's files: each relative path with the SHA-256 of its bytes."""
    total = hashlib.sha256()
    for path in sorted(files):
        total.update(path.encode())
        total.update(b"\0")
        total.update(hashlib.sha256(files[path]).digest())
    return f"sha256:{total.hexdigest()}"


def read_tree(folder: Path) -> dict[str, bytes]:
    """Every regular file under ``folder`` by its relative POSIX path.

    Raises:
        ValueError: a symlink or another non-regular file, which no artifact MLflow writes holds.
    """
    files: dict[str, bytes] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            raise ValueError(f"{path} is not a regular file")
        if path.is_file():
            files[path.relative_to(folder).as_posix()] = path.read_bytes()
    return files


def import_skops_io() -> ModuleType:
    """``skops.io``, imported without its default trust list of every scikit-learn estimator.

    On import, skops (0.16) builds the types it trusts by default from
    ``sklearn.utils.all_estimators()``, which imports every estimator module of scikit-learn and,
    through ``sklearn.externals.array_api_compat.torch``, torch: about 5 s of a scoring run spent
    on classes the model does not hold. The product never relies on that default: every load
    passes our allow-list (``SKOPS_TRUSTED_TYPES``). So when this is the first import of skops in
    the process, ``all_estimators`` answers nothing while skops imports, and skops then trusts
    by default no scikit-learn estimator at all: only the allow-list's, which can only narrow
    what loads. Imported earlier by someone else (a training process, a test), skops keeps its
    own default, as before.
    """
    import sklearn.utils

    with _IMPORT_LOCK:
        if "skops.io" in sys.modules:
            return sys.modules["skops.io"]
        listing = sklearn.utils.all_estimators
        sklearn.utils.all_estimators = _no_estimators
        try:
            import skops.io
        finally:
            sklearn.utils.all_estimators = listing
    return skops.io


def _no_estimators(type_filter: object = None) -> list[tuple[str, type]]:
    return []


def load_skops(data: bytes | None, trusted: list[str], *, what: str) -> Any:
    """skops.loads with ``trusted``, after checking the bytes are a skops archive at all.

    A pickle renamed to model.skops never reaches a parser that could run it; an archive with a
    type outside ``trusted`` is refused before skops imports or constructs anything.
    """
    sio = import_skops_io()
    from skops.io.exceptions import UntrustedTypesFoundException

    if data is None:
        raise UnsafeModelError(f"{what}: no model.skops in the registered artifact; refusing any other format")
    if data[:4] != _ZIP_MAGIC:
        kind = "a pickle" if data[:1] == b"\x80" else f"starts with {data[:4]!r}"
        raise UnsafeModelError(f"{what}: model.skops is not a skops archive ({kind}); refusing to load it")
    try:
        return sio.loads(data, trusted=trusted)
    except UntrustedTypesFoundException as e:
        raise UnsafeModelError(
            f"{what}: model.skops holds types outside the allow-list ({e}); refusing to load it. "
            "The list in the artifact's MLmodel file is ignored on purpose"
        ) from e


def construct(files: Mapping[str, bytes], family: str, *, what: str) -> Any:
    """The fitted estimator held by a version's (already verified) files."""
    if family == "torch_mlp":
        from mlops_assets.ml.torch_mlp import TorchMLPClassifier

        weights = {p[len(_TORCH_FOLDER) :]: data for p, data in files.items() if p.startswith(_TORCH_FOLDER)}
        if not weights:
            raise UnsafeModelError(f"{what}: no {_TORCH_FOLDER} in the registered artifact")
        # The loader reads a folder; a private copy of the verified bytes is what it reads.
        with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
            for relative, data in weights.items():
                target = Path(tmp, relative)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            return TorchMLPClassifier.load(tmp)
    from mlops_assets.ml.trainers import SKOPS_TRUSTED_TYPES

    return load_skops(files.get("model.skops"), SKOPS_TRUSTED_TYPES, what=what)


class LoadedModels:
    """A small LRU of loaded models, shared by every thread of the process.

    Concurrent callers asking for the same key wait for one load instead of each loading.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._loading: dict[Hashable, threading.Lock] = {}

    def get_or_load(self, key: Hashable, load: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._entries:
                    return self._entries[key]
            try:
                value = load()
                with self._lock:
                    self._entries[key] = value
                    while len(self._entries) > self._capacity:
                        self._entries.popitem(last=False)
                return value
            finally:
                with self._lock:
                    self._loading.pop(key, None)

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._entries)

    def drop(self, matches: Callable[[Hashable], bool]) -> None:
        with self._lock:
            for key in [k for k in self._entries if matches(k)]:
                del self._entries[key]


LOADED = LoadedModels(MEMO_ENTRIES)


class ModelCache:
    """Verified copies of versions' model folders on local disk, one folder per version."""

    def __init__(self, root: Path, *, lock_timeout_s: float = 300.0) -> None:
        self.root = root
        self.lock_timeout_s = lock_timeout_s

    def entry(self, name: str, version: str) -> Path:
        for part, value in (("model name", name), ("version", version)):
            if not value or value in (".", "..") or "/" in value or "\\" in value or value.startswith("."):
                raise ValueError(f"{part} {value!r} cannot name a cache folder")
        return self.root / name / version

    def read(self, name: str, version: str, digest: str, *, log: Callable[..., None]) -> dict[str, bytes] | None:
        """The entry's files if they match ``digest``; None when there is no entry or it does not match."""
        entry = self.entry(name, version)
        if not entry.is_dir():
            return None
        try:
            files = read_tree(entry)
        except (OSError, ValueError) as e:
            log("model cache entry %s is unreadable (%s); fetching version %s of %s again", entry, e, version, name)
            return None
        found = tree_digest(files)
        if found != digest:
            log(
                "model cache entry %s does not match the digest recorded at registration (%s, found %s): "
                "tampered with or left from another registry; fetching version %s of %s again",
                entry,
                digest,
                found,
                version,
                name,
            )
            return None
        with contextlib.suppress(OSError):
            # Marks the entry as used, for pruning.
            os.utime(entry)
        return files

    def fill(self, name: str, version: str, digest: str, fetch: Fetch, *, what: str) -> dict[str, bytes]:
        """Fetches the version, checks it against ``digest`` and makes it the entry (replacing a
        bad one); one process per model at a time, so concurrent runs fetch it once."""
        entry = self.entry(name, version)
        folder = entry.parent
        with file_lock(folder / ".lock", timeout_s=self.lock_timeout_s, what=f"model cache lock of {name}"):
            # Another process may have filled it while this one waited.
            ready = self.read(name, version, digest, log=lambda *_: None)
            if ready is not None:
                return ready
            incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=folder))
            try:
                fetched = fetch(incoming)
                files = read_tree(fetched)
                verify(files, digest, what=what)
                if entry.exists() or entry.is_symlink():
                    stale = folder / f".stale-{uuid.uuid4().hex}"
                    entry.rename(stale)
                    if stale.is_symlink():
                        # A planted symlink is removed itself, never what it points at.
                        stale.unlink()
                    else:
                        shutil.rmtree(stale)
                fetched.rename(entry)
            finally:
                shutil.rmtree(incoming, ignore_errors=True)
            self._prune(folder, keep=entry)
        return files

    def evict(self, name: str, version: str | None = None) -> None:
        entry = self.entry(name, version or "0")
        shutil.rmtree(entry if version else entry.parent, ignore_errors=True)

    def _prune(self, folder: Path, *, keep: Path) -> None:
        entries = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[CACHE_ENTRIES_PER_MODEL:]:
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)


def verify(files: Mapping[str, bytes], digest: str, *, what: str) -> None:
    """Raises ArtifactIntegrityError unless ``files`` are the ones registered with ``digest``."""
    found = tree_digest(files)
    if found != digest:
        raise ArtifactIntegrityError(
            f"{what}: the registered artifact's files do not match the digest recorded when the version "
            f"was registered ({digest}, found {found}); refusing to load it"
        )


def fetch_files(fetch: Fetch, digest: str | None, *, what: str) -> dict[str, bytes]:
    """The version's files fetched into a temporary folder (no cache), checked when a digest exists."""
    with tempfile.TemporaryDirectory(prefix="mlops-fetch-") as tmp:
        files = read_tree(fetch(Path(tmp)))
    if digest is not None:
        verify(files, digest, what=what)
    return files


def load_version(model: RegisteredModel, *, store: str, cache: ModelCache | None, fetch: Fetch) -> Any:
    """The fitted estimator of ``model``: memoised, else from the verified cache, else fetched.

    The object is shared by every caller in the process: use it, never change it.
    """
    what = f"{model.name} version {model.version}"
    digest = model.artifact_digest
    log = dg.get_dagster_logger().warning

    def load() -> Any:
        if digest is None:
            dg.get_dagster_logger().info(
                "%s has no recorded artifact digest (registered before digests existed): fetched from the "
                "registry, not cached on disk",
                what,
            )
            files = fetch_files(fetch, None, what=what)
        elif cache is None:
            files = fetch_files(fetch, digest, what=what)
        else:
            files = cache.read(model.name, model.version, digest, log=log)
            if files is None:
                files = cache.fill(model.name, model.version, digest, fetch, what=what)
        return construct(files, model.family, what=what)

    return LOADED.get_or_load((store, model.name, model.version, digest), load)
