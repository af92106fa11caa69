"""Faults injected on the test's side: a registry whose real MlflowClient fails at a chosen call.

``FaultyRegistry`` is the local profile's registry with one difference: ``client()`` wraps the
real client, and every call is first matched against ``FaultyRegistry.FAULTS``. A matching fault
acts before the call reaches MLflow (raises an outage, kills the process, or only counts), so the
code under test runs unchanged against a real store. A subprocess that must crash builds its own
``FaultyRegistry`` with a ``kill`` fault.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import requests

from resources.settings import LocalMlflowRegistry


def outage() -> None:
    """What MLflow's REST client raises when the server is gone: an MlflowException caused by a
    ``requests`` connection error (``is_tracking_outage`` is true for it)."""
    from mlflow.exceptions import MlflowException

    try:
        raise requests.exceptions.ConnectionError("Connection refused (injected by the test)")
    except requests.exceptions.ConnectionError as e:
        raise MlflowException("API request to the tracking server failed (injected outage)") from e


def kill() -> None:
    """Dies like a killed pod: no cleanup, no finally blocks, no exit handlers."""
    os.kill(os.getpid(), signal.SIGKILL)


def count() -> None:
    """Lets the call through; the fault's ``hits`` counts it."""


@dataclass
class Fault:
    """Acts on calls of ``method`` whose arguments satisfy ``when``, at most ``times`` times."""

    method: str
    act: Callable[[], None]
    when: Callable[..., bool] = lambda *args, **kwargs: True
    times: int = 1_000_000
    hits: int = 0

    def applies(self, method: str, args: tuple, kwargs: dict) -> bool:
        return method == self.method and self.hits < self.times and self.when(*args, **kwargs)


class FaultyClient:
    """A real MlflowClient whose calls first meet the faults."""

    def __init__(self, client: Any, faults: list[Fault]) -> None:
        self._client = client
        self._faults = faults

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            for fault in self._faults:
                if fault.applies(name, args, kwargs):
                    fault.hits += 1
                    fault.act()
            return attribute(*args, **kwargs)

        return call


class FaultyRegistry(LocalMlflowRegistry):
    """The local registry, with ``FAULTS`` applied to every client it hands out."""

    FAULTS: ClassVar[list[Fault]] = []

    def client(self) -> Any:
        return FaultyClient(super().client(), FaultyRegistry.FAULTS)


def faulty_copy(registry: Any, **overrides: Any) -> FaultyRegistry:
    """A ``FaultyRegistry`` configured like ``registry`` (same store, lock, cache), with ``overrides``."""
    fields = {name: getattr(registry, name) for name in type(registry).model_fields}
    return FaultyRegistry(**{**fields, **overrides})


def move_record_in_state(state: str) -> Callable[..., bool]:
    """Matches ``set_registered_model_tag(name, key, value)`` writing a champion move record in ``state``."""
    from resources.registry import TAG_MOVE_PREFIX

    def matches(name: str, key: str, value: str, *args: Any, **kwargs: Any) -> bool:
        return key.startswith(TAG_MOVE_PREFIX) and f'"state": "{state}"' in value

    return matches
