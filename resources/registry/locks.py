"""Locks between processes: a file lock on one machine, a PostgreSQL advisory lock across machines,
and the choice between them for champion moves."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from resources.registry.errors import RegistryLockTimeout


@contextlib.contextmanager
def file_lock(
    path: Path,
    *,
    timeout_s: float,
    what: str,
    holder: str = "",
    error: type[TimeoutError] = TimeoutError,
) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``path``; the kernel releases it when the holder exits,
    even when killed, so a crash never leaves a stale lock.

    Args:
        what: names the lock in the timeout message.
        holder: written into the file while held, so a waiter that times out can say who holds it.
        error: the exception raised after ``timeout_s`` without the lock.
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.seek(0)
                    raise error(
                        f"{what} {path} held for over {timeout_s:.0f}s by {handle.read().strip() or 'another process'}"
                    ) from None
                time.sleep(0.02)
        try:
            if holder:
                handle.seek(0)
                handle.truncate()
                handle.write(holder)
                handle.flush()
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def advisory_lock_key(name: str, registry_identity: str) -> int:
    """The 64-bit advisory-lock key of champion moves of ``name`` in one registry.

    Derived from what the registry itself stores (``registry_identity``), never from the address a
    client reached it by: clients of one tracking server through ``127.0.0.1``, ``localhost`` or a
    DNS name must take the same lock.
    """
    subject = f"mlops.champion|{name}|{registry_identity}"
    return int.from_bytes(hashlib.sha256(subject.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def postgres_advisory_lock(uri: str, key: int, *, timeout_s: float, what: str) -> Iterator[None]:
    """A session-level advisory lock: PostgreSQL releases it when the connection drops, so a killed
    holder never leaves it behind."""
    import psycopg2

    connection = psycopg2.connect(uri.replace("postgresql+psycopg2://", "postgresql://"))
    connection.autocommit = True
    deadline = time.monotonic() + timeout_s
    try:
        with connection.cursor() as cursor:
            while True:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                if cursor.fetchone()[0]:
                    break
                if time.monotonic() > deadline:
                    raise RegistryLockTimeout(f"advisory lock {key} ({what}) held for over {timeout_s:.0f}s")
                time.sleep(0.02)
            try:
                yield
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        connection.close()


def local_store_dir(tracking_uri: str) -> Path | None:
    """Where lock files for this store live: beside a SQLite database or inside a file store;
    None for a tracking server, which has no folder every client can see."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        database = unquote(tracking_uri.split(":///", 1)[1].split("?", 1)[0]) if ":///" in tracking_uri else ""
        if not database or database == ":memory:":
            return None
        path = Path(database).resolve()
        return path.parent / f"{path.name}.locks"
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).resolve() / ".mlops-locks"
    if parsed.scheme == "" and tracking_uri:
        return Path(tracking_uri).resolve() / ".mlops-locks"
    return None


@contextlib.contextmanager
def champion_lock(
    *,
    name: str,
    tracking_uri: str,
    lock_uri: str,
    registry_identity: str,
    timeout_s: float,
    holder: str,
) -> Iterator[bool]:
    """Serializes champion moves of ``name`` across processes and machines.

    A PostgreSQL advisory lock when ``lock_uri`` is set; else a file lock beside a SQLite or file
    store; else nothing. Yields whether the caller must rely on re-read-after-write verification
    alone (no lock was available for this store).
    """
    if lock_uri:
        key = advisory_lock_key(name, registry_identity)
        with postgres_advisory_lock(lock_uri, key, timeout_s=timeout_s, what=f"champion moves of {name}"):
            yield False
        return
    folder = local_store_dir(tracking_uri)
    if folder is None:
        yield True
        return
    with file_lock(
        folder / f"champion-{name}.lock",
        timeout_s=timeout_s,
        what="registry lock",
        holder=holder,
        error=RegistryLockTimeout,
    ):
        yield False
