"""The server's Prometheus metrics, rendered as the text exposition format (version 0.0.4).

Written out rather than through prometheus_client (not a dependency): a handful of counters, one
gauge per alias and one latency histogram, updated by the event loop and the background threads
under one lock (held for a few additions), so a scrape sees one consistent moment.
"""

from __future__ import annotations

import bisect
import threading

# Seconds; dense below 10 ms, where a one-row request should land.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    def __init__(self, model: str) -> None:
        self.model = model
        self._lock = threading.Lock()
        self.requests: dict[int, int] = {}  # by HTTP status
        self.rows = 0
        self.canary_rows = 0
        self.shadow_rows = 0
        self.follow_ups_dropped = 0
        self.swaps: dict[str, int] = {}
        self.alias_errors: dict[str, int] = {}
        self.versions: dict[str, str] = {}
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._latency_count = 0

    def observe(self, status: int, seconds: float, *, rows: int = 0, canary: int = 0) -> None:
        """One finished /invocations request."""
        with self._lock:
            self.requests[status] = self.requests.get(status, 0) + 1
            self.rows += rows
            self.canary_rows += canary
            self._buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._latency_sum += seconds
            self._latency_count += 1

    def shadow(self, rows: int) -> None:
        with self._lock:
            self.shadow_rows += rows

    def dropped(self) -> None:
        with self._lock:
            self.follow_ups_dropped += 1

    def swapped(self, alias: str, old: str | None, new: str) -> None:
        with self._lock:
            self.swaps[alias] = self.swaps.get(alias, 0) + 1
            self.versions[alias] = new

    def alias_error(self, alias: str, error: Exception) -> None:
        with self._lock:
            self.alias_errors[alias] = self.alias_errors.get(alias, 0) + 1

    def render(self) -> bytes:
        m = f'model="{self.model}"'
        with self._lock:
            lines = [
                "# HELP mlops_serve_requests_total Finished /invocations requests by HTTP status.",
                "# TYPE mlops_serve_requests_total counter",
                *(f'mlops_serve_requests_total{{{m},code="{c}"}} {n}' for c, n in sorted(self.requests.items())),
                "# HELP mlops_serve_errors_total Refused or failed /invocations requests (status >= 400).",
                "# TYPE mlops_serve_errors_total counter",
                f"mlops_serve_errors_total{{{m}}} {sum(n for c, n in self.requests.items() if c >= 400)}",
                "# HELP mlops_serve_rows_total Rows scored.",
                "# TYPE mlops_serve_rows_total counter",
                f"mlops_serve_rows_total{{{m}}} {self.rows}",
                "# HELP mlops_serve_canary_rows_total Rows answered by the challenger (canary).",
                "# TYPE mlops_serve_canary_rows_total counter",
                f"mlops_serve_canary_rows_total{{{m}}} {self.canary_rows}",
                "# HELP mlops_serve_shadow_rows_total Rows the challenger scored in shadow, off the response path.",
                "# TYPE mlops_serve_shadow_rows_total counter",
                f"mlops_serve_shadow_rows_total{{{m}}} {self.shadow_rows}",
                "# HELP mlops_serve_follow_ups_dropped_total Requests whose shadow scoring and log entry were "
                "dropped because the background queue was full.",
                "# TYPE mlops_serve_follow_ups_dropped_total counter",
                f"mlops_serve_follow_ups_dropped_total{{{m}}} {self.follow_ups_dropped}",
                "# HELP mlops_serve_model_version The registered version each alias is served by.",
                "# TYPE mlops_serve_model_version gauge",
                *(
                    f'mlops_serve_model_version{{{m},alias="{a}",version="{v}"}} {_number(v)}'
                    for a, v in sorted(self.versions.items())
                ),
                "# HELP mlops_serve_model_swaps_total Versions swapped in, per alias.",
                "# TYPE mlops_serve_model_swaps_total counter",
                *(f'mlops_serve_model_swaps_total{{{m},alias="{a}"}} {n}' for a, n in sorted(self.swaps.items())),
                "# HELP mlops_serve_alias_errors_total Failed polls or loads of an alias (the old model kept serving).",
                "# TYPE mlops_serve_alias_errors_total counter",
                *(
                    f'mlops_serve_alias_errors_total{{{m},alias="{a}"}} {n}'
                    for a, n in sorted(self.alias_errors.items())
                ),
                "# HELP mlops_serve_request_duration_seconds Time from request received to response sent.",
                "# TYPE mlops_serve_request_duration_seconds histogram",
            ]
            total = 0
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self._buckets, strict=True):
                total += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(f'mlops_serve_request_duration_seconds_bucket{{{m},le="{le}"}} {total}')
            lines.append(f"mlops_serve_request_duration_seconds_sum{{{m}}} {self._latency_sum!r}")
            lines.append(f"mlops_serve_request_duration_seconds_count{{{m}}} {self._latency_count}")
        return ("\n".join(lines) + "\n").encode()


def _number(version: str) -> str:
    return version if version.isdigit() else "0"
