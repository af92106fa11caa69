"""MLflow's scoring protocol: parsing and validating ``POST /invocations`` bodies, shaping responses.

Accepted bodies are those of ``mlflow models serve`` (mlflow/pyfunc/scoring_server, 3.17):
``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}`` or
``{"dataframe_records": [{column: value, ...}, ...]}``. Existing clients read ``predictions``;
the response adds ``probabilities``, ``model_version`` (the champion answering now),
``model_versions`` and ``routes`` per row, and ``request_ids`` per row.

Every problem is a ``RequestError`` with an HTTP status and a message that names the field, the
column or the row, so a client can fix its request; nothing here raises anything else on bad input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SPLIT = "dataframe_split"
RECORDS = "dataframe_records"


class RequestError(ValueError):
    """A request refused with ``status`` (4xx); the message names what to fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Columns:
    """What a request must and may carry: the model's inputs, and columns only logged (sensitive ones)."""

    numeric: list[str]
    categorical: list[str]
    optional: list[str]

    @property
    def required(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def allowed(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.optional]


@dataclass(frozen=True)
class Rows:
    """A validated request: column -> values (every allowed column; None where absent), row count."""

    columns: dict[str, list[Any]]
    n_rows: int


def parse(body: bytes, columns: Columns, *, max_rows: int) -> Rows:
    """The rows of a request body, validated against ``columns``.

    Raises:
        RequestError: bad JSON (400), no or both payload keys (400), a malformed payload (400),
            a missing or extra column (400), a value of the wrong type (400), too many rows (413).
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(400, f"body: not valid JSON ({e})") from None
    if not isinstance(document, dict):
        raise RequestError(400, f"body: expected a JSON object with {SPLIT!r} or {RECORDS!r}")
    formats = [key for key in (SPLIT, RECORDS) if key in document]
    others = sorted(set(document) - {SPLIT, RECORDS, "params"})
    if len(formats) != 1 or others:
        found = ", ".join(repr(k) for k in sorted(document)) or "nothing"
        raise RequestError(400, f"body: expected exactly one of {SPLIT!r} or {RECORDS!r}, found {found}")
    if formats[0] == SPLIT:
        names, data = _split(document[SPLIT], max_rows=max_rows)
    else:
        names, data = _records(document[RECORDS], max_rows=max_rows)
    return _validate(names, data, columns)


def _split(payload: Any, *, max_rows: int) -> tuple[list[str], list[Sequence[Any]]]:
    if not isinstance(payload, dict):
        raise RequestError(400, f"{SPLIT}: expected an object with 'columns' and 'data'")
    unknown = sorted(set(payload) - {"columns", "data", "index"})
    if unknown:
        raise RequestError(400, f"{SPLIT}: unknown key(s) {unknown}; expected 'columns', 'data' (and 'index')")
    names = payload.get("columns")
    data = payload.get("data")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RequestError(400, f"{SPLIT}.columns: expected a list of column names")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise RequestError(400, f"{SPLIT}.columns: column(s) {twice} given twice")
    if not isinstance(data, list):
        raise RequestError(400, f"{SPLIT}.data: expected a list of rows")
    _check_count(len(data), max_rows)
    for i, row in enumerate(data):
        if not isinstance(row, list):
            raise RequestError(400, f"{SPLIT}.data[{i}]: expected a list of values")
        if len(row) != len(names):
            raise RequestError(400, f"{SPLIT}.data[{i}]: {len(row)} values for {len(names)} columns")
    return names, data


def _records(payload: Any, *, max_rows: int) -> tuple[list[str], list[Sequence[Any]]]:
    if not isinstance(payload, list):
        raise RequestError(400, f"{RECORDS}: expected a list of objects (one per row)")
    _check_count(len(payload), max_rows)
    if not all(isinstance(record, dict) for record in payload):
        i = next(i for i, record in enumerate(payload) if not isinstance(record, dict))
        raise RequestError(400, f"{RECORDS}[{i}]: expected an object of column: value")
    names = list(payload[0]) if payload else []
    first = set(names)
    for i, record in enumerate(payload[1:], start=1):
        if set(record) != first:
            missing, extra = sorted(first - set(record)), sorted(set(record) - first)
            detail = "; ".join(p for p in (missing and f"lacks {missing}", extra and f"adds {extra}") if p)
            raise RequestError(400, f"{RECORDS}[{i}]: columns differ from row 0's: {detail}")
    return names, [[record[n] for n in names] for record in payload]


def _check_count(n_rows: int, max_rows: int) -> None:
    if n_rows == 0:
        raise RequestError(400, "rows: the request has no rows")
    if n_rows > max_rows:
        raise RequestError(413, f"rows: {n_rows} rows, at most {max_rows} per request (serving.max_rows)")


def _validate(names: list[str], data: list[Sequence[Any]], columns: Columns) -> Rows:
    allowed = set(columns.allowed)
    extra = [n for n in names if n not in allowed]
    if extra:
        raise RequestError(400, f"column {extra[0]!r}: not an input of the model (inputs: {columns.allowed})")
    given = set(names)
    missing = [n for n in columns.required if n not in given]
    if missing:
        raise RequestError(400, f"column {missing[0]!r}: missing (required: {columns.required})")
    position = {name: i for i, name in enumerate(names)}
    out: dict[str, list[Any]] = {}
    for name in columns.numeric:
        j = position[name]
        out[name] = [_number(row[j], name, i) for i, row in enumerate(data)]
    for name in (*columns.categorical, *columns.optional):
        j = position.get(name)
        out[name] = [None] * len(data) if j is None else [_category(row[j], name, i) for i, row in enumerate(data)]
    return Rows(out, len(data))


def _number(value: Any, column: str, row: int) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(400, f"column {column!r}, row {row}: expected a number or null, got {_shown(value)}")
    if isinstance(value, float) and math.isinf(value):
        raise RequestError(400, f"column {column!r}, row {row}: expected a finite number, got {value}")
    return None if isinstance(value, float) and math.isnan(value) else value


def _category(value: Any, column: str, row: int) -> str | int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RequestError(400, f"column {column!r}, row {row}: expected a string or null, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def response(
    *,
    probabilities: list[float],
    versions: list[str],
    routes: list[str],
    request_ids: list[str],
    champion_version: str,
) -> bytes:
    """The response body; ``predictions`` are the classes ``predict`` would give (P(1) > P(0))."""
    return json.dumps(
        {
            "predictions": [1 if p > 1.0 - p else 0 for p in probabilities],
            "probabilities": probabilities,
            "model_version": champion_version,
            "model_versions": versions,
            "routes": routes,
            "request_ids": request_ids,
        },
        separators=(",", ":"),
    ).encode()


def error(status: int, message: str) -> bytes:
    """An error body shaped as MLflow's scoring server shapes its own."""
    code = "BAD_REQUEST" if status == 400 else "REQUEST_LIMIT_EXCEEDED" if status == 413 else "INVALID_REQUEST"
    return json.dumps({"error_code": code, "message": message, "status": status}).encode()
