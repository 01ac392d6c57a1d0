"""The feedback store (durable, idempotent, safe under concurrent writers) and what events mean."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from movierec.data.feedback import FeedbackEvent, FeedbackRules, FeedbackStore, feedback_ratings, screen_feedback
from movierec.data.schema import RatingScale
from movierec.settings import FeedbackSettings

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SCALE = RatingScale(0.5, 5.0, 0.5)


def event(
    event_id: str, user: int = 1, movie: int = 10, kind: str = "rating", value: float = 4.0, seconds: int = 0
) -> FeedbackEvent:
    return FeedbackEvent(event_id, user, movie, kind, value, T0 + timedelta(seconds=seconds))


def test_append_is_idempotent_by_event_id_and_a_different_event_under_one_id_conflicts(tmp_path):
    store = FeedbackStore(tmp_path / "feedback.db")
    assert store.append(event("a")).status == "stored"
    retry = store.append(event("a"))  # a retried request: stored once
    assert retry.status == "duplicate" and retry.stored == event("a")
    conflict = store.append(event("a", value=1.0))  # other content under the id: the first is kept
    assert conflict.status == "conflict" and conflict.stored == event("a")
    outcomes = store.append_many([event("b"), event("a"), event("b"), event("c")], client="10.0.0.1")
    assert [outcome.status for outcome in outcomes] == ["stored", "duplicate", "duplicate", "stored"]
    frame = store.events()
    assert frame["event_id"].tolist() == ["a", "b", "c"]
    assert frame.loc[frame["event_id"] == "a", "value"].item() == 4.0
    assert frame["client"].isna().tolist() == [True, False, False] and set(frame["client"].dropna()) == {"10.0.0.1"}
    # A window of arrival times, half-open: what arrived at its end belongs to the next one.
    first, last = frame["received_at"].iloc[0], frame["received_at"].iloc[-1]
    assert store.events(since=last)["event_id"].tolist() == frame.loc[frame["received_at"] >= last, "event_id"].tolist()
    assert store.events(until=last)["event_id"].tolist() == frame.loc[frame["received_at"] < last, "event_id"].tolist()
    assert store.events(since=first, until=first).empty


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
        added = store.append(item).status == "stored"
        digests.append(store.digest())
        assert (digests[-1] != digests[-2]) == added, step
    assert len(set(digests)) == 4  # empty, a, a+b, a+b+c; the duplicate "a" changed nothing
    # Restricted to rating-like kinds, a click changes nothing.
    ratings_only = store.digest(kinds=("rating", "thumb"))
    store.append(event("d", kind="click", value=1))
    assert store.digest(kinds=("rating", "thumb")) == ratings_only
    events, digest, released, held = store.read()
    assert len(events) == 4 and digest == store.digest() and released == {} and held.empty


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


# ---------------------------------------------------------------------- rules and screening

RULES = FeedbackRules(SCALE, frozenset(range(1, 101)), datetime(1995, 1, 1, tzinfo=UTC), 1)
SCREENING = FeedbackSettings(
    burst_window_minutes=60, movie_burst_new_users=3, cohort_new_users=5, cohort_top_movie_share=0.5,
    client_burst_events=6,
)  # fmt: skip


def test_the_rules_name_each_field_at_fault():
    now = datetime(2024, 6, 1, tzinfo=UTC)
    assert RULES.problems("rating", 5, 4.5, T0, now) == {}
    problems = RULES.problems("rating", 500, 4.2, datetime(1900, 1, 1, tzinfo=UTC), now)
    assert set(problems) == {"movie_id", "timestamp", "value"}
    assert problems["value"] == "rating 4.2 is not on the scale 0.5-5 (step 0.5)"
    assert problems["movie_id"] == "movie 500 is not in the catalogue (100 movies)"
    assert "outside the plausible window 1995-01-01 .. 2024-06-02" in problems["timestamp"]
    # One day ahead is allowed (clocks differ), two are not.
    assert RULES.problems("thumb", 5, 1, now + timedelta(hours=23), now) == {}
    assert "timestamp" in RULES.problems("thumb", 5, 1, now + timedelta(days=2), now)
    assert RULES.problems("thumb", 5, 2, T0, now) == {"value": "a thumb is +1 or -1, got 2"}
    assert RULES.problems("click", 5, 2, T0, now) == {"value": "a click has value 1, got 2"}


def _events(rows: list[tuple]) -> pd.DataFrame:
    """rows: (event_id, user, movie, minutes after T0 of arrival, client)."""
    return pd.DataFrame(
        {
            "event_id": [row[0] for row in rows],
            "user_id": [row[1] for row in rows],
            "movie_id": [row[2] for row in rows],
            "kind": "rating",
            "value": 5.0,
            "timestamp": pd.Timestamp(T0),
            "received_at": [pd.Timestamp(T0) + pd.Timedelta(minutes=row[3]) for row in rows],
            "client": [row[4] for row in rows],
        }
    )


def test_screening_holds_back_invalid_events_and_bursts_of_new_users_clients_and_cohorts():
    rows = [
        # Four new users (not 1..10) rate movie 50 within 10 minutes: more than 3, a movie burst.
        *[(f"attack-{u}", u, 50, u - 100, None) for u in range(101, 105)],
        ("real", 1, 50, 5, None),  # a real user's rating of the same movie stays
        ("late", 105, 50, 200, None),  # a new user, hours later: not part of the burst
        # One client sends 7 events within 30 minutes (limit 6); another sends 6.
        *[(f"busy-{i}", 2, 60 + i, 300 + 5 * i, "10.0.0.9") for i in range(7)],
        *[(f"calm-{i}", 3, 60 + i, 300 + 5 * i, "10.0.0.8") for i in range(6)],
        # Six new users arrive within 20 minutes (limit 5); every one rates movie 70 (also a movie
        # burst), two also movie 71: 6 of their 8 ratings are one movie's, over half.
        *[(f"cohort-{u}", u, 70, 600 + 4 * (u - 201), None) for u in range(201, 207)],
        ("cohort-extra-1", 201, 71, 630, None),
        ("cohort-extra-2", 202, 71, 631, None),
        ("broken", 4, 500, 700, None),  # not in the catalogue
    ]
    held = screen_feedback(_events(rows), RULES, range(1, 11), SCREENING, now=T0 + timedelta(days=1))
    rule = dict(zip(held["event_id"], held["rule"], strict=True))
    assert {event for event, name in rule.items() if name == "movie_burst"} == {
        *(f"attack-{u}" for u in range(101, 105)),
        *(f"cohort-{u}" for u in range(201, 207)),
    }
    assert {event for event, name in rule.items() if name == "client_burst"} == {f"busy-{i}" for i in range(7)}
    assert {event for event, name in rule.items() if name == "cohort_burst"} == {"cohort-extra-1", "cohort-extra-2"}
    assert rule["broken"] == "invalid" and len(rule) == 4 + 6 + 7 + 2 + 1
    reasons = dict(zip(held["event_id"], held["reason"], strict=True))
    assert reasons["attack-101"] == "4 new users rated movie 50 within 60 minutes (limit 3)"
    assert reasons["busy-0"] == "client 10.0.0.9 sent 7 events within 60 minutes (limit 6)"
    assert reasons["cohort-extra-1"] == (
        "6 new users arrived within 60 minutes (limit 5) and 75% of their ratings are of movie 70"
    )
    assert reasons["broken"].startswith("movie_id: movie 500 is not in the catalogue")
    # A released event still counts towards its burst but is let through; an invalid one never is.
    again = screen_feedback(
        _events(rows), RULES, range(1, 11), SCREENING, released={"attack-101", "broken"}, now=T0 + timedelta(days=1)
    )
    assert "attack-101" not in set(again["event_id"]) and {"attack-102", "broken"} <= set(again["event_id"])


def test_quarantine_is_kept_listed_and_released(tmp_path):
    store = FeedbackStore(tmp_path / "feedback.db")
    store.append_many([event("a"), event("b", seconds=1), event("c", seconds=2)])
    digest = store.digest()
    records = pd.DataFrame(
        {"event_id": ["a", "b"], "rule": ["movie_burst", "invalid"], "reason": ["a burst", "bad movie"]}
    )
    assert store.quarantine(records, "ml-100k") == 2 and store.quarantine(records, "ml-100k") == 0  # the first stays
    held = store.quarantined()
    assert held["event_id"].tolist() == ["a", "b"] and held["rule"].tolist() == ["movie_burst", "invalid"]
    # One store serves every dataset: what is invalid for one may be fine for another.
    assert store.quarantined(dataset="ml-latest-small").empty
    assert store.digest() == digest  # quarantining changes no input of a snapshot by itself
    with pytest.raises(ValueError, match="invalid events cannot be released"):
        store.release(["b"])
    with pytest.raises(ValueError, match="not in quarantine"):
        store.release(["c"])
    assert store.release(["a"]) == ["a"]
    assert store.released() == {"ml-100k": {"a"}} and store.quarantined()["event_id"].tolist() == ["b"]
    assert store.quarantined(include_released=True)["released_at"].notna().tolist() == [True, False]
    assert store.digest() != digest  # a release changes what the next snapshot merges
    assert store.count() == 3  # nothing deleted


def test_what_is_invalid_for_one_dataset_is_not_held_back_from_another(tmp_path):
    import dataclasses

    from movierec.data.feedback import hold_back, read_feedback
    from movierec.data.synthetic import generate
    from movierec.settings import get_settings

    full = generate(2_000, seed=3)
    movie = int(full.movies["movie_id"].iloc[-1])
    small = dataclasses.replace(full, name="other", movies=full.movies[full.movies["movie_id"] != movie])
    path = tmp_path / "feedback.db"
    store = FeedbackStore(path)
    store.append(FeedbackEvent("e", 1, movie, "rating", 4.0, datetime.now(UTC)))
    settings = get_settings()
    held = hold_back(small, read_feedback(path), settings)
    assert held["event_id"].tolist() == ["e"] and held["rule"].tolist() == ["invalid"]
    store.quarantine(held, small.name)
    assert hold_back(small, read_feedback(path), settings)["new"].tolist() == [False]  # held from before
    assert hold_back(full, read_feedback(path), settings).empty  # the other dataset knows the movie
