"""The evaluation report in a real browser: headless Chromium opens the file as a reviewer would.

Chromium comes from Debian's ``chromium`` package (installed by the fixture when missing and
running as root, else these tests are skipped saying why). Each page is loaded in a fresh tab
over the DevTools protocol, which reports every request, exception, console error and dialog.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_assets.spec import GatesSpec
from tests.chromium import Chromium
from tests.ml.conftest import Holdout
from tests.ml.report_cases import HOSTILE_TEXTS, decision_on, hostile_report, report_of


def test_the_report_opens_offline_without_errors_and_shows_every_figure(
    chromium: Chromium, gss_holdout: Holdout, tmp_path: Path
) -> None:
    page, rendered = report_of(gss_holdout, decision_on(gss_holdout, GatesSpec()))
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    load = chromium.load(path)
    assert load.url == path.resolve().as_uri()
    assert load.errors == []
    assert load.external_requests == []
    assert load.dialogs == []
    assert load.scripts == 0
    assert [i["alt"] for i in load.images] == [f.title for f in rendered]
    for image, figure in zip(load.images, rendered, strict=True):
        assert image["complete"], figure.name
        assert (image["naturalWidth"], image["naturalHeight"]) == figure.size, figure.name
    assert "PROMOTED" in load.text and "min_roc_auc" in load.text


def test_values_from_the_data_stay_text_in_the_browser(chromium: Chromium, tmp_path: Path) -> None:
    page, rendered = hostile_report()
    path = tmp_path / "hostile.html"
    path.write_text(page, encoding="utf-8")
    load = chromium.load(path)
    assert (load.errors, load.dialogs, load.external_requests, load.scripts) == ([], [], [], 0)
    assert [i["alt"] for i in load.images] == [f.title for f in rendered]
    assert all(i["naturalWidth"] > 0 for i in load.images)
    for written in HOSTILE_TEXTS:
        assert written in load.text, written


class _Counting(http.server.BaseHTTPRequestHandler):
    paths: list[str]

    def do_GET(self) -> None:
        self.paths.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def loopback_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 that records the paths asked of it."""
    handler = type("Handler", (_Counting,), {"paths": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.paths
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_browser_check_sees_what_a_broken_report_would_do(
    chromium: Chromium, loopback_server: tuple[str, list[str]], tmp_path: Path
) -> None:
    """The checks above can fail: a script error, a dialog, a network request and an image that
    does not decode are each seen."""
    base, asked = loopback_server
    path = tmp_path / "broken.html"
    path.write_text(
        "<!DOCTYPE html><html><body>"
        f'<img alt="remote" src="{base}/tracker.png">'
        '<img alt="truncated" src="data:image/png;base64,iVBORw0KGgo=">'
        "<script>alert('hello')</script>"
        "<script>throw new Error('boom')</script>"
        "</body></html>",
        encoding="utf-8",
    )
    load = chromium.load(path)
    assert load.external_requests == [f"{base}/tracker.png"]
    assert asked == ["/tracker.png"]
    assert load.dialogs == ["alert: hello"]
    assert any("boom" in e for e in load.errors), load.errors
    assert [(i["alt"], i["naturalWidth"]) for i in load.images] == [("remote", 0), ("truncated", 0)]
    assert load.scripts == 2
