"""The feedback store (durable, idempotent, safe under concurrent writers) and what events mean."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from movierec.data.feedback import FeedbackEvent, FeedbackStore, feedback_ratings
from movierec.data.schema import RatingScale

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SCALE = RatingScale(0.5, 5.0, 0.5)


def event(
    event_id: str, user: int = 1, movie: int = 10, kind: str = "rating", value: float = 4.0, seconds: int = 0
) -> FeedbackEvent:
    return FeedbackEvent(event_id, user, movie, kind, value, T0 + timedelta(seconds=seconds))


def test_append_is_idempotent_by_event_id(tmp_path):
    store = FeedbackStore(tmp_path / "feedback.db")
    assert store.append(event("a")) is True
    assert store.append(event("a", value=1.0)) is False  # a retried request: stored once, first wins
    assert store.append_many([event("b"), event("a"), event("b"), event("c")]) == [True, False, False, True]
    frame = store.events()
    assert frame["event_id"].tolist() == ["a", "b", "c"]
    assert frame.loc[frame["event_id"] == "a", "value"].item() == 4.0


def test_events_survive_reopening(tmp_path):
    path = tmp_path / "feedback.db"
    store = FeedbackStore(path)
    store.append_many([event("a"), event("b", kind="thumb", value=-1), event("c", kind="click", value=1)])
    digest = store.digest()
    store.close()
    again = FeedbackStore(path)
    frame = again.events()
    assert frame["event_id"].tolist() == ["a", "b", "c"]
    assert frame["kind"].tolist() == ["rating", "thumb", "click"]
    assert frame["timestamp"].tolist() == [pd.Timestamp(T0)] * 3 and str(frame["timestamp"].dt.tz) == "UTC"
    assert frame[["user_id", "movie_id"]].dtypes.tolist() == ["int64", "int64"]
    assert again.digest() == digest
    # Durability settings of every connection.
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_digest_changes_exactly_when_an_event_is_added(tmp_path):
    store = FeedbackStore(tmp_path / "feedback.db")
    digests = [store.digest()]
    for step, item in enumerate([event("a"), event("b", seconds=1), event("a"), event("c", kind="click", value=1)]):
        added = store.append(item)
        digests.append(store.digest())
        assert (digests[-1] != digests[-2]) == added, step
    assert len(set(digests)) == 4  # empty, a, a+b, a+b+c; the duplicate "a" changed nothing
    # Restricted to rating-like kinds, a click changes nothing.
    ratings_only = store.digest(kinds=("rating", "thumb"))
    store.append(event("d", kind="click", value=1))
    assert store.digest(kinds=("rating", "thumb")) == ratings_only
    events, digest = store.read()
    assert len(events) == 4 and digest == store.digest()


def test_invalid_events_are_refused_not_taken_for_duplicates(tmp_path):
    store = FeedbackStore(tmp_path / "feedback.db")
    with pytest.raises(ValueError, match="kind must be one of"):
        event("x", kind="like")
    with pytest.raises(ValueError, match="thumb is"):
        event("x", kind="thumb", value=4.0)
    with pytest.raises(ValueError, match="timezone-aware"):
        FeedbackEvent("x", 1, 2, "rating", 4.0, datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="finite"):
        event("x", value=float("nan"))
    assert store.count() == 0


def _write_many(path: str, prefix: str, count: int) -> None:
    store = FeedbackStore(path)
    for i in range(count):
        # Every writer also re-sends a shared id range: those must be stored once overall.
        store.append(event(f"{prefix}-{i}", user=i, seconds=i))
        store.append(event(f"shared-{i % 50}", user=i % 50, seconds=i % 50))
    store.close()


def test_concurrent_threads_lose_nothing(tmp_path):
    path = tmp_path / "feedback.db"
    store = FeedbackStore(path)  # a store shared by the threads: one connection per thread
    errors = []

    def worker(prefix: str) -> None:
        try:
            for i in range(200):
                store.append(event(f"{prefix}-{i}", user=i, seconds=i))
                store.append(event(f"shared-{i % 50}", user=i % 50, seconds=i % 50))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(f"t{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    ids = FeedbackStore(path).events()["event_id"]
    assert ids.is_unique and len(ids) == 8 * 200 + 50


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_concurrent_processes_lose_nothing(tmp_path, start_method):
    if start_method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {start_method} start method here")
    path = tmp_path / "feedback.db"
    parent = FeedbackStore(path)
    parent.count()  # the parent holds an open connection when forking: children must not use it
    context = multiprocessing.get_context(start_method)
    processes = [context.Process(target=_write_many, args=(str(path), f"p{n}", 200)) for n in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0, 0]
    ids = parent.events()["event_id"]
    assert ids.is_unique and len(ids) == 2 * 200 + 50


def _frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["event_id", "user_id", "movie_id", "kind", "value", "timestamp"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame


def test_feedback_ratings_latest_event_wins_across_kinds():
    t = [T0 + timedelta(minutes=m) for m in range(6)]
    events = _frame(
        [
            # user 1, movie 10: rating, then thumb up, then a click (ignored): the thumb wins -> max.
            ("e1", 1, 10, "rating", 2.0, t[0]),
            ("e2", 1, 10, "thumb", 1.0, t[1]),
            ("e3", 1, 10, "click", 1.0, t[2]),
            # user 1, movie 11: thumb down, then a later rating wins.
            ("e4", 1, 11, "thumb", -1.0, t[0]),
            ("e5", 1, 11, "rating", 3.5, t[3]),
            # user 2, movie 10: a thumb down alone -> min.
            ("e6", 2, 10, "thumb", -1.0, t[4]),
            # user 2, movie 12: only clicks -> no rating.
            ("e7", 2, 12, "click", 1.0, t[5]),
            # user 3, movie 10: equal timestamps -> the greater event id wins, whatever the row order.
            ("z9", 3, 10, "rating", 1.0, t[2]),
            ("a1", 3, 10, "thumb", 1.0, t[2]),
            # Received late but stamped earlier: still older.
            ("e8", 2, 10, "rating", 4.0, t[3]),
        ]
    )
    expected = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 3],
            "movie_id": [10, 11, 10, 10],
            "rating": [5.0, 3.5, 0.5, 1.0],
            "timestamp": pd.to_datetime([t[1], t[3], t[4], t[2]], utc=True),
            "event_id": ["e2", "e5", "e6", "z9"],
        }
    )
    result = feedback_ratings(events, SCALE)
    pd.testing.assert_frame_equal(result, expected, check_dtype=False)
    # Storage order does not matter.
    for seed in range(5):
        shuffled = events.sample(frac=1, random_state=seed)
        pd.testing.assert_frame_equal(feedback_ratings(shuffled, SCALE), result)
    # Thumbs take the scale's ends, whatever the scale.
    assert feedback_ratings(events, RatingScale(1.0, 5.0, 1.0))["rating"].tolist() == [5.0, 3.5, 1.0, 1.0]


def test_feedback_ratings_of_no_events(tmp_path):
    events = FeedbackStore(tmp_path / "feedback.db").events()
    result = feedback_ratings(events, SCALE)
    assert result.empty and list(result.columns) == ["user_id", "movie_id", "rating", "timestamp", "event_id"]
