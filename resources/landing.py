"""The landing zone: where new batch files arrive, one folder per model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

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


class LandingZone(dg.ConfigurableResource):
    """``<root>/<model>/<batch>.parquet`` (or ``.csv``): one file per batch, named by its batch value."""

    root: str = Field(description="Folder new batch files are dropped into, one subfolder per model.")

    def folder(self, model: str) -> Path:
        return Path(self.root) / model

    def files(self, model: str) -> list[LandedFile]:
        """The landed files, oldest first. One directory listing: cheap enough for every tick."""
        folder = self.folder(model)
        if not folder.is_dir():
            return []
        found = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file() and entry.name.endswith(LANDING_SUFFIXES) and not entry.name.startswith("."):
                    stat = entry.stat()
                    batch = entry.name.rsplit(".", 1)[0]
                    found.append(LandedFile(entry.path, batch, stat.st_size, stat.st_mtime))
        return sorted(found, key=lambda f: (f.mtime, f.path))

    def file_for(self, model: str, batch: str) -> str | None:
        for suffix in LANDING_SUFFIXES:
            path = self.folder(model) / f"{batch}{suffix}"
            if path.is_file():
                return str(path)
        return None
