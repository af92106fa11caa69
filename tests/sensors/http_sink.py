"""A real webhook receiver on 127.0.0.1 for alert tests: it answers as it is told and records
every request it got, answered or not."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# How to answer the n-th POST (0-based): "ok", "fail" (500), "slow" (ok after `delay` s),
# "hang" (never answers), "redirect" (302 to /elsewhere, which would answer 200).
Behaviour = Callable[[int], str]


@dataclass
class Received:
    method: str
    path: str
    body: dict
    status: int | None  # None: never answered


@dataclass
class Sink:
    url: str
    requests: list[Received] = field(default_factory=list)

    def posts(self) -> list[Received]:
        return [r for r in self.requests if r.method == "POST"]

    def delivered(self) -> list[dict]:
        """Bodies of the POSTs answered 2xx, in order."""
        return [r.body for r in self.posts() if r.status is not None and 200 <= r.status < 300]


@contextmanager
def http_sink(behaviour: Behaviour = lambda n: "ok", *, delay: float = 0.0, redirect_code: int = 302) -> Iterator[Sink]:
    released = threading.Event()
    lock = threading.Lock()
    sink: Sink

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _record(self, body: dict, status: int | None) -> Received:
            entry = Received(self.command, self.path, body, status)
            with lock:
                sink.requests.append(entry)
            return entry

        def do_GET(self) -> None:
            self._record({}, 200)
            self._answer(200)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            with lock:
                n = len([r for r in sink.requests if r.method == "POST"])
            mode = behaviour(n)
            if mode == "hang":
                self._record(body, None)
                released.wait(60)
                return
            if mode == "slow":
                time.sleep(delay)
            status = {"ok": 200, "slow": 200, "fail": 500, "redirect": redirect_code}[mode]
            self._record(body, status)
            self._answer(status, location="/elsewhere" if mode == "redirect" else None)

        def _answer(self, status: int, location: str | None = None) -> None:
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    sink = Sink(f"http://127.0.0.1:{server.server_address[1]}/hook")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        released.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
