"""The reads every scoring run makes, straight from a local SQLite store, without importing MLflow.

A scoring run asks the registry three things: which version an alias points at, a version's
tags, and a small artifact of its training run (the drift reference, the attribution baseline).
Importing MLflow to ask them costs seconds of every run; the answers are three indexed rows of
the store MLflow keeps. So on the local profile (``sqlite:///`` tracking URI, artifacts in a
local folder) they are read here, read-only, from the tables MLflow's SQL store defines
(``registered_model_aliases``, ``model_versions``, ``model_version_tags``, ``runs``), with the
same answers (tests/governance/test_store_reads.py compares them with ``MlflowClient``'s on one
store). Everything else (writes, the compare-and-set of the champion, a tracking server, object
storage) goes through MLflow as before; so does any read here that the store's schema does not
answer (a newer MLflow that changed it), after one warning.

Measured saving: ``python -X importtime -c "import mlflow.tracking"`` reports 1.87 s cumulative
(mlflow 3.17.2, 2-core machine shared with 3 other sessions, load average 1.19), which every
scoring run on a warm model cache no longer pays; the reads themselves are three indexed SQLite
queries (milliseconds).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlparse

import dagster as dg

from mlops_assets import contract
from resources.registry.versions import RegisteredModel

# MLflow's SQL store marks a deleted version with this stage before removing it for good.
_DELETED = "Deleted_Internal"
# MLflow 3's workspaces: a store without them has one, this one.
_WORKSPACE = "default"


# What a read returns where it does not answer (another store, another schema): ask MLflow.
UNANSWERED: Final = object()


class SchemaMismatch(Exception):
    """The store's tables are not the ones these reads know; the caller asks MLflow instead."""


def sqlite_database(tracking_uri: str) -> Path | None:
    """The SQLite file of a ``sqlite:///`` tracking URI when it exists; None otherwise."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = unquote(tracking_uri[len("sqlite:///") :].split("?", 1)[0])
    if not database or database == ":memory:":
        return None
    path = Path(database).absolute()
    return path if path.is_file() else None


@contextlib.contextmanager
def _connect(database: Path) -> Iterator[sqlite3.Connection]:
    # Read-only: these reads never take a write lock; WAL lets them run beside MLflow's writers.
    connection = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        yield connection
    except sqlite3.OperationalError as e:
        if "no such" in str(e):
            raise SchemaMismatch(str(e)) from e
        raise
    finally:
        connection.close()


def _version(connection: sqlite3.Connection, name: str, version: int) -> RegisteredModel | None:
    row = connection.execute(
        "SELECT name, version, run_id, source, creation_time FROM model_versions "
        "WHERE workspace = ? AND name = ? AND version = ? AND current_stage IS NOT ?",
        (_WORKSPACE, name, version, _DELETED),
    ).fetchone()
    if row is None:
        return None
    tags = dict(
        connection.execute(
            "SELECT key, value FROM model_version_tags WHERE workspace = ? AND name = ? AND version = ?",
            (_WORKSPACE, name, version),
        ).fetchall()
    )
    found_name, found_version, run_id, source, created = row
    # As versions.from_mlflow: MLflow 3 registers LoggedModels, whose source is models:/<model_id>.
    logged = source[len("models:/") :] if source and source.startswith("models:/m-") else None
    return RegisteredModel(
        name=found_name,
        version=str(found_version),
        run_id=run_id,
        model_id=logged,
        family=tags.get(contract.MlflowTag.MODEL_FAMILY, "sklearn"),
        tags=tags,
        created_at=_dt.datetime.fromtimestamp(created / 1000, _dt.UTC) if created else None,
    )


def by_alias(database: Path, name: str, alias: str) -> RegisteredModel | None:
    """The version ``alias`` points at, or None (no such alias, model or live version)."""
    with _connect(database) as connection:
        row = connection.execute(
            "SELECT version FROM registered_model_aliases WHERE workspace = ? AND name = ? AND alias = ?",
            (_WORKSPACE, name, alias),
        ).fetchone()
        return None if row is None else _version(connection, name, int(row[0]))


def get(database: Path, name: str, version: str) -> RegisteredModel:
    """One registered version.

    Raises:
        LookupError: no such live version (as ``versions.get``).
    """
    try:
        number = int(version)
    except ValueError:
        raise LookupError(f"{name}: no registered version {version!r}") from None
    with _connect(database) as connection:
        found = _version(connection, name, number)
    if found is None:
        raise LookupError(f"{name}: no registered version {version!r}")
    return found


def run_artifact(database: Path, run_id: str, path: str) -> bytes | None:
    """An artifact of a run whose artifacts sit in a local folder; None when they sit elsewhere
    (object storage, a server's proxy), for MLflow to fetch."""
    with _connect(database) as connection:
        row = connection.execute("SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
    if row is None or not row[0]:
        return None
    parsed = urlparse(row[0])
    if parsed.scheme not in ("", "file"):
        return None
    root = Path(unquote(parsed.path)).resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise ValueError(f"artifact path {path!r} leaves run {run_id}'s artifact folder")
    if not target.is_file():
        # MLflow raises its own error for a missing artifact; let it say so.
        return None
    return target.read_bytes()


def warn_fallback(database: Path, error: SchemaMismatch) -> None:
    dg.get_dagster_logger().warning(
        "MLflow store %s does not have the tables the light registry reads expect (%s); reading through MLflow",
        database,
        error,
    )
