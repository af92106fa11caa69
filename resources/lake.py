"""The data lake: Parquet (and small JSON or binary documents) per asset and partition."""

from __future__ import annotations

import json
import posixpath
import uuid
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

# The Parquet footer key under which ``write_frame`` keeps a frame's tags (a JSON object of strings).
_TAGS_KEY = b"mlops_tags"

if TYPE_CHECKING:
    import pandas as pd
    from fsspec import AbstractFileSystem


class Lake(dg.ConfigurableResource):
    """Files under one fsspec root, laid out as ``<root>/<model>/<asset>/<partition>.<ext>``.

    Every write goes to a temporary name first and is renamed into place, so a failed step
    never leaves a half-written file where a good one was: readers see the old file or the new
    one. On object stores a single PUT already has that property.
    """

    root: str = Field(description="Local folder or fsspec URI (s3://bucket/lake, gs://...).")

    def _fs(self) -> tuple[AbstractFileSystem, str]:
        import fsspec

        fs, _, (path,) = fsspec.get_fs_token_paths(self.root)
        return fs, path.rstrip("/")

    def path(self, model: str, asset: str, partition: str | None = None, ext: str = "parquet") -> str:
        """Where a document lives; checked to stay under the root.

        Raises:
            ValueError: a part would leave the root or name no plain file (``..``, an absolute
                part, a backslash, a NUL, an empty segment); the message shows the parts.
        """
        _, base = self._fs()
        leaf = f"{partition}.{ext}" if partition is not None else f"latest.{ext}"
        return contained(base, f"{model}/{asset}/{leaf}", what=f"lake path for {model}/{asset} partition {partition!r}")

    def uri(self, model: str, asset: str, partition: str | None = None, ext: str = "parquet") -> str:
        fs, _ = self._fs()
        path = self.path(model, asset, partition, ext)
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        return path if protocol == "file" else f"{protocol}://{path}"

    def exists(self, model: str, asset: str, partition: str | None = None, ext: str = "parquet") -> bool:
        fs, _ = self._fs()
        return fs.exists(self.path(model, asset, partition, ext))

    def partitions(self, model: str, asset: str, ext: str = "parquet") -> list[str]:
        """The partitions stored under ``<model>/<asset>/`` with extension ``ext``, sorted; staging
        files (``<name>.<ext>.<hex>.tmp``) are not among them."""
        fs, _ = self._fs()
        folder = self.path(model, asset, "x", ext).rsplit("/", 1)[0]
        if not fs.exists(folder):
            return []
        leaves = (p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False))
        return sorted(leaf[: -len(ext) - 1] for leaf in leaves if leaf.endswith(f".{ext}"))

    def write_bytes(self, model: str, asset: str, data: bytes, partition: str | None = None, ext: str = "bin") -> str:
        fs, _ = self._fs()
        final = self.path(model, asset, partition, ext)
        fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        staging = f"{final}.{uuid.uuid4().hex}.tmp"
        fs.pipe_file(staging, data)
        fs.mv(staging, final)
        return final

    def read_bytes(self, model: str, asset: str, partition: str | None = None, ext: str = "bin") -> bytes:
        fs, _ = self._fs()
        path = self.path(model, asset, partition, ext)
        if not fs.exists(path):
            raise FileNotFoundError(
                f"{model}/{asset}"
                + (f" partition {partition}" if partition else "")
                + f" has no data at {path}; materialize it first"
            )
        return fs.cat_file(path)

    def write_frame(
        self,
        model: str,
        asset: str,
        frame: pd.DataFrame,
        partition: str | None = None,
        *,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Writes ``frame`` as Parquet; ``tags`` go into the same file's footer, so what they say
        about the data (its content version) can never disagree with it, whatever fails when."""
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if tags:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), _TAGS_KEY: json.dumps(tags)})
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        return self.write_bytes(model, asset, buffer.getvalue(), partition, "parquet")

    def frame_tags(self, model: str, asset: str, partition: str | None = None) -> dict[str, str]:
        """The tags a frame was written with (none: an empty dict); reads the footer only."""
        import pyarrow.parquet as pq

        fs, _ = self._fs()
        path = self.path(model, asset, partition, "parquet")
        if not fs.exists(path):
            raise FileNotFoundError(
                f"{model}/{asset} partition {partition} has no data at {path}; materialize it first"
            )
        with fs.open(path, "rb") as file:
            metadata = pq.read_schema(file).metadata or {}
        return json.loads(metadata[_TAGS_KEY]) if _TAGS_KEY in metadata else {}

    def read_frame(self, model: str, asset: str, partition: str | None = None) -> pd.DataFrame:
        import io

        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.read_bytes(model, asset, partition, "parquet")))

    def write_json(self, model: str, asset: str, document: Any, partition: str | None = None) -> str:
        data = json.dumps(document, indent=1, sort_keys=True, default=str).encode()
        return self.write_bytes(model, asset, data, partition, "json")

    def read_json(self, model: str, asset: str, partition: str | None = None) -> Any:
        return json.loads(self.read_bytes(model, asset, partition, "json"))


def contained(base: str, relative: str, *, what: str) -> str:
    """``base/relative``, refused unless every segment of ``relative`` is a plain name (not empty,
    not hidden, no ``..``, backslash, NUL or drive colon) and the
    result stays under ``base``: the same rule for local folders and fsspec URIs (``s3://``
    paths arrive here without their protocol).

    Raises:
        ValueError: names ``what`` and the offending part.
    """
    segments = relative.split("/")
    for segment in segments:
        if not segment or segment.startswith(".") or "\\" in segment or "\x00" in segment or ":" in segment:
            raise ValueError(f"{what}: {relative!r} has a segment {segment!r} that is not a plain file name")
    joined = posixpath.normpath(f"{base}/{relative}")
    root = posixpath.normpath(base)
    if not joined.startswith(root.rstrip("/") + "/"):
        raise ValueError(f"{what}: {relative!r} leaves the root {base}")
    return joined
