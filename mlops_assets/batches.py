"""The one grammar for batch names, and the one order of batches.

A batch name is a Dagster partition key, a landing file name (``<batch>.parquet``) and a lake
file name, so it is held to what is safe in all three: ASCII letters, digits, ``_``, ``-`` and
``.``, starting with a letter or a digit, at most ``MAX_LENGTH`` characters. Nothing else (no
``/``, no spaces, no leading dot, no non-ASCII) can name a batch, wherever it comes from: a file
name, the source's batch column, or a partition added in the UI or over GraphQL.

A name is a number only when it is ASCII digits with an optional fractional part (``2018``,
``2018.5``): ``1e9``, ``inf``, ``nan``, `` 2018`` or Arabic-Indic digits are not, although
Python's ``float`` would take them. Numbers sort by value and before every other name; other
names sort as strings. So ``9 < 10 < 1990 < 2018.5 < 2019 < 1e9 < a``.

Pure: no Dagster, no pandas.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

MAX_LENGTH = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


class BatchNameError(ValueError):
    """A batch name outside the grammar; the message names it and says why."""


def batch_name_problem(name: object) -> str | None:
    """Why ``name`` is no batch name, or None when it is one."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a string"
    if not name:
        return "is empty"
    if len(name) > MAX_LENGTH:
        return f"is {len(name)} characters long (at most {MAX_LENGTH})"
    if not _NAME.fullmatch(name):
        return "may hold only ASCII letters, digits, '_', '-' and '.', and must start with a letter or a digit"
    return None


def check_batch_name(name: object, *, where: str = "batch") -> str:
    """``name`` when it is a batch name.

    Raises:
        BatchNameError: it is not; the message shows the name (escaped) and ``where`` it came from.
    """
    problem = batch_name_problem(name)
    if problem is not None:
        shown = repr(name) if not isinstance(name, str) or len(name) <= 80 else repr(name[:80]) + "…"
        raise BatchNameError(f"{where} {shown} is not a valid batch name: it {problem}")
    return name  # type: ignore[return-value] - checked to be a str above


def is_batch_name(name: object) -> bool:
    return batch_name_problem(name) is None


def is_number(name: str) -> bool:
    """ASCII digits with an optional fraction: the only names that sort by value."""
    return _NUMBER.fullmatch(name) is not None


def batch_sort_key(name: str) -> tuple[int, Decimal, str]:
    """Numbers by value and before other names; other names as strings."""
    if is_number(name):
        return (0, Decimal(name), name)
    return (1, Decimal(0), name)


def sorted_batches(names: Iterable[str]) -> list[str]:
    return sorted(set(names), key=batch_sort_key)


def batch_key(value: Any) -> str:
    """The batch name of a value of the source's batch column: integers without a trailing .0.

    Not checked against the grammar: callers that register batches check it, so that one bad
    value is reported instead of stopping the rest.
    """
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
