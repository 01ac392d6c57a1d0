"""Impressions: stored in batches off the request path, read back, pruned by age and count; the
API's serving statistics stored as changes per interval, across restarts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from movierec.data.impressions import EndpointTotals, Impression, ImpressionRecorder, ImpressionStore

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _impression(number: int, days_ago: float) -> Impression:
    return Impression(f"i{number:03d}", NOW - timedelta(days=days_ago), number or None, "3", "model", (10, 20, number))


def test_impressions_are_read_back_and_pruned_by_age_then_count(tmp_path):
    store = ImpressionStore(tmp_path / "impressions.db")
    store.append_many(_impression(n, days_ago=n) for n in range(10))  # i000 today ... i009 nine days ago
    frame = store.read()
    assert frame["impression_id"].tolist() == [f"i{n:03d}" for n in reversed(range(10))]  # oldest first
    newest = frame.iloc[-1]
    assert newest["movie_ids"] == [10, 20, 0] and newest["user_id"] is not None and frame["user_id"].isna().sum() == 1
    assert len(store.read(since=NOW - timedelta(days=2, hours=1))) == 3
    assert store.read(since=NOW - timedelta(days=2), until=NOW)["impression_id"].tolist() == ["i002", "i001"]
    # Older than 5.5 days: i006..i009 (4 rows); then beyond 3 rows the oldest: i003, i004, i005.
    assert store.prune(max_age_days=5.5, max_rows=3, now=NOW) == 7
    assert store.read()["impression_id"].tolist() == ["i002", "i001", "i000"]


def test_the_recorder_writes_in_the_background_and_everything_on_stop(tmp_path):
    store = ImpressionStore(tmp_path / "impressions.db")
    recorder = ImpressionRecorder(store, max_age_days=90, max_rows=1_000)
    recorder.start()
    ids = [recorder.record(7, "2", "model", [1, 2, 3]) for _ in range(1_200)]  # more than one batch
    recorder.stop()
    frame = store.read()
    assert set(frame["impression_id"]) == set(ids) and (frame["user_id"] == 7).all()
    # A recorder prunes when it starts: the oldest beyond max_rows go.
    recorder = ImpressionRecorder(store, max_age_days=90, max_rows=1_000)
    recorder.start()
    recorder.record(None, "2", "popularity", [5])
    recorder.stop()
    assert store.count() == 1_001 and store.read()["source"].iloc[-1] == "popularity"


def _totals(requests: int, errors: int, fast: int) -> dict[str, EndpointTotals]:
    return {
        "/feedback": EndpointTotals(
            requests, 0, errors, requests * 0.002, (0.001, 0.01, float("inf")), (fast, requests, requests)
        )
    }


def test_serving_statistics_are_stored_as_changes_and_survive_a_restart(tmp_path):
    store = ImpressionStore(tmp_path / "impressions.db")
    totals = {"now": _totals(10, 1, 4)}
    recorder = ImpressionRecorder(store, max_age_days=90, max_rows=1_000, totals=lambda: totals["now"])
    recorder.store_stats()
    totals["now"] = _totals(25, 1, 10)  # 15 more requests, no new error
    recorder.stop()  # stores the change since the last call
    # The API restarts: its counters start from zero again.
    restarted = ImpressionRecorder(store, max_age_days=90, max_rows=1_000, totals=lambda: _totals(5, 2, 5))
    restarted.stop()
    stats = store.read_stats()
    assert stats["requests"].tolist() == [10, 15, 5] and stats["server_errors"].tolist() == [1, 0, 2]
    assert stats["bucket_counts"].tolist() == [[4, 10, 10], [6, 15, 15], [5, 5, 5]]
    assert stats["bucket_bounds"].iloc[0] == [0.001, 0.01, float("inf")]
    assert stats["latency_seconds"].sum() == pytest.approx(30 * 0.002)
    assert (stats["ended_at"] >= stats["started_at"]).all()
    # Windows are half-open: an interval ending at a window's end belongs to the next window.
    second_end = stats["ended_at"].iloc[1].to_pydatetime()
    assert store.read_stats(until=second_end)["requests"].tolist() == [10]
    assert store.read_stats(since=second_end)["requests"].tolist() == [15, 5]
    # Kept as long as impressions: the age limit prunes them too.
    later = stats["ended_at"].max().to_pydatetime() + timedelta(days=91)
    assert store.prune(max_age_days=90, max_rows=1_000, now=later) == 3 and store.read_stats().empty
