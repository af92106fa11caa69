"""Where alerts go: the Dagster log always, and a webhook when one is configured."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import dagster as dg
from pydantic import Field

ALERT_WEBHOOK_ENV = "MLOPS_ALERT_WEBHOOK"


class AlertSink(dg.ConfigurableResource):
    """Posts each alert as JSON to ``webhook_url`` (Slack-compatible ``text`` plus the details).

    A webhook that fails raises: the sensor that sends it shows as failing instead of dropping
    the alert silently.
    """

    webhook_url: str = Field(default="", description=f"Set through the {ALERT_WEBHOOK_ENV} environment variable.")
    timeout_seconds: float = Field(default=5.0, description="Per request; sensors must stay fast.")

    def send(self, log: Any, text: str, details: dict[str, Any]) -> None:
        log.warning("ALERT %s", text)
        if not self.webhook_url:
            return
        body = json.dumps({"text": text, **details}, default=str).encode()
        request = urllib.request.Request(
            self.webhook_url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
            if response.status >= 300:
                raise RuntimeError(f"alert webhook answered HTTP {response.status}")
