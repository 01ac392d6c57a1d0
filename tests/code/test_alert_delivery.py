"""Where alerts go besides the log: the append-only alert log and a webhook on loopback that
fails, refuses or accepts (retries with backoff; a failure never raises)."""

from __future__ import annotations

import json

import pytest
from receiver import Receiver
from server import free_port

from movierec.monitoring.alerts import append_alert_log, post_webhook

ALERT = {"metric": "health.error_rate", "value": 0.05, "threshold": 0.01, "message": "5.00% of requests failed"}


def test_a_failing_receiver_is_retried_with_backoff_until_it_accepts():
    waits = []
    with Receiver([503, 500]) as receiver:
        delivered = post_webhook(
            receiver.url, {"alerts": [ALERT]}, retries=3, backoff_seconds=0.5, timeout_seconds=5, sleep=waits.append
        )
    assert delivered is True
    assert waits == [0.5, 1.0]  # two failures, then accepted
    assert len(receiver.bodies) == 3
    assert all(body == ("application/json", {"alerts": [ALERT]}) for body in receiver.bodies)


def test_a_refusal_is_not_retried_and_nothing_raises(caplog, capfd):
    waits = []
    with Receiver([400]) as receiver:
        assert (
            post_webhook(receiver.url, {"a": 1}, retries=3, backoff_seconds=1, timeout_seconds=5, sleep=waits.append)
            is False
        )
    assert len(receiver.bodies) == 1 and waits == []
    assert "refused the alerts: HTTP 400" in caplog.text + capfd.readouterr().err


def test_an_unreachable_webhook_fails_after_the_retries_without_raising(caplog, capfd):
    waits = []
    url = f"http://127.0.0.1:{free_port()}/nobody"
    assert post_webhook(url, {"a": 1}, retries=2, backoff_seconds=0.1, timeout_seconds=1, sleep=waits.append) is False
    assert waits == pytest.approx([0.1, 0.2])
    assert "failed (attempt 3 of 3)" in caplog.text + capfd.readouterr().err


def test_a_malformed_webhook_url_fails_without_raising(caplog, capfd):
    waits = []
    assert (
        post_webhook("not a url", {"a": 1}, retries=1, backoff_seconds=0.1, timeout_seconds=1, sleep=waits.append)
        is False
    )
    assert "alert webhook not a url failed" in caplog.text + capfd.readouterr().err and waits == []


def test_the_settings_refuse_a_webhook_that_is_not_an_http_url(monkeypatch):
    from movierec.errors import ConfigError
    from movierec.settings import get_settings

    monkeypatch.setenv("MOVIEREC_MONITORING__WEBHOOK_URL", "ftp://alerts.example/hook")
    with pytest.raises(ConfigError, match=r"monitoring.webhook_url .*MOVIEREC_MONITORING__WEBHOOK_URL"):
        get_settings()


def test_the_alert_log_only_grows(tmp_path):
    path = tmp_path / "monitoring" / "alerts.jsonl"
    append_alert_log(path, [ALERT], {"at": "2026-11-30T06:00:00+00:00", "champion_version": "3", "run_id": "r1"})
    append_alert_log(path, [], {"at": "2026-12-01T06:00:00+00:00"})  # a run without alerts writes nothing
    second = {**ALERT, "metric": "health.fallback_share"}
    append_alert_log(
        path, [ALERT, second], {"at": "2026-12-02T06:00:00+00:00", "champion_version": "4", "run_id": "r2"}
    )
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(line["run_id"], line["metric"]) for line in lines] == [
        ("r1", "health.error_rate"), ("r2", "health.error_rate"), ("r2", "health.fallback_share"),
    ]  # fmt: skip
    assert lines[0]["champion_version"] == "3" and lines[0]["threshold"] == 0.01
