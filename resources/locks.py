"""An exclusive file lock between processes on one machine."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path


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
