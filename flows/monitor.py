"""Flow `monitor`: how the served champion and the data it meets are doing, over a window.

    load the champion: its served bundle and the statistics of its training data (stored with
      the version at registration: the training data is never read again)
      -> window: from --since, else where the last monitor run ended, else the registration
      -> read the window: feedback received, impressions shown, the API's stored request
         statistics, snapshot ratings newer than the champion's data
      -> check the window's ratings with the ingestion suites (Great Expectations)
      -> measure: data drift, serving health, online quality, offline quality on fresh
         ratings, beyond accuracy of what was shown (movierec.monitoring.measures)
      -> alerts: thresholds of the `monitoring` settings
      -> publish: an MLflow run in the monitoring experiment, the HTML report, the history and
         the alert log; a Prefect markdown artifact
      -> deliver alerts (log, webhook) and act (`monitoring.retrain_on_alert`)

It changes nothing the API serves: it reads the stores and writes only its own records.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pandas as pd
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from movierec.errors import DataError
from movierec.monitoring import alerts as alerting
from movierec.monitoring.measures import measure
from movierec.monitoring.report import shown
from movierec.settings import get_settings
from movierec.tracking import runs
from tasks.monitor import (
    check_ratings,
    deliver_alerts,
    load_champion,
    monitoring_window,
    observe,
    publish,
    retrain_on_alert,
)

log = logging.getLogger("movierec")
SCHEMA_METRIC = "drift.schema_failures"
# The window ends this long before now: the API writes impressions every 0.2 s from a queue, so a
# list shown in the last instant may not be stored yet; it belongs to the next window.
SETTLE = timedelta(seconds=2)


@flow(
    name="monitor",
    description="Drift, serving health, online and offline quality of the champion over a window; alerts.",
    persist_result=True,
)
def monitor(since: datetime | None = None) -> dict:
    """The run's result: champion_version, window, metrics, alerts (what `movierec monitor --json`
    prints), plus run_id, report, webhook_delivered and retrain (what was done on alert)."""
    settings = get_settings()
    until = datetime.now(UTC) - SETTLE
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    if since is not None and since >= until:
        raise DataError(f"--since {since.isoformat()} is not before now ({until.isoformat()})")
    runs.configure(settings)

    champion = load_champion(settings)
    # The cutoff the champion was measured at when registered: its values are the yardstick.
    k = int(champion.reference.get("k", settings.training.k))
    window = monitoring_window(settings, since, until, champion.registered_at)
    observed = observe(settings, champion, window)
    observed.schema_failures = check_ratings(settings, champion, observed)
    metrics, distributions = measure(
        champion.reference,
        champion.bundle,
        observed,
        window,
        k=k,
        attribution=pd.Timedelta(hours=settings.monitoring.attribution_hours),
        registered_at=champion.registered_at,
    )
    alerts = alerting.evaluate(metrics, settings.monitoring, k)
    for alert in alerts:
        if alert["metric"] == SCHEMA_METRIC:  # say which expectations failed
            alert["message"] += ": " + "; ".join(observed.schema_failures[:3])
    result = {"champion_version": champion.version, "window": window.as_dict(), "metrics": metrics, "alerts": alerts}

    published = publish(settings, champion, result, distributions)
    create_markdown_artifact(
        markdown=summary_markdown(result, published["report"]),
        key="monitoring",
        description=f"monitor run of champion version {champion.version}",
    )
    delivered = deliver_alerts(settings, {**result, **published})
    retrain = retrain_on_alert(settings, champion, result)
    return {**result, **published, "webhook_delivered": delivered, "retrain": retrain}


def summary_markdown(result: dict, report: str) -> str:
    """The Prefect artifact: alerts first, then the headline measures."""
    window = result["window"]
    lines = [
        f"# Monitoring: champion version {result['champion_version']}",
        f"Window {window['since']} to {window['until']} ({window['days']:.2f} days, start: {window['source']}).",
        "",
    ]
    if result["alerts"]:
        lines += [f"## {len(result['alerts'])} alert(s)", ""]
        lines += [f"- **{alert['metric']}**: {alert['message']}" for alert in result["alerts"]]
    else:
        lines.append("## No alert")
    lines += ["", "| measure | value |", "|---|---:|"]
    for name, value in result["metrics"].items():
        lines.append(f"| {name} | {shown(value)} |")
    lines += ["", f"Report: `{report}`"]
    return "\n".join(lines)
