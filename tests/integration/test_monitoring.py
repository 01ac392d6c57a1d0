"""The monitor flow on generated traffic sent through the real API: a steady stream raises no
alert, new users rating one genre low raise the drift and fallback alerts, a stale model drops
the online hit rate; results go to MLflow, the report, the history, the alert log, a webhook,
the API's /monitoring view; `movierec monitor` prints the JSON and exits 3 on alert."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pytest
import traffic
from cli_runs import movierec
from fastapi.testclient import TestClient
from receiver import Receiver
from registered import register_champion

from flows.monitor import SETTLE
from movierec.data.impressions import ImpressionStore
from movierec.serving.app import create_app
from movierec.settings import get_settings

pytestmark = pytest.mark.usefixtures("prefect_api")

JSON_KEYS = {"champion_version", "window", "metrics", "alerts"}


@pytest.fixture
def champion(home, monkeypatch):
    monkeypatch.setenv("MOVIEREC_SERVING__WRITE_REQUESTS_PER_MINUTE", "0")  # the generated clients are one address
    return register_champion()


def _serve(send) -> int:
    """Run `send(client)` against the API (its lifespan: the recorder writes on the way out);
    how many requests it made."""
    with TestClient(create_app(get_settings(), watch=False)) as client:
        send(client)
    time.sleep(SETTLE.total_seconds() + 0.1)  # a monitor run now covers it all
    return int(ImpressionStore(get_settings().impressions_db).read_stats()["requests"].sum())


def _monitor(since: datetime | None) -> dict:
    from flows.monitor import monitor

    result = monitor(since=since)
    assert set(result) >= JSON_KEYS
    json.dumps({key: result[key] for key in JSON_KEYS})  # what --json prints is JSON
    return result


def _alerted(result: dict) -> set[str]:
    return {alert["metric"] for alert in result["alerts"]}


def test_a_steady_stream_raises_no_alert_and_every_record_is_written(champion, home):
    start = datetime.now(UTC)
    requests = _serve(lambda client: traffic.steady(client, champion, 80, np.random.default_rng(1)))
    result = _monitor(start)

    metrics = result["metrics"]
    assert result["champion_version"] == champion.version and result["alerts"] == []
    assert result["window"]["source"] == "--since" and result["window"]["since"] == start.isoformat()
    assert metrics["drift.rating_events"] == 480 and metrics["drift.unknown_user_share"] == 0.0
    assert metrics["drift.rating_psi"] < 0.1 and metrics["drift.genre_psi"] < 0.2
    assert metrics["drift.schema_failures"] == 0 and metrics["drift.quarantined_events"] == 0
    # Serving health from the statistics the API stored: every request of the traffic, none failed.
    assert metrics["health.requests"] == requests == 80 + 80 * 6 and metrics["health.error_rate"] == 0.0
    assert 0 < metrics["health.latency_p50_ms"] <= metrics["health.latency_p99_ms"]
    assert metrics["health.impressions"] == 80 and metrics["health.fallback_share"] == 0.0
    # Every user liked a movie shown to them: each impression is a hit.
    assert metrics["online.impressions_evaluated"] == 80 and metrics["online.hit_rate@10"] == 1.0
    assert metrics["online.registration_hit_rate@10"] > 0 and metrics["online.click_through"] is None
    assert metrics["offline.users"] == 80 and metrics["offline.registration_ndcg@10"] > 0
    assert 0 < metrics["served.coverage"] < 1 and metrics["served.popularity_lift"] > 1
    assert 0 <= metrics["champion.age_days"] < 1

    # MLflow: one run in the monitoring experiment, tagged with the champion version.
    settings = get_settings()
    found = mlflow.search_runs(experiment_names=[settings.monitoring.experiment_name], output_format="list")
    assert [run.info.run_id for run in found] == [result["run_id"]]
    run = found[0]
    assert run.data.tags["champion_version"] == champion.version and run.data.tags["alerts"] == "0"
    assert run.data.metrics["online.hit_rate_at_10"] == 1.0 and run.data.metrics["health.requests"] == requests
    assert {artifact.path for artifact in mlflow.MlflowClient().list_artifacts(run.info.run_id, "monitoring")} == {
        "monitoring/result.json", "monitoring/distributions.json", "monitoring/report.html",
    }  # fmt: skip
    # The report, the history; no alert logged.
    report = Path(result["report"])
    assert report.is_file() and (settings.monitoring_dir / "latest.html").read_text() == report.read_text()
    assert "No alert" in report.read_text() and "data:image/png;base64," in report.read_text()
    assert not (settings.monitoring_dir / "alerts.jsonl").exists()

    # The next run starts where this one ended; an empty window measures nothing and alerts nothing.
    again = _monitor(None)
    assert again["window"]["source"] == "last monitor run" and again["window"]["since"] == result["window"]["until"]
    assert again["metrics"]["drift.rating_events"] == 0 and again["metrics"]["drift.rating_psi"] is None
    assert again["alerts"] == []

    # A new champion since: the next window starts at its registration, not where the last run
    # ended (what came in between may be its training data, and the old version served it).
    newer = register_champion(epochs=6)
    third = _monitor(None)
    assert third["champion_version"] == newer.version != champion.version
    assert third["window"]["source"] == "champion registration (after last monitor run)"
    assert third["window"]["since"] > again["window"]["until"]

    # The API's monitoring view: the runs, the current (no) alerts, the champion's age.
    with TestClient(create_app(settings, watch=False)) as client:
        view = client.get("/monitoring").json()
        for runs in (0, 1001, "many"):  # a bad count is refused, naming the parameter
            refused = client.get("/monitoring", params={"runs": runs})
            assert refused.status_code == 422 and "runs" in refused.json()["detail"]
        page = client.get("/monitoring/report")
    assert [run["until"] for run in view["runs"]] == [run["window"]["until"] for run in (result, again, third)]
    assert view["runs"][0]["metrics"]["online.hit_rate@10"] == 1.0 and view["alerts"] == []
    assert view["champion"]["version"] == newer.version and 0 <= view["champion"]["age_days"] < 1
    assert view["report"] == "/monitoring/report" and page.status_code == 200
    assert page.text == (settings.monitoring_dir / "latest.html").read_text() == Path(third["report"]).read_text()


def test_new_users_rating_one_genre_low_raise_the_drift_and_fallback_alerts(champion, home, monkeypatch):
    from prefect.client.orchestration import get_client

    from movierec.deploy import DEFAULT_PREFECT_FILE, deploy

    deploy(DEFAULT_PREFECT_FILE, names=["retrain-manual"])
    start = datetime.now(UTC) - timedelta(seconds=1)
    rng = np.random.default_rng(2)

    def send(client) -> None:
        traffic.steady(client, champion, 30, rng)
        traffic.new_users_one_genre(client, champion, 60, "Horror", rng)

    _serve(send)
    with Receiver([500]) as receiver:  # the first delivery fails, the retry is accepted
        monkeypatch.setenv("MOVIEREC_MONITORING__WEBHOOK_URL", receiver.url)
        monkeypatch.setenv("MOVIEREC_MONITORING__WEBHOOK_BACKOFF_SECONDS", "0.05")
        monkeypatch.setenv("MOVIEREC_MONITORING__RETRAIN_ON_ALERT", "true")
        result = _monitor(start)

    metrics = result["metrics"]
    assert {"drift.rating_psi", "health.fallback_share", "drift.unknown_user_share"} <= _alerted(result)
    assert metrics["drift.rating_psi"] > 0.2 and metrics["drift.mean_rating"] < 2.5
    assert metrics["health.fallback_share"] == pytest.approx(60 / 90)
    assert metrics["drift.unknown_user_share"] == pytest.approx(300 / (30 * 6 + 300))
    fallback = next(alert for alert in result["alerts"] if alert["metric"] == "health.fallback_share")
    assert fallback["threshold"] == 0.3 and fallback["value"] == metrics["health.fallback_share"]
    assert "popularity fallback" in fallback["message"]

    # The webhook got the alerts (after one retry), the alert log one line per alert.
    assert result["webhook_delivered"] is True and len(receiver.bodies) == 2
    payload = receiver.bodies[-1][1]
    assert payload["champion_version"] == champion.version and payload["alerts"] == result["alerts"]
    logged = [json.loads(line) for line in (get_settings().monitoring_dir / "alerts.jsonl").read_text().splitlines()]
    assert [line["metric"] for line in logged] == [alert["metric"] for alert in result["alerts"]]
    assert {line["run_id"] for line in logged} == {result["run_id"]}

    # A Prefect server is configured (the tests' own): the retrain deployment was triggered.
    assert result["retrain"].startswith("triggered deployment retrain/retrain-manual")
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("retrain/retrain-manual")
        runs = client.read_flow_runs(limit=50)
    triggered = [run for run in runs if run.deployment_id == deployment.id and run.name in result["retrain"]]
    assert len(triggered) == 1 and triggered[0].parameters == {"dataset": "synthetic"}


def test_a_stale_model_drops_the_online_hit_rate(champion, home):
    start = datetime.now(UTC) - timedelta(seconds=1)
    _serve(lambda client: traffic.stale(client, champion, 80, np.random.default_rng(3)))
    result = _monitor(start)
    metrics = result["metrics"]
    assert metrics["online.impressions_evaluated"] >= 50 and metrics["online.hit_rate@10"] == 0.0
    alert = next(alert for alert in result["alerts"] if alert["metric"] == "online.hit_rate@10")
    assert alert["threshold"] == pytest.approx(0.5 * metrics["online.registration_hit_rate@10"])
    assert "online.hit_rate@10" in _alerted(result) and "offline.ndcg@10" in _alerted(result)
    # The users and their rating values are as before: no drift alert.
    assert not {"drift.rating_psi", "drift.unknown_user_share", "health.fallback_share"} & _alerted(result)


def _cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return movierec(home, "monitor", *args, **env)


@pytest.mark.slow
def test_the_command_prints_json_and_exits_3_on_alert(home, tmp_path, monkeypatch):
    assert _cli(home, "--since", "yesterday").returncode == 2
    nothing = _cli(home)
    assert nothing.returncode == 1 and "no champion of 'movierec-lightfm' to monitor yet" in nothing.stderr

    monkeypatch.setenv("MOVIEREC_SERVING__WRITE_REQUESTS_PER_MINUTE", "0")
    champion = register_champion()
    _serve(lambda client: traffic.new_users_one_genre(client, champion, 60, "Drama", np.random.default_rng(4)))
    result = _cli(home, "--since", "1h", "--json", "--fail-on-alert", MOVIEREC_MONITORING__RETRAIN_ON_ALERT="true")
    assert result.returncode == 3, result.stderr
    printed = json.loads(result.stdout)
    assert set(printed) == JSON_KEYS and printed["champion_version"] == champion.version
    assert {"drift.rating_psi", "health.fallback_share"} <= _alerted(printed)
    # An hour back reaches before the champion's registration: the window starts there.
    assert printed["window"]["source"] == "champion registration (after --since)" and printed["window"]["days"] < 0.01
    # No Prefect server configured: the command says how to retrain.
    assert "to retrain, run: movierec pipeline --dataset synthetic" in result.stderr
    # Without --fail-on-alert the same alerts exit 0, and the summary is a table.
    summary = _cli(home, "--since", "1h")
    assert summary.returncode == 0 and "ALERT health.fallback_share" in summary.stderr and "report:" in summary.stderr
