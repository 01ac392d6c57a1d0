"""Monitoring measures against hand-computed cases: latency percentiles from a histogram, serving
health, online quality of served lists, beyond-accuracy measures, data drift, alert rules."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from movierec.monitoring.alerts import evaluate
from movierec.monitoring.drift import data_drift
from movierec.monitoring.health import histogram_quantile, serving_health
from movierec.monitoring.quality import online_quality, served_lists
from movierec.settings import MonitoringSettings

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
INF = float("inf")


def test_histogram_quantile_interpolates_inside_the_bucket_as_prometheus():
    bounds, cumulative = (0.01, 0.1, INF), (50, 90, 100)
    # Rank 50 ends the first bucket [0, 0.01]; rank 75 is 25 of the 40 in (0.01, 0.1].
    assert histogram_quantile(0.5, bounds, cumulative) == pytest.approx(0.01)
    assert histogram_quantile(0.75, bounds, cumulative) == pytest.approx(0.01 + 0.09 * 25 / 40)
    assert histogram_quantile(0.9, bounds, cumulative) == pytest.approx(0.1)
    # In the +Inf bucket: the largest finite bound (a lower bound of the truth).
    assert histogram_quantile(0.95, bounds, cumulative) == pytest.approx(0.1)
    assert histogram_quantile(0.5, bounds, (0, 0, 0)) is None
    with pytest.raises(ValueError):
        histogram_quantile(1.5, bounds, cumulative)


def _stats(endpoint: str, requests: int, server_errors: int, latency: float, counts: list[int]) -> dict:
    return {
        "started_at": T0,
        "ended_at": T0 + timedelta(minutes=1),
        "endpoint": endpoint,
        "requests": requests,
        "client_errors": 1,
        "server_errors": server_errors,
        "latency_seconds": latency,
        "bucket_bounds": [0.01, 0.1, INF],
        "bucket_counts": counts,
    }


def _impressions(rows: list[tuple]) -> pd.DataFrame:
    """(id, minutes after T0, user or None, source, movies)."""
    return pd.DataFrame(
        {
            "impression_id": [row[0] for row in rows],
            "shown_at": [T0 + timedelta(minutes=row[1]) for row in rows],
            "user_id": pd.array([row[2] for row in rows], dtype="Int64"),
            "model_version": "1",
            "source": [row[3] for row in rows],
            "movie_ids": [list(row[4]) for row in rows],
        }
    )


def test_serving_health_sums_the_intervals_and_leaves_probes_out():
    stats = pd.DataFrame(
        [
            _stats("/users/{user_id}/recommendations", 60, 1, 0.6, [30, 54, 60]),
            _stats("/feedback", 40, 0, 1.4, [20, 36, 40]),
            _stats("/metrics", 1000, 0, 9.0, [1000, 1000, 1000]),  # a scraper: not what users get
        ]
    )
    impressions = _impressions(
        [("a", 0, 1, "model", [1]), ("b", 0, None, "popularity", [2])] + [("c", 0, 2, "model", [3])] * 2
    )
    health = serving_health(stats, impressions)
    assert health["requests"] == 100 and health["server_errors"] == 1 and health["client_errors"] == 2
    assert health["error_rate"] == pytest.approx(0.01)
    assert health["mean_latency_ms"] == pytest.approx(2.0 / 100 * 1000)
    # Summed histogram (50, 90, 100): as in the case above.
    assert health["latency_p50_ms"] == pytest.approx(10.0)
    assert health["latency_p99_ms"] == pytest.approx(100.0)
    assert health["impressions"] == 4 and health["fallback_share"] == pytest.approx(0.25)


def _events(rows: list[tuple]) -> pd.DataFrame:
    """(user, movie, kind, value, minutes after T0, impression id or None)."""
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(rows))],
            "user_id": [row[0] for row in rows],
            "movie_id": [row[1] for row in rows],
            "kind": [row[2] for row in rows],
            "value": [float(row[3]) for row in rows],
            "received_at": [T0 + timedelta(minutes=row[4]) for row in rows],
            "impression_id": [row[5] for row in rows],
        }
    )


def test_online_quality_by_hand():
    impressions = _impressions(
        [
            ("A", 0, 1, "model", [10, 20, 30]),
            ("B", 0, 2, "model", [40, 50]),
            ("C", 0, None, "popularity", [10]),
            ("D", 0, 3, "model", [70]),
        ]
    )
    events = _events(
        [
            (1, 20, "rating", 5.0, 60, None),  # liked, shown at rank 2 of A: matched by user and time
            (2, 60, "rating", 4.0, 5, "B"),  # liked, not shown in B: names its impression
            (2, 40, "rating", 2.0, 6, None),  # not liked
            (3, 70, "thumb", 1, 30 * 60, None),  # 30 h later: beyond the 24 h attribution
            (1, 30, "click", 1, 5, None),  # a click on a movie A showed
            (1, 99, "click", 1, 6, None),  # a click on a movie A did not show
        ]
    )
    quality = online_quality(impressions, events, k=3, positive_threshold=4.0, attribution=pd.Timedelta(hours=24))
    assert quality["impressions_evaluated"] == 2  # A and B; C and D have no positive answering them
    assert quality["hit_rate@3"] == pytest.approx(0.5)
    assert quality["ndcg@3"] == pytest.approx((1 / math.log2(3) + 0.0) / 2)
    assert quality["clicks"] == 2 and quality["click_through"] == pytest.approx(1 / 4)
    # An event naming another user's impression, or naming it before it was shown, does not
    # answer it; an event naming an impression is not matched to the user's other lists.
    crossed = _events(
        [(999, 20, "rating", 5.0, 60, "A"), (2, 40, "rating", 5.0, -5, "B"), (1, 30, "rating", 5.0, 1, "B")]
    )
    quality = online_quality(impressions, crossed, k=3, positive_threshold=4.0, attribution=pd.Timedelta(hours=24))
    assert quality["impressions_evaluated"] == 0
    # A new user's list (no user id) is answered by whoever names it.
    named = online_quality(
        impressions, _events([(555, 10, "rating", 5.0, 1, "C")]), k=3, positive_threshold=4.0,
        attribution=pd.Timedelta(hours=24),
    )  # fmt: skip
    assert named["impressions_evaluated"] == 1 and named["hit_rate@3"] == 1.0
    # A positive before the impression was shown does not answer it.
    early = _events([(1, 20, "rating", 5.0, -1, None)])
    quality = online_quality(impressions, early, k=3, positive_threshold=4.0, attribution=pd.Timedelta(hours=24))
    assert quality["impressions_evaluated"] == 0 and quality["hit_rate@3"] is None
    assert quality["click_through"] is None


def test_served_lists_by_hand():
    impressions = _impressions([("a", 0, 1, "model", [10, 20]), ("b", 0, 2, "model", [10, 30, 99])])
    genres = sp.csr_matrix(
        np.array([[1, 0], [1, 0], [0, 1], [0, 0]], dtype=np.float32)
    )  # 10: A, 20: A, 30: B, 40: none
    served = served_lists(
        impressions, k=2, catalogue=np.array([10, 20, 30, 40]), popularity=np.array([4, 2, 1, 1]), genres=genres
    )
    assert served["coverage"] == pytest.approx(3 / 4)  # 99 is beyond k=2 (and unknown)
    assert served["mean_popularity"] == pytest.approx((4 + 2 + 4 + 1) / 4)
    assert served["popularity_lift"] == pytest.approx(2.75 / 2.0)
    assert served["diversity"] == pytest.approx((0.0 + 1.0) / 2)  # (A, A) then (A, B)


def test_data_drift_by_hand():
    reference = {
        "rating_counts": {"1": 10, "2": 10, "3": 30, "4": 30, "5": 20},
        "positive_genre_counts": {"Comedy": 30, "Drama": 20},
        "ratings_per_day": {"median": 40.0, "last_30_days": 50.0},
    }
    events = pd.DataFrame({"user_id": [1, 1, 2, 7], "movie_id": [10, 11, 10, 99]})
    ratings = pd.Series([1.0, 1.0, 5.0, 5.0])
    positives = pd.Series([10, 11])
    genres = pd.Series({10: "Comedy|Drama", 11: "Comedy", 99: "Horror"})
    measures, distributions = data_drift(
        reference, events, ratings, positives, days=0.5, known_users=[1, 2], known_movies=[10, 11], genres=genres,
        scale_values=[1, 2, 3, 4, 5],
    )  # fmt: skip
    assert measures["unknown_user_share"] == pytest.approx(0.25) and measures["unknown_movie_share"] == pytest.approx(
        0.25
    )
    assert measures["ratings_per_day"] == pytest.approx(8.0) and measures["ratings_per_day_ratio"] == pytest.approx(
        0.16
    )
    assert distributions["rating_counts"]["current"] == {"1": 2, "2": 0, "3": 0, "4": 0, "5": 2}
    assert distributions["positive_genre_counts"]["current"] == {"Comedy": 2, "Drama": 1}
    # By hand: shares (0.1, 0.1, 0.3, 0.3, 0.2) against (0.5, 1e-4, 1e-4, 1e-4, 0.5).
    by_hand = (
        0.4 * math.log(5)
        + 2 * (1e-4 - 0.3) * math.log(1e-4 / 0.3)
        + (1e-4 - 0.1) * math.log(1e-3)
        + 0.3 * math.log(2.5)
    )
    assert measures["rating_psi"] == pytest.approx(by_hand)
    assert measures["mean_rating"] == pytest.approx(3.0) and measures["positive_events"] == 2
    # Nothing in the window: nothing to measure, no error.
    empty, _ = data_drift(
        reference, events.iloc[:0], ratings.iloc[:0], positives.iloc[:0], days=1.0, known_users=[1], known_movies=[10],
        genres=genres, scale_values=[1, 2, 3, 4, 5],
    )  # fmt: skip
    assert empty["rating_psi"] is None and empty["genre_psi"] is None and empty["unknown_user_share"] is None


def test_alert_rules_absolute_relative_sample_and_off():
    settings = MonitoringSettings(min_sample=50, error_rate_max=0.01, latency_p99_ms_max=None)
    metrics = {
        "drift.rating_psi": 0.35,
        "drift.rating_events": 49,  # below the sample: no alert however large the PSI
        "health.error_rate": 0.02,
        "health.requests": 500,
        "health.latency_p99_ms": 9_000.0,  # its threshold is off
        "online.hit_rate@10": 0.2,
        "online.impressions_evaluated": 80,
        "online.registration_hit_rate@10": 0.5,  # half of it is 0.25 > 0.2
        "offline.ndcg@10": None,  # nothing measured
        "offline.users": 0,
        "champion.age_days": 2.0,
    }
    alerts = {alert["metric"]: alert for alert in evaluate(metrics, settings, k=10)}
    assert set(alerts) == {"health.error_rate", "online.hit_rate@10"}
    assert (
        alerts["health.error_rate"]["threshold"] == pytest.approx(0.01) and alerts["health.error_rate"]["value"] == 0.02
    )
    assert alerts["online.hit_rate@10"]["threshold"] == pytest.approx(0.25)
    assert (
        "half" not in alerts["online.hit_rate@10"]["message"]
        and "0.5 of its value" in alerts["online.hit_rate@10"]["message"]
    )
    metrics["drift.rating_events"] = 50
    assert "drift.rating_psi" in {alert["metric"] for alert in evaluate(metrics, settings, k=10)}


def test_feedback_merged_into_a_newer_snapshot_counts_once():
    from movierec.monitoring.measures import Observed

    events = _events([(1, 10, "rating", 5.0, 1, None), (2, 20, "thumb", 1, 2, None), (3, 30, "click", 1, 3, None)])
    events["timestamp"] = events["received_at"]
    snapshot = pd.DataFrame(
        {
            "user_id": [1, 2, 3, 4],
            "movie_id": [10, 20, 30, 40],
            "rating": [5.0, 5.0, 2.0, 3.5],  # (1, 10) and (2, 20) are the feedback above, merged
            "timestamp": [T0] * 4,
        }
    )
    observed = Observed(events, _impressions([]), pd.DataFrame(), snapshot, quarantined=0)
    assert list(zip(observed.snapshot_ratings["user_id"], observed.snapshot_ratings["movie_id"], strict=True)) == [
        (3, 30), (4, 40),
    ]  # fmt: skip
    from movierec.data.schema import RatingScale

    ratings = observed.ratings(RatingScale(0.5, 5.0, 0.5))
    assert sorted(zip(ratings["user_id"], ratings["rating"], strict=True)) == [(1, 5.0), (2, 5.0), (3, 2.0), (4, 3.5)]


def test_the_window_starts_where_the_last_run_ended_but_never_before_the_champion(tmp_path):
    from movierec.monitoring import history
    from movierec.settings import Settings
    from tasks.monitor import monitoring_window

    settings = Settings(home=tmp_path)
    registered, until = T0, T0 + timedelta(days=2)
    assert monitoring_window(settings, None, until, registered).source == "champion registration"
    history.append(settings.monitoring_dir, {"window": {"until": (T0 + timedelta(days=1)).isoformat()}})
    window = monitoring_window(settings, None, until, registered)
    assert (window.since, window.source) == (T0 + timedelta(days=1), "last monitor run")
    # A champion registered after the last run: what came before may be its training data.
    window = monitoring_window(settings, None, until, T0 + timedelta(days=1, hours=6))
    assert window.since == T0 + timedelta(days=1, hours=6) and window.source.startswith("champion registration")
    assert monitoring_window(settings, T0 - timedelta(days=9), until, registered).since == registered
    assert monitoring_window(settings, T0 + timedelta(hours=1), until, registered).source == "--since"


def test_the_history_survives_a_torn_line(tmp_path):
    from movierec.monitoring import history

    history.append(tmp_path, {"run": 1})
    with open(tmp_path / history.HISTORY_FILE, "a") as file:
        file.write('{"run": 2, "win')  # a crash in the middle of a line
    history.append(tmp_path, {"run": 3})
    assert history.last_runs(tmp_path, 5) == [{"run": 1}, {"run": 3}]
    assert history.last_runs(tmp_path, 1) == [{"run": 3}] and history.last_runs(tmp_path, 0) == []
