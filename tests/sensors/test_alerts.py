"""The check alert sensor against a real webhook receiver on 127.0.0.1 that fails, is slow,
never answers or redirects: what it received is asserted exactly, counted per check record."""

from __future__ import annotations

import time
from collections import Counter

import dagster as dg
import pytest

from resources.alerts import AlertDeliveryError, AlertSink
from tests.assets.pipeline_harness import Harness
from tests.conftest import SLICE_YEARS, write_gss_pipeline
from tests.sensors.http_sink import Sink, http_sink

NAME = "gss_slice"
DRIFT = dg.AssetCheckKey(dg.AssetKey([NAME, "drift_report"]), "drift_within_tolerance")
PARITY = dg.AssetCheckKey(dg.AssetKey([NAME, "predictions"]), "parity_gap_within_limit")
AGE = dg.AssetCheckKey(dg.AssetKey([NAME, "validated_batch"]), "age_in_range")


@pytest.fixture(scope="module")
def defs_only(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    """The definitions of the GSS slice pipeline; each test brings its own empty instance."""
    root = tmp_path_factory.mktemp("alerts")
    return Harness(root / "home", write_gss_pipeline(root, SLICE_YEARS), NAME)


class Alerting:
    """The real alert sensor on a fresh instance, ticked with the cursor the daemon would keep."""

    def __init__(self, h: Harness, sink: AlertSink) -> None:
        self.h = h
        self.instance = dg.DagsterInstance.ephemeral()
        self.sink = sink
        self.cursor: str | None = None
        self.sensor = h.defs.get_sensor_def(f"{NAME}_check_alert_sensor")

    def fail(self, key: dg.AssetCheckKey, batch: str, *, passed: bool = False, description: str = "") -> None:
        self.instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(
                asset_key=key.asset_key,
                check_name=key.name,
                passed=passed,
                metadata={"batch": batch},
                description=description or None,
            )
        )

    def tick(self) -> str:
        """One tick; returns its skip message. A tick that raises keeps the cursor, as in the daemon."""
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources={**self.h.resources, "alerts": self.sink},
            definitions=self.h.defs,
        )
        data = self.sensor.evaluate_tick(context)
        self.cursor = data.cursor
        return data.skip_message or ""


def received(sink: Sink) -> Counter[int]:
    return Counter(body["record_id"] for body in sink.delivered())


def test_each_failed_check_is_alerted_once_with_what_failed(defs_only: Harness) -> None:
    with http_sink() as sink:
        a = Alerting(defs_only, AlertSink(webhook_url=sink.url))
        a.fail(DRIFT, "2010", description="62% of columns drifted")
        a.fail(DRIFT, "2012", passed=True)
        a.fail(PARITY, "2012", description="demographic_parity_difference 0.154 exceeds limit 0.12")
        a.fail(AGE, "2014")
        a.fail(AGE, "2016", passed=True)
        assert a.tick() == "sent 3 alert(s) for 5 new check result(s)"
        assert a.tick() == "no new check result"
    bodies = sink.delivered()
    assert len(sink.posts()) == 3
    assert [(b["check"], b["batch"]) for b in bodies] == [
        ("drift_within_tolerance", "2010"),
        ("parity_gap_within_limit", "2012"),
        ("age_in_range", "2014"),
    ]
    assert bodies[0]["text"] == "gss_slice: check drift_within_tolerance failed on batch 2010: 62% of columns drifted"
    assert bodies[0]["check_key"] == "gss_slice/drift_report:drift_within_tolerance"
    assert bodies[1]["description"] == "demographic_parity_difference 0.154 exceeds limit 0.12"
    assert sorted(received(sink).values()) == [1, 1, 1]


def test_a_failing_webhook_delays_alerts_and_loses_none(defs_only: Harness) -> None:
    # POSTs 0 and 3 fail: the first tick delivers nothing and fails; the second delivers two
    # and stops at the failure; the third delivers the rest.
    with http_sink(lambda n: "fail" if n in (0, 3) else "ok") as sink:
        a = Alerting(defs_only, AlertSink(webhook_url=sink.url))
        for batch in ("2010", "2012", "2014", "2016", "2018"):
            a.fail(DRIFT, batch)
        with pytest.raises(
            Exception, match=r"5 alert\(s\) wait for delivery: alert webhook http://127.0.0.1:\d+/… answered HTTP 500"
        ):
            a.tick()
        assert a.cursor is None
        second = a.tick()
        assert second.startswith(
            "sent 2 alert(s) for 5 new check result(s); 3 wait for the next tick (the webhook failed"
        )
        assert a.tick() == "sent 3 alert(s) for 3 new check result(s)"
        assert a.tick() == "no new check result"
    assert [r.status for r in sink.posts()] == [500, 200, 200, 500, 200, 200, 200]
    assert [b["batch"] for b in sink.delivered()] == ["2010", "2012", "2014", "2016", "2018"]
    assert sorted(received(sink).values()) == [1] * 5


def test_a_slow_webhook_keeps_each_tick_within_its_budget(defs_only: Harness) -> None:
    with http_sink(lambda n: "slow", delay=0.5) as sink:
        a = Alerting(defs_only, AlertSink(webhook_url=sink.url, timeout_seconds=3, tick_budget_seconds=4))
        for batch in range(2000, 2010):
            a.fail(DRIFT, str(batch))
        durations, messages = [], []
        while len(sink.delivered()) < 10 and len(durations) < 20:
            started = time.monotonic()
            messages.append(a.tick())
            durations.append(time.monotonic() - started)
    assert max(durations) < 4 + 1, durations
    assert len(durations) >= 3, messages  # at most three half-second deliveries fit a 4 s budget with 3 s timeouts
    assert "wait for the next tick (the tick's 4s budget ran out)" in messages[0]
    assert len(sink.posts()) == 10
    assert [b["batch"] for b in sink.delivered()] == [str(b) for b in range(2000, 2010)]


def test_a_webhook_that_never_answers_costs_one_timeout_per_tick(defs_only: Harness) -> None:
    with http_sink(lambda n: "hang" if n == 0 else "ok") as sink:
        a = Alerting(defs_only, AlertSink(webhook_url=sink.url, timeout_seconds=1, tick_budget_seconds=10))
        a.fail(DRIFT, "2010")
        started = time.monotonic()
        with pytest.raises(Exception, match=r"did not answer within 1\.0s"):
            a.tick()
        assert time.monotonic() - started < 3
        assert a.tick() == "sent 1 alert(s) for 1 new check result(s)"
    # The unanswered POST may have reached someone: delivery is at least once, by record id.
    assert [r.status for r in sink.posts()] == [None, 200]
    assert [b["record_id"] for b in (r.body for r in sink.posts())] == [sink.delivered()[0]["record_id"]] * 2


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_a_delivery(defs_only: Harness, code: int) -> None:
    with http_sink(lambda n: "redirect" if n == 0 else "ok", redirect_code=code) as sink:
        a = Alerting(defs_only, AlertSink(webhook_url=sink.url))
        a.fail(DRIFT, "2010")
        with pytest.raises(Exception, match=rf"answered HTTP {code} \(redirect to .*\); a redirect is not a delivery"):
            a.tick()
        assert a.tick() == "sent 1 alert(s) for 1 new check result(s)"
    assert [(r.method, r.path, r.status) for r in sink.requests] == [("POST", "/hook", code), ("POST", "/hook", 200)]


def test_an_outage_longer_than_any_window_loses_no_alert(defs_only: Harness) -> None:
    with http_sink(lambda n: "fail" if n < 3 else "ok") as sink:
        a = Alerting(defs_only, AlertSink(webhook_url=sink.url))
        for i in range(120):
            a.fail(DRIFT, str(1900 + i))
        for _ in range(3):
            with pytest.raises(Exception, match="120 alert"):
                a.tick()
        assert a.tick() == "sent 120 alert(s) for 120 new check result(s)"
    assert len(sink.posts()) == 123
    assert [b["batch"] for b in sink.delivered()] == [str(1900 + i) for i in range(120)]
    assert sorted(received(sink).values()) == [1] * 120


def test_text_taken_from_data_and_file_names_is_escaped_for_slack(defs_only: Harness) -> None:
    with http_sink() as sink:
        a = Alerting(defs_only, AlertSink(webhook_url=sink.url))
        a.fail(DRIFT, "<!channel>", description="share > limit & rising")
        a.tick()
    (body,) = sink.delivered()
    assert body["text"] == (
        "gss_slice: check drift_within_tolerance failed on batch &lt;!channel&gt;: share &gt; limit &amp; rising"
    )
    assert body["batch"] == "<!channel>"


def test_without_a_webhook_alerts_go_to_the_log_only(defs_only: Harness, capfd: pytest.CaptureFixture[str]) -> None:
    a = Alerting(defs_only, AlertSink())
    a.fail(DRIFT, "2010")
    a.fail(AGE, "2012")
    capfd.readouterr()
    assert a.tick() == "sent 2 alert(s) for 2 new check result(s)"
    alerts = [
        line.split(" - WARNING - ", 1)[1]
        for line in capfd.readouterr().err.splitlines()
        if " - WARNING - ALERT " in line
    ]
    assert alerts == [
        "ALERT gss_slice: check drift_within_tolerance failed on batch 2010",
        "ALERT gss_slice: check age_in_range failed on batch 2012",
    ]


def test_send_refuses_a_redirect_without_following_it() -> None:
    import logging

    with http_sink(lambda n: "redirect", redirect_code=303) as sink:
        with pytest.raises(AlertDeliveryError, match="HTTP 303"):
            AlertSink(webhook_url=sink.url).send(logging.getLogger("t"), "x", {})
    assert [r.method for r in sink.requests] == ["POST"]


def test_a_failed_attribution_drift_check_is_alerted(defs_only: Harness) -> None:
    attribution = dg.AssetCheckKey(dg.AssetKey([NAME, "attributions"]), "attribution_drift")
    with http_sink() as sink:
        a = Alerting(defs_only, AlertSink(webhook_url=sink.url))
        a.fail(attribution, "2010", description="nDCG 0.812 < 0.9: age fell from rank 1 to rank 4")
        a.fail(attribution, "2012", passed=True)
        assert a.tick() == "sent 1 alert(s) for 2 new check result(s)"
    (body,) = sink.delivered()
    assert (body["check"], body["batch"]) == ("attribution_drift", "2010")
    assert body["check_key"] == "gss_slice/attributions:attribution_drift"
