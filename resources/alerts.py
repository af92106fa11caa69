"""Where alerts go: the Dagster log always, and a webhook when one is configured."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import dagster as dg
from pydantic import Field

ALERT_WEBHOOK_ENV = "MLOPS_ALERT_WEBHOOK"

# Slack reads these three as markup in `text` (`<!channel>`, `<url|label>`); escaped they show as typed.
_SLACK_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def slack_escape(text: str) -> str:
    """``text`` as Slack shows it literally: ``&``, ``<`` and ``>`` become entities."""
    return text.translate(_SLACK_ESCAPES)


class AlertDeliveryError(RuntimeError):
    """The webhook did not take the alert (an error, a redirect, no answer in time)."""


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would re-send a POST answered 301/302/303 as a GET without its body and report the
    # GET's 200; returning None makes the redirect an HTTPError instead.
    def redirect_request(self, req, fp, code, msg, headers, newurl) -> None:  # noqa: ANN001
        return None


_OPENER = urllib.request.build_opener(_RefuseRedirects)


class AlertSink(dg.ConfigurableResource):
    """Posts each alert as JSON to ``webhook_url``: Slack-compatible ``text`` (escaped) plus the
    details, among them ``record_id``, by which a receiver can drop the rare repeat (delivery is
    at least once).
    """

    webhook_url: str = Field(default="", description=f"Set through the {ALERT_WEBHOOK_ENV} environment variable.")
    timeout_seconds: float = Field(default=5.0, gt=0, description="Longest wait for one delivery.")
    tick_budget_seconds: float = Field(
        default=20.0,
        gt=0,
        description="Longest a sensor tick spends delivering; what is left waits for the next tick. "
        "Dagster gives a tick 60 s.",
    )

    def send(self, log: Any, text: str, details: dict[str, Any], *, deadline: float | None = None) -> None:
        """Logs the alert and posts it to the webhook, if any, by ``deadline`` (``time.monotonic``).

        Raises:
            AlertDeliveryError: the webhook answered anything but 2xx (a redirect included: it is
                not followed), could not be reached, or did not answer in time.
        """
        log.warning("ALERT %s", text)
        if not self.webhook_url:
            return
        limit = self.timeout_seconds if deadline is None else min(self.timeout_seconds, deadline - time.monotonic())
        if limit <= 0:
            raise AlertDeliveryError("no time left in this tick to deliver the alert")
        body = json.dumps({"text": slack_escape(text), **details}, default=str).encode()
        request = urllib.request.Request(
            self.webhook_url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        outcome: list[BaseException | int] = []

        def post() -> None:
            try:
                with _OPENER.open(request, timeout=limit) as response:
                    outcome.append(response.status)
            except BaseException as e:  # handed to the caller's thread below
                outcome.append(e)

        # The socket timeout bounds each read, not the whole answer: a server that trickles its
        # answer could hold a tick past Dagster's limit. The worker thread is abandoned instead.
        worker = threading.Thread(target=post, name="alert-webhook", daemon=True)
        worker.start()
        worker.join(limit)
        where = _redacted(self.webhook_url)
        if not outcome:
            raise AlertDeliveryError(f"alert webhook {where} did not answer within {limit:.1f}s")
        result = outcome[0]
        if isinstance(result, urllib.error.HTTPError):
            if 300 <= result.code < 400:
                target = result.headers.get("Location", "?") if result.headers else "?"
                raise AlertDeliveryError(
                    f"alert webhook {where} answered HTTP {result.code} (redirect to {_redacted(target)}); a "
                    f"redirect is not a delivery and is not followed for a POST: set {ALERT_WEBHOOK_ENV} to the "
                    "final URL"
                ) from result
            raise AlertDeliveryError(f"alert webhook {where} answered HTTP {result.code}") from result
        if isinstance(result, BaseException):
            raise AlertDeliveryError(f"alert webhook {where} could not be reached: {result}") from result
        if not 200 <= result < 300:
            raise AlertDeliveryError(f"alert webhook {where} answered HTTP {result}")


def _redacted(url: str) -> str:
    """Scheme, host and port only: webhook paths (Slack's included) carry the secret."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…" if parts.netloc else "(relative URL)"
