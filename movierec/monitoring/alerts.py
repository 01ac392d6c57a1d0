"""Alerts: which measures crossed their threshold (`MonitoringSettings`), and where an alert goes
besides the log and the JSON output: an append-only alert log (JSON lines) and, optionally, a
webhook (POST JSON, retried with exponential backoff; a failure is logged, never raised).

A rule reads one measure. Its threshold is absolute (`*_max`, `*_min`) or a share of a
registration value (`*_min_ratio`: e.g. online hit rate below half of the champion's holdout hit
rate). A rule is silent when its measure is None (nothing to measure), when the measure rests on
fewer than `min_sample` observations (its `sample` measure), or when its threshold is null.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from movierec.monitoring.history import append_lines
from movierec.settings import MonitoringSettings

log = logging.getLogger("movierec")


@dataclass(frozen=True)
class Rule:
    metric: str  # "{k}" stands for the cutoff
    setting: str  # the threshold's key in MonitoringSettings
    below: bool  # True: alert when the measure is below the threshold; False: above
    message: str  # formatted with value and threshold
    sample: str | None = None  # the measure counting the observations behind it
    relative_to: str | None = None  # the threshold is the setting times this measure


RULES = (
    Rule("drift.rating_psi", "rating_psi_max", False, "rating values drifted from the training data (PSI {value:.3f} > {threshold:g})", "drift.rating_events"),
    Rule("drift.genre_psi", "genre_psi_max", False, "the genre mix of liked movies drifted from the training data (PSI {value:.3f} > {threshold:g})", "drift.positive_events"),
    Rule("drift.unknown_user_share", "unknown_user_share_max", False, "{value:.0%} of events come from users the champion does not know (> {threshold:.0%})", "drift.events"),
    Rule("drift.unknown_movie_share", "unknown_movie_share_max", False, "{value:.0%} of events are on movies the champion does not know (> {threshold:.0%})", "drift.events"),
    Rule("drift.ratings_per_day_ratio", "ratings_per_day_min_ratio", True, "ratings per day fell to {value:.2f} times the training data's (< {threshold:g})"),
    Rule("drift.ratings_per_day_ratio", "ratings_per_day_max_ratio", False, "ratings per day rose to {value:.2f} times the training data's (> {threshold:g})"),
    Rule("drift.schema_failures", "schema_failures_max", False, "the window's ratings fail {value:.0f} expectation(s) of the ingestion suites (> {threshold:g})"),
    Rule("health.fallback_share", "fallback_share_max", False, "{value:.0%} of lists were served by the popularity fallback (> {threshold:.0%})", "health.impressions"),
    Rule("health.error_rate", "error_rate_max", False, "{value:.2%} of requests failed with a server error (> {threshold:.2%})", "health.requests"),
    Rule("health.latency_p99_ms", "latency_p99_ms_max", False, "99th percentile latency {value:.0f} ms (> {threshold:g} ms)", "health.requests"),
    Rule("online.hit_rate@{k}", "online_hit_rate_min_ratio", True, "online hit rate@{k} {value:.3f} is below {threshold:.3f}, {ratio:g} of its value at registration", "online.impressions_evaluated", "online.registration_hit_rate@{k}"),
    Rule("offline.ndcg@{k}", "offline_ndcg_min_ratio", True, "NDCG@{k} on fresh ratings {value:.3f} is below {threshold:.3f}, {ratio:g} of its value at registration", "offline.users", "offline.registration_ndcg@{k}"),
    Rule("champion.age_days", "champion_max_age_days", False, "the champion was registered {value:.1f} days ago (> {threshold:g})"),
)  # fmt: skip


def evaluate(metrics: dict[str, float | None], settings: MonitoringSettings, k: int) -> list[dict]:
    """The alerts of a run: {"metric", "value", "threshold", "message"} per rule that fired."""
    fired = []
    for rule in RULES:
        name = rule.metric.format(k=k)
        value, setting = metrics.get(name), getattr(settings, rule.setting)
        if value is None or setting is None:
            continue
        if rule.sample is not None and (metrics.get(rule.sample) or 0) < settings.min_sample:
            continue
        threshold = float(setting)
        if rule.relative_to is not None:
            registered = metrics.get(rule.relative_to.format(k=k))
            if not registered:
                continue
            threshold = setting * registered
        if (value < threshold) if rule.below else (value > threshold):
            message = rule.message.format(value=value, threshold=threshold, ratio=setting, k=k)
            fired.append({"metric": name, "value": value, "threshold": threshold, "message": message})
    return fired


def append_alert_log(path: Path, alerts: list[dict], context: dict) -> None:
    """Append one JSON line per alert (with `context`: time, champion version, run id) and sync."""
    if alerts:
        append_lines(path, [{**context, **alert} for alert in alerts])


def post_webhook(
    url: str,
    payload: dict,
    *,
    retries: int,
    backoff_seconds: float,
    timeout_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """POST `payload` as JSON; retried `retries` times after a failure (connection error, timeout,
    5xx or 429), waiting backoff, 2 x backoff, ... Returns whether it was delivered; never raises."""
    body = json.dumps(payload, default=str).encode()
    try:
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "movierec"}
        )
    except ValueError as error:  # not a URL: retrying changes nothing
        log.warning("alert webhook %s failed: %s", url, error)
        return False
    for attempt in range(retries + 1):
        if attempt:
            sleep(backoff_seconds * 2 ** (attempt - 1))
        try:
            with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
                response.read()
            return True
        except urllib.error.HTTPError as error:
            problem = f"HTTP {error.code}"
            if error.code < 500 and error.code != 429:  # the receiver refuses it: retrying changes nothing
                log.warning("alert webhook %s refused the alerts: %s", url, problem)
                return False
        except (urllib.error.URLError, OSError, ValueError) as error:
            problem = str(getattr(error, "reason", error))
        log.warning("alert webhook %s failed (attempt %d of %d): %s", url, attempt + 1, retries + 1, problem)
    return False
