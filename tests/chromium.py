"""Headless Chromium for tests, driven over the DevTools protocol (no WebDriver, no Selenium).

``chromium_binary`` finds Debian's ``chromium``; when it is missing and the tests run as root it
installs the package with apt-get, otherwise it skips the test with the reason and the command
to run. ``Chromium.load`` opens a file in a fresh tab and reports what a person would see go
wrong: script exceptions and console errors, every request the page made, dialogs it opened,
and whether each image decoded (``naturalWidth``).

The protocol needs only a WebSocket client: ``websocket-client``, already installed with the
Kubernetes client, is a test dependency.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

PACKAGE = "chromium"
BINARIES = ("chromium", "chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--no-default-browser-check",
    "--remote-debugging-address=127.0.0.1",
    # 0: Chromium picks a free port and writes it to DevToolsActivePort in the profile.
    "--remote-debugging-port=0",
)
INSTALL_TIMEOUT_S = 1200
START_TIMEOUT_S = 30

_PAGE_STATE = """({
  url: document.URL,
  scripts: document.scripts.length,
  text: document.body ? document.body.innerText : "",
  images: Array.from(document.images, (i) => ({
    alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight,
    src: i.getAttribute("src") ? i.getAttribute("src").slice(0, 40) : null,
  })),
})"""


def chromium_binary() -> str:
    """The Chromium executable, installed from Debian's package when missing and running as root.

    Skips the calling test (with the reason and what to run) where it cannot be had.
    """
    found = _which()
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip(f"headless Chromium is not installed; run `sudo apt-get install -y {PACKAGE}` to run this test")
    if shutil.which("apt-get") is None:
        pytest.skip(f"headless Chromium is not installed and this system has no apt-get to install {PACKAGE}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=300"]
    for command in (
        ["apt-get", *lock, "update", "-qq"],
        ["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", PACKAGE],
    ):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.skip(f"installing Chromium: `{' '.join(command)}` did not finish in {INSTALL_TIMEOUT_S} s")
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            pytest.skip(f"installing Chromium: `{' '.join(command)}` exited {done.returncode}: {' | '.join(tail)}")
    found = _which()
    if not found:
        pytest.skip(f"apt-get installed {PACKAGE} but none of {', '.join(BINARIES)} is on PATH")
    return found


def _which() -> str | None:
    return next((path for name in BINARIES if (path := shutil.which(name))), None)


@dataclass(frozen=True)
class PageLoad:
    """What loading one page did."""

    url: str
    # Every URL the page requested, its own document included, in order.
    requests: list[str]
    # Uncaught exceptions, console errors, failed or blocked loads (a CSP violation is one).
    errors: list[str]
    dialogs: list[str]
    images: list[dict[str, Any]]
    scripts: int
    text: str

    @property
    def external_requests(self) -> list[str]:
        """Requests for anything but the page itself and inline ``data:`` resources."""
        return [u for u in self.requests if u != self.url and not u.startswith("data:")]


@dataclass
class Chromium:
    """A running headless Chromium and its DevTools endpoint."""

    process: subprocess.Popen
    profile: Path
    port: int
    log: Path = field(repr=False)

    @classmethod
    def start(cls, binary: str, profile: Path) -> Chromium:
        """Starts Chromium on an empty profile folder and waits for its DevTools endpoint.

        Raises:
            RuntimeError: Chromium exited or published no endpoint within the start timeout
                (the message carries the end of its log).
        """
        log = profile.parent / f"{profile.name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own process group, so stopping it also stops its renderer and helper processes.
                start_new_session=True,
            )
        active_port = profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"Chromium exited with {process.returncode}: {_tail(log)}")
            if active_port.exists() and active_port.read_text().strip():
                return cls(process, profile, int(active_port.read_text().split()[0]), log)
            time.sleep(0.05)
        _stop(process)
        raise RuntimeError(f"Chromium published no DevTools port in {START_TIMEOUT_S} s: {_tail(log)}")

    def load(self, path: Path, *, timeout_s: float = 30.0) -> PageLoad:
        """Opens ``path`` in a new tab, waits for its load event and reads what it showed.

        Raises:
            TimeoutError: the page did not finish loading within ``timeout_s``.
        """
        import websocket

        target = json.loads(self._endpoint("PUT", "/json/new?about:blank"))
        connection = websocket.create_connection(
            target["webSocketDebuggerUrl"], timeout=timeout_s, suppress_origin=True
        )
        try:
            session = _Session(connection, time.monotonic() + timeout_s)
            for domain in ("Page", "Runtime", "Network", "Log"):
                session.call(f"{domain}.enable")
            url = path.resolve().as_uri()
            navigated_at = len(session.events)
            navigation = session.call("Page.navigate", url=url)
            if "errorText" in navigation:
                raise RuntimeError(f"Chromium could not open {url}: {navigation['errorText']}")
            session.wait_for("Page.loadEventFired", after=navigated_at)
            state = session.call("Runtime.evaluate", expression=_PAGE_STATE, returnByValue=True)["result"]["value"]
        finally:
            connection.close()
            self._endpoint("GET", f"/json/close/{target['id']}")
        return PageLoad(
            url=state["url"],
            requests=session.requests,
            errors=session.errors,
            dialogs=session.dialogs,
            images=state["images"],
            scripts=state["scripts"],
            text=state["text"],
        )

    def close(self) -> None:
        _stop(self.process)
        shutil.rmtree(self.profile, ignore_errors=True)

    def _endpoint(self, method: str, path: str) -> str:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read().decode()


class _Session:
    """One tab's DevTools connection: commands, and the events that arrive between them."""

    def __init__(self, connection: Any, deadline: float) -> None:
        self.connection = connection
        self.deadline = deadline
        self.events: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self._urls: dict[str, str] = {}
        self._next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        sent = self._next_id
        self.connection.send(json.dumps({"id": sent, "method": method, "params": params}))
        while True:
            message = self._receive()
            if message.get("id") == sent:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method} failed: {message['error']}")
                return message.get("result", {})

    def wait_for(self, event: str, *, after: int) -> None:
        while not any(e["method"] == event for e in self.events[after:]):
            self._receive()

    def _receive(self) -> dict[str, Any]:
        if time.monotonic() > self.deadline:
            raise TimeoutError("the page did not finish loading in time")
        message = json.loads(self.connection.recv())
        if "method" in message:
            self.events.append(message)
            self._note(message["method"], message.get("params", {}))
        return message

    def _note(self, method: str, params: dict[str, Any]) -> None:
        if method == "Network.requestWillBeSent":
            self._urls[params["requestId"]] = params["request"]["url"]
            self.requests.append(params["request"]["url"])
        elif method == "Network.loadingFailed":
            reason = params.get("blockedReason") or params.get("errorText")
            self.errors.append(f"failed to load {self._urls.get(params['requestId'], '?')[:80]}: {reason}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(f"uncaught: {details.get('exception', {}).get('description') or details['text']}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.errors.append(f"console.{params['type']}: {[a.get('value') for a in params['args']]}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(f"log: {params['entry']['text']}")
        elif method == "Page.javascriptDialogOpening":
            self.dialogs.append(f"{params['type']}: {params['message']}")
            self._next_id += 1
            # Dismissed without waiting for the reply: a dialog blocks the load event until then.
            self.connection.send(
                json.dumps({"id": self._next_id, "method": "Page.handleJavaScriptDialog", "params": {"accept": False}})
            )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _tail(log: Path) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return " | ".join(text.strip().splitlines()[-5:]) or "(no output)"
