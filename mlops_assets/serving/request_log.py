"""The request log: every served request, written to the lake and landed as a batch of the model.

The response path only puts the request on a queue (``RequestLog.append``, microseconds); one
writer thread gathers rows and closes a Parquet file every ``serving.request_log.interval_seconds``
or ``max_rows`` rows, whichever comes first, and on ``close()``. Each closed file is

1. the record, in the lake at ``<model>/request_log/<batch>.parquet`` (request id, time, the
   model's input and sensitive columns in their training dtypes, the champion's version and
   probability, the route, the challenger's version and probability), and
2. the same bytes landed as ``<landing>/<model>/<batch>.parquet``, so the landing sensor ingests
   it like any landed file: validated, scored, drift- and fairness-checked, able to retrain.

Both are written under a temporary name and renamed into place, and the landing zone skips
hidden names, so a half-written file is never taken as a batch. A crash loses at most the rows of
the file still open. A file whose record is in the lake but whose landing failed (a full or
unmounted landing volume) is landed again under the same batch name, every interval and on
close, never written again under a new name (its rows would be recorded twice). A process killed
between the two writes leaves the file in the lake only; nothing lands it yet.

The file holds no label column: features keeps every row of an unlabelled batch (``mlops label``
adds labels later by request id, see ``mlops_assets.serving.labels``).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_assets.batches import check_batch_name
from mlops_assets.contract import (
    ROUTE_CANARY,
    ROUTE_CHAMPION,
    SERVED_BATCH_PREFIX,
    LakeFolder,
    ServedColumn,
    names,
)
from mlops_assets.spec import PipelineSpec
from resources.lake import Lake, contained

if TYPE_CHECKING:
    import pandas as pd

    from mlops_assets.ml.data import ResolvedColumns

log = logging.getLogger(__name__)
ROUTES = (ROUTE_CHAMPION, ROUTE_CANARY)
_STOP = object()


@dataclass(frozen=True)
class ServedBatch:
    """One HTTP request, any number of rows."""

    request_ids: list[str]
    received_at: float  # unix seconds
    features: dict[str, list]  # column -> values, the model's input (and sensitive) columns
    champion_version: str
    champion_proba: list[float]
    route: list[str]  # per row: "champion" | "canary"
    challenger_version: str | None
    challenger_proba: list[float] | None  # canary or shadow scores, None when neither


def served_batch_name(closed_at: float, replica: str, seq: int) -> str:
    """``served-<UTC time>-<replica>-<seq>``: a batch name of the grammar, unique across replicas,
    and in time order among the served batches (they sort as names, after every numeric batch)."""
    stamp = datetime.fromtimestamp(closed_at, UTC).strftime("%Y%m%dT%H%M%S")
    return check_batch_name(f"{SERVED_BATCH_PREFIX}-{stamp}-{replica}-{seq:06d}", where="request log file")


class RequestLog:
    """Queue of served requests to one writer thread that closes a Parquet file per interval or
    row count, writes it to the lake and lands it as a batch of ``spec.name``.

    Args:
        spec: the model's spec; ``serving.request_log`` sets ``max_rows`` and ``interval_seconds``.
        lake_root: the lake's root (local folder or fsspec URI), as the ``lake`` resource has it.
        landing_root: the landing folder's root; None: the current environment's
            (``$MLOPS_LANDING_DIR`` under ``MLOPS_ENV=prod``, else ``$MLOPS_HOME/landing``).
        columns: the model's resolved input columns; None: the spec's ``features``.

    Raises:
        ValueError: a feature column has the name of a log column (``request_id``, ``route``...).
    """

    def __init__(
        self,
        spec: PipelineSpec,
        lake_root: str,
        *,
        landing_root: str | None = None,
        columns: ResolvedColumns | None = None,
    ) -> None:
        self.spec = spec
        self.lake = Lake(root=lake_root)
        self.landing_root = landing_root or default_landing_root()
        settings = spec.serving.request_log
        self.max_rows = settings.max_rows
        self.interval_seconds = settings.interval_seconds
        self.numeric = list(columns.numeric if columns is not None else spec.features.numeric)
        self.categorical = list(columns.categorical if columns is not None else spec.features.categorical)
        self.sensitive = [c for c in spec.sensitive_features if c not in (*self.numeric, *self.categorical)]
        self.feature_columns = [*self.numeric, *self.categorical, *self.sensitive]
        clashes = sorted(set(self.feature_columns) & set(names(ServedColumn).values()))
        if clashes:
            raise ValueError(
                f"{spec.name}: serving.request_log: feature column(s) {clashes} have the name of a "
                f"request-log column {sorted(names(ServedColumn).values())}; rename them in the source"
            )
        # Which replica wrote a file: batch names of replicas closing in the same second differ.
        self.replica = uuid.uuid4().hex[:6]
        self._seq = itertools.count(1)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._error: BaseException | None = None  # the last file's write failed (rows kept pending)
        self._landing_error: BaseException | None = None  # a recorded file is not landed yet
        self.written: list[str] = []  # batch names of the files closed and landed so far, in order
        # Files recorded in the lake whose landing failed: landed again before the next file.
        self._unlanded: list[str] = []
        self._thread = threading.Thread(target=self._run, name=f"request-log-{spec.name}", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # ---- the caller's side -------------------------------------------------------------------

    def append(self, served: ServedBatch) -> None:
        """Queues one request for the log; returns at once (the writer thread does the rest).

        Raises:
            ValueError: the request's lists do not line up (names the field) or a route is
                neither champion nor canary; nothing of it is queued.
            RuntimeError: the log was closed.
        """
        if self._closed:
            raise RuntimeError(f"{self.spec.name}: request log is closed; request {served.request_ids[:1]} not logged")
        n = len(served.request_ids)
        for field, values in (
            ("champion_proba", served.champion_proba),
            ("route", served.route),
            ("challenger_proba", served.challenger_proba),
            *((f"features[{c!r}]", v) for c, v in served.features.items()),
        ):
            if values is not None and len(values) != n:
                raise ValueError(
                    f"{self.spec.name}: served batch: {field} has {len(values)} values for {n} request ids"
                )
        unknown = set(served.features) - set(self.feature_columns)
        if unknown:
            raise ValueError(
                f"{self.spec.name}: served batch: feature column(s) {sorted(unknown)} are no input or "
                f"sensitive column of the model {self.feature_columns}"
            )
        if not set(served.route) <= set(ROUTES):
            raise ValueError(
                f"{self.spec.name}: served batch: route holds {sorted(set(served.route) - set(ROUTES))}, "
                f"expected one of {ROUTES}"
            )
        self._queue.put(served)

    def close(self) -> None:
        """Writes the rows still open and stops the writer; safe to call twice.

        Raises:
            RuntimeError: the last file could not be written (the cause is chained).
        """
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
        if self._thread is not threading.current_thread():
            self._thread.join()
        atexit.unregister(self.close)
        failure = self._error or self._landing_error
        if failure is not None:
            error, self._error, self._landing_error = failure, None, None
            raise RuntimeError(f"{self.spec.name}: request log: rows could not be written") from error

    # ---- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        pending = _Pending(self.feature_columns)
        opened_at: float | None = None
        while True:
            timeout = None if opened_at is None else max(0.0, opened_at + self.interval_seconds - time.monotonic())
            if self._unlanded:  # a failed landing is retried every interval, traffic or not
                timeout = self.interval_seconds if timeout is None else min(timeout, self.interval_seconds)
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if self._unlanded:
                self._land_unlanded()
            if item is _STOP:
                # Everything queued before close() is already taken: the queue is FIFO.
                while pending.rows:
                    if not self._write_next(pending, pending.rows if pending.rows <= self.max_rows else self.max_rows):
                        return
                self._land_unlanded()
                return
            if item is not None:
                if opened_at is None:
                    opened_at = time.monotonic()
                pending.add(item)
                while pending.rows >= self.max_rows:
                    if not self._write_next(pending, self.max_rows):
                        break
                    opened_at = time.monotonic() if pending.rows else None
            if opened_at is not None and time.monotonic() >= opened_at + self.interval_seconds:
                if pending.rows and self._write_next(pending, min(pending.rows, self.max_rows)):
                    opened_at = time.monotonic() if pending.rows else None
                elif not pending.rows:
                    opened_at = None
                else:
                    opened_at = time.monotonic()  # written again after one more interval

    def _write_next(self, pending: _Pending, rows: int) -> bool:
        """Closes a file of the first ``rows`` pending rows; on failure keeps them pending."""
        chunk = pending.take(rows)
        try:
            self._write(chunk)
        except Exception as e:  # the rows stay pending; the next trigger tries again
            log.exception("%s: request log file of %d rows not written; kept for the next try", self.spec.name, rows)
            pending.put_back(chunk)
            self._error = e
            return False
        self._error = None
        return True

    def _write(self, chunk: dict[str, list]) -> None:
        import io

        frame = self.frame(chunk)
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        data = buffer.getvalue()
        batch = served_batch_name(time.time(), self.replica, next(self._seq))
        # The record first: a file is landed only once the lake holds what it was made from.
        self.lake.write_bytes(self.spec.name, LakeFolder.REQUEST_LOG, data, batch, "parquet")
        # From here the rows are safe in the lake: a failed landing is retried under this name,
        # never by writing the rows again (that would record them twice).
        self._unlanded.append(batch)
        log.info("%s: request log file %s closed with %d rows", self.spec.name, batch, len(frame))
        self._land_unlanded()

    def _land_unlanded(self) -> None:
        """Lands the recorded files not landed yet, oldest first; keeps those that still fail."""
        while self._unlanded:
            batch = self._unlanded[0]
            try:
                data = self.lake.read_bytes(self.spec.name, LakeFolder.REQUEST_LOG, batch, "parquet")
                land_bytes(self.landing_root, self.spec.name, batch, data)
            except Exception as e:
                log.exception(
                    "%s: request log file %s is in the lake but not landed; retried later", self.spec.name, batch
                )
                self._landing_error = e
                return
            self._unlanded.pop(0)
            self.written.append(batch)
        self._landing_error = None

    def frame(self, chunk: dict[str, list]) -> pd.DataFrame:
        """The rows of one file, typed as training typed them (``prepare_inputs``)."""
        import numpy as np
        import pandas as pd

        from mlops_assets.ml.trainers import prepare_inputs

        inputs = prepare_inputs(
            pd.DataFrame({c: chunk[c] for c in self.feature_columns}), self.numeric, self.categorical
        )
        out = pd.DataFrame(
            {
                ServedColumn.REQUEST_ID: pd.Series(chunk[ServedColumn.REQUEST_ID], dtype=object).astype(str),
                ServedColumn.RECEIVED_AT: pd.to_datetime(
                    np.asarray(chunk[ServedColumn.RECEIVED_AT], dtype="float64"), unit="s", utc=True
                ),
            }
        )
        for column in [*self.numeric, *self.categorical]:
            out[column] = inputs[column].to_numpy()
        for column in self.sensitive:
            values = pd.Series(chunk[column], dtype=object)
            out[column] = values.astype(str).where(values.notna(), None)
        out[ServedColumn.CHAMPION_VERSION] = pd.Series(chunk[ServedColumn.CHAMPION_VERSION], dtype=object).astype(str)
        out[ServedColumn.CHAMPION_PROBA] = np.asarray(chunk[ServedColumn.CHAMPION_PROBA], dtype="float64")
        out[ServedColumn.ROUTE] = pd.Series(chunk[ServedColumn.ROUTE], dtype=object)
        out[ServedColumn.CHALLENGER_VERSION] = pd.Series(chunk[ServedColumn.CHALLENGER_VERSION], dtype=object)
        out[ServedColumn.CHALLENGER_PROBA] = np.asarray(
            [np.nan if p is None else p for p in chunk[ServedColumn.CHALLENGER_PROBA]], dtype="float64"
        )
        return out


class _Pending:
    """Column lists of the rows not yet in a file (list extends: cheap per request)."""

    def __init__(self, feature_columns: list[str]) -> None:
        self.feature_columns = feature_columns
        self.columns: dict[str, list] = {c: [] for c in (*names(ServedColumn).values(), *feature_columns)}
        self.rows = 0

    def add(self, served: ServedBatch) -> None:
        n = len(served.request_ids)
        c = self.columns
        c[ServedColumn.REQUEST_ID].extend(served.request_ids)
        c[ServedColumn.RECEIVED_AT].extend([served.received_at] * n)
        for column in self.feature_columns:
            c[column].extend(served.features.get(column, [None] * n))
        c[ServedColumn.CHAMPION_VERSION].extend([served.champion_version] * n)
        c[ServedColumn.CHAMPION_PROBA].extend(served.champion_proba)
        c[ServedColumn.ROUTE].extend(served.route)
        c[ServedColumn.CHALLENGER_VERSION].extend([served.challenger_version] * n)
        c[ServedColumn.CHALLENGER_PROBA].extend(served.challenger_proba or [None] * n)
        self.rows += n

    def take(self, rows: int) -> dict[str, list]:
        chunk = {k: v[:rows] for k, v in self.columns.items()}
        self.columns = {k: v[rows:] for k, v in self.columns.items()}
        self.rows -= rows
        return chunk

    def put_back(self, chunk: dict[str, list]) -> None:
        self.columns = {k: chunk[k] + v for k, v in self.columns.items()}
        self.rows += len(chunk[ServedColumn.REQUEST_ID])


def land_bytes(landing_root: str, model: str, batch: str, data: bytes) -> str:
    """``data`` as ``<landing_root>/<model>/<batch>.parquet``, written under a hidden name (the
    landing zone skips those) and renamed into place, so the sensor never sees half a file."""
    folder = Path(contained(landing_root, model, what=f"landing folder of {model}"))
    folder.mkdir(parents=True, exist_ok=True)
    final = Path(contained(str(folder), f"{batch}.parquet", what=f"landing file of {model} batch {batch}"))
    staging = folder / f".{batch}.{uuid.uuid4().hex}.tmp"
    with open(staging, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(staging, final)
    return str(final)


def default_landing_root() -> str:
    """The landing folder the ``landing`` resource of the current environment reads."""
    from resources.settings import Settings

    settings = Settings.from_env()
    if settings.env == "prod":
        root = os.environ.get("MLOPS_LANDING_DIR")
        if not root:
            raise ValueError("MLOPS_LANDING_DIR: not set; under MLOPS_ENV=prod the request log lands files there")
        return root
    return str(settings.landing_dir)
