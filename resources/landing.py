"""The landing zone: where new batch files arrive, one folder per model.

Whoever can drop a file here must not be able to make the pipeline read anything else, so only
regular files directly in the model's folder, named ``<batch>.parquet`` or ``<batch>.csv`` with a
batch name of the one grammar (``mlops_assets.batches``), are landed files. Symbolic links,
directories, FIFOs, names that are not UTF-8 and names outside the grammar are refused, each with
a reason the landing sensor shows and alerts on; they never stop the other files.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from pydantic import Field

from mlops_assets.batches import batch_name_problem, check_batch_name
from mlops_assets.ml.data import LANDING_SUFFIXES


@dataclass(frozen=True)
class LandedFile:
    """A file in a model's landing folder; ``batch`` is its name without the suffix."""

    path: str
    batch: str
    size: int
    mtime: float

    @property
    def identity(self) -> str:
        """Changes when the file is replaced or still being written."""
        return f"{Path(self.path).name}:{self.size}:{int(self.mtime * 1000)}"


@dataclass(frozen=True)
class RefusedFile:
    """An entry of the landing folder that is not ingested, and why.

    ``name`` is printable ASCII whatever the entry was called (a name that is not UTF-8 shows as
    its bytes), so it can go into a skip message, a cursor and an alert as it is.
    """

    name: str
    reason: str
    size: int = 0
    mtime: float = 0.0

    @property
    def identity(self) -> str:
        """Reported once per version of the entry, like a landed file is ingested once."""
        return f"{self.name}:{self.size}:{int(self.mtime * 1000)}"

    def describe(self) -> str:
        return f"{self.name} ({self.reason})"


@dataclass(frozen=True)
class LandingScan:
    files: list[LandedFile] = field(default_factory=list)
    refused: list[RefusedFile] = field(default_factory=list)


def shown_name(name: str) -> str:
    """A file name as printable ASCII: ``repr`` of its bytes when it is not UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.scandir maps undecodable bytes to lone surrogates
        return repr(os.fsencode(name))
    return name if name.isascii() and name.isprintable() else ascii(name)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device file"


def classify(name: str, mode: int) -> str | None:
    """Why an entry named ``name`` (lstat mode ``mode``) is refused, or None when it is a batch file."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "the file name is not valid UTF-8"
    if not stat.S_ISREG(mode):
        return f"it is {_kind(mode)}, not a regular file; only regular files are read"
    problem = batch_name_problem(name.rsplit(".", 1)[0])
    if problem is not None:
        return f"the batch name {name.rsplit('.', 1)[0]!r} {problem}"
    return None


class LandingZone(dg.ConfigurableResource):
    """``<root>/<model>/<batch>.parquet`` (or ``.csv``): one file per batch, named by its batch value."""

    root: str = Field(description="Folder new batch files are dropped into, one subfolder per model.")

    def folder(self, model: str) -> Path:
        return Path(self.root) / model

    def scan(self, model: str, *, max_bytes: int | None = None) -> LandingScan:
        """Landed files (oldest first) and refused entries. One directory listing and one lstat
        per candidate: cheap enough for every tick. A file over ``max_bytes`` (the spec's
        ``limits.max_file_bytes``) is refused here, before any run reads it."""
        folder = self.folder(model)
        if not folder.is_dir():
            return LandingScan()
        found, refused = [], []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.name.endswith(LANDING_SUFFIXES):
                    continue  # hidden (a writer's staging file) or not meant as a batch
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # gone between the listing and the lstat
                reason = classify(entry.name, info.st_mode)
                if reason is None and max_bytes is not None and info.st_size > max_bytes:
                    reason = f"it is {info.st_size:,} bytes, over limits.max_file_bytes = {max_bytes:,}"
                if reason is not None:
                    refused.append(RefusedFile(shown_name(entry.name), reason, info.st_size, info.st_mtime))
                    continue
                batch = entry.name.rsplit(".", 1)[0]
                found.append(LandedFile(entry.path, batch, info.st_size, info.st_mtime))
        return LandingScan(sorted(found, key=lambda f: (f.mtime, f.path)), sorted(refused, key=lambda r: r.name))

    def files(self, model: str) -> list[LandedFile]:
        """The landed files, oldest first."""
        return self.scan(model).files

    def file_for(self, model: str, batch: str) -> str | None:
        """The landed file of ``batch``, if there is one.

        Raises:
            BatchNameError: ``batch`` is no batch name (a partition key added from outside).
            ValueError: the entry named after the batch is not a regular file (a symlink, ...).
        """
        check_batch_name(batch, where=f"{model}: partition key")
        for suffix in LANDING_SUFFIXES:
            path = self.folder(model) / f"{batch}{suffix}"
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            reason = classify(path.name, info.st_mode)
            if reason is not None:
                raise ValueError(f"landing file {path}: refused: {reason}")
            return str(path)
        return None
