"""Feedback events from users of the API: durable storage and their meaning as ratings.

Storage is one SQLite file (`settings.feedback_db`) in WAL mode with `synchronous=FULL`: an event
is acknowledged only after its transaction is committed and synced, so an acknowledged event
survives a crash of the server (kill -9) or of the machine. The event id is the primary key:
a retried request stores its event once. Every writer opens its own connection and SQLite
serialises them (with a busy timeout), so concurrent writers lose nothing.

Meaning. A `rating` event carries a rating on the dataset's scale; a `thumb` event +1 or -1,
taken as the top or the bottom of the scale; a `click` is kept for monitoring but is not a
rating. For each (user, movie) the latest rating-like event wins (`feedback_ratings`), and the
retrain flow merges those into the ratings of the next snapshot (`read_feedback`,
`merge_feedback`; `explain_feedback_failure` names the events at fault when the merged ratings
fail validation). The store lives with the data, below the API that writes it and the ingestion
that reads it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from movierec.data.schema import RatingScale, RawDataset
from movierec.errors import ValidationFailed
from movierec.settings import Settings

KINDS = ("rating", "thumb", "click")
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    movie_id INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('rating', 'thumb', 'click')),
    value REAL NOT NULL,
    timestamp TEXT NOT NULL,
    received_at TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class FeedbackEvent:
    event_id: str
    user_id: int
    movie_id: int
    kind: Literal["rating", "thumb", "click"]
    value: float  # rating: on the dataset's scale; thumb: +1 or -1; click: 1
    timestamp: datetime  # timezone-aware

    def __post_init__(self) -> None:
        # SQLite's CHECK would reject a bad kind, but `INSERT OR IGNORE` used to turn that into a
        # silent "duplicate"; a naive timestamp would be read as the machine's local time.
        if self.kind not in KINDS:
            raise ValueError(f"feedback event {self.event_id!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if not math.isfinite(float(self.value)):
            raise ValueError(f"feedback event {self.event_id!r}: value must be a finite number, got {self.value!r}")
        if self.kind == "thumb" and float(self.value) not in (1.0, -1.0):
            raise ValueError(f"feedback event {self.event_id!r}: a thumb is +1 or -1, got {self.value!r}")
        if self.timestamp.tzinfo is None or self.timestamp.utcoffset() is None:
            raise ValueError(
                f"feedback event {self.event_id!r}: timestamp must be timezone-aware, got {self.timestamp!r}"
            )

    def row(self, received_at: str) -> tuple:
        return (
            self.event_id,
            int(self.user_id),
            int(self.movie_id),
            self.kind,
            float(self.value),
            self.timestamp.astimezone(UTC).isoformat(),
            received_at,
        )


class FeedbackStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connection() as connection:
            connection.execute(SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        """One connection per thread and process: sqlite3 connections must not be shared across
        threads, nor carried into a forked child (the child opens its own)."""
        connection = getattr(self._local, "connection", None)
        if connection is None or getattr(self._local, "pid", None) != os.getpid():
            connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            self._local.connection = connection
            self._local.pid = os.getpid()
        return connection

    def append(self, event: FeedbackEvent) -> bool:
        """Store `event` durably; False if an event with its id was stored before."""
        return self.append_many([event])[0]

    def append_many(self, events: Iterable[FeedbackEvent]) -> list[bool]:
        """Store events in one transaction; per event, whether it was new."""
        received_at = datetime.now(UTC).isoformat()
        connection = self._connection()
        stored = []
        connection.execute("BEGIN IMMEDIATE")
        try:
            for event in events:
                # Only a repeated id is ignored; any other constraint violation raises.
                cursor = connection.execute(
                    "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(event_id) DO NOTHING",
                    event.row(received_at),
                )
                stored.append(cursor.rowcount == 1)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return stored

    def count(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def events(self) -> pd.DataFrame:
        """Every stored event, in the order received (then by id)."""
        frame = pd.read_sql_query("SELECT * FROM events ORDER BY received_at, event_id", self._connection())
        for column in ("timestamp", "received_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        return frame.astype({"user_id": "int64", "movie_id": "int64", "value": "float64"})

    def digest(self, kinds: Iterable[str] = KINDS) -> str:
        """Content hash of the stored events (of the given kinds): changes exactly when such an
        event is added."""
        kinds = sorted(set(kinds))
        digest = hashlib.sha256()
        query = (
            f"SELECT event_id, user_id, movie_id, kind, value, timestamp FROM events "
            f"WHERE kind IN ({', '.join('?' * len(kinds))}) ORDER BY event_id"
        )
        for row in self._connection().execute(query, kinds):
            digest.update(repr(row).encode())
        return digest.hexdigest()

    def read(self, kinds: Iterable[str] = KINDS) -> tuple[pd.DataFrame, str]:
        """`events()` and `digest(kinds)` of one consistent state of the store (one read
        transaction), even while writers append."""
        connection = self._connection()
        connection.execute("BEGIN")
        try:
            return self.events(), self.digest(kinds)
        finally:
            connection.execute("COMMIT")

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


RATING_KINDS = ("rating", "thumb")


def feedback_ratings(events: pd.DataFrame, scale: RatingScale) -> pd.DataFrame:
    """Ratings implied by feedback (user_id, movie_id, rating, timestamp, and the event_id each
    comes from): rating events as given, thumbs up/down as the scale's max/min; clicks are not
    ratings. For each (user, movie) the latest event wins (equal timestamps: the greater event id,
    so the result does not depend on storage order)."""
    rated = events[events["kind"].isin(RATING_KINDS)].copy()
    rated["value"] = rated["value"].astype("float64")
    thumbs = (rated["kind"] == "thumb").to_numpy()
    rated.loc[thumbs, "value"] = np.where(rated.loc[thumbs, "value"].to_numpy() > 0, scale.max, scale.min)
    rated = rated.sort_values(["timestamp", "event_id"], kind="stable").drop_duplicates(
        ["user_id", "movie_id"], keep="last"
    )
    return (
        rated.rename(columns={"value": "rating"})[["user_id", "movie_id", "rating", "timestamp", "event_id"]]
        .sort_values(["user_id", "movie_id"], kind="stable")
        .reset_index(drop=True)
    )


# ---------------------------------------------------------------------- into the next snapshot


@dataclass
class Feedback:
    """The stored feedback events at the time of reading."""

    path: Path
    events: pd.DataFrame  # FeedbackStore.events()
    digest: str  # FeedbackStore.digest of the rating-like events (clicks do not change a snapshot)

    @property
    def rating_events(self) -> int:
        return int(self.events["kind"].isin(RATING_KINDS).sum())


def read_feedback(path: Path) -> Feedback | None:
    """The events of the feedback store at `path`; None if there is no store or it holds no
    rating or thumb events (clicks are not ratings), so that such inputs fingerprint as before."""
    path = Path(path)
    if not path.is_file():
        return None
    store = FeedbackStore(path)
    try:
        events, digest = store.read(kinds=RATING_KINDS)
    finally:
        store.close()
    feedback = Feedback(path, events, digest)
    return feedback if feedback.rating_events else None


def merge_feedback(raw: RawDataset, feedback: Feedback) -> tuple[RawDataset, pd.DataFrame, dict]:
    """`raw` with the feedback's ratings appended to its ratings, in the raw ratings' dtypes and
    timestamp representation (Unix seconds), so that the raw suites validate them like the rest.

    Per (user, movie) the latest feedback event gives one rating (`feedback_ratings`); preprocessing
    then keeps the latest rating of each pair, so a feedback rating replaces a dataset rating
    exactly when it is later. A feedback rating stamped the same second as a dataset rating of the
    pair replaces it here (the raw suites reject equal timestamps for a pair: preprocessing could
    not tell which is latest). Returns the merged dataset, the feedback ratings (with their
    event ids, in merge order) and counts for the lineage.
    """
    ratings = feedback_ratings(feedback.events, raw.rating_scale)
    seconds = ((ratings["timestamp"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
    existing = raw.ratings
    merged_rows = pd.DataFrame(
        {
            "user_id": ratings["user_id"].to_numpy(np.int64),
            "movie_id": ratings["movie_id"].to_numpy(np.int64),
            "rating": ratings["rating"].to_numpy(np.float64),
            "timestamp": seconds,
        }
    )
    if pd.api.types.is_datetime64_any_dtype(existing["timestamp"]):
        merged_rows["timestamp"] = pd.to_datetime(seconds, unit="s", utc=True)
    merged_rows = merged_rows[list(existing.columns)].astype(existing.dtypes.to_dict())

    # Where each feedback rating stands against the dataset's ratings of its pair.
    keys = ["user_id", "movie_id"]
    latest = existing.groupby(keys, sort=False)["timestamp"].max().rename("dataset_timestamp").reset_index()
    against = merged_rows[[*keys, "timestamp"]].merge(latest, on=keys, how="left")
    known_pair = against["dataset_timestamp"].notna().to_numpy()
    stamp = against["timestamp"].to_numpy()
    later = known_pair & (stamp > against["dataset_timestamp"].to_numpy())
    same_second = known_pair & (stamp == against["dataset_timestamp"].to_numpy())

    kept = existing
    if same_second.any():
        columns = [*keys, "timestamp"]
        ties = pd.MultiIndex.from_frame(merged_rows.loc[same_second, columns])
        kept = existing[~pd.MultiIndex.from_frame(existing[columns]).isin(ties)]
    merged = dataclasses.replace(raw, ratings=pd.concat([kept, merged_rows], ignore_index=True))

    dataset_users = set(existing["user_id"].unique())
    if raw.users is not None:
        dataset_users |= set(raw.users["user_id"].unique())
    counts = {
        "path": str(feedback.path),
        "digest": feedback.digest,
        "events": len(feedback.events),
        "rating_events": feedback.rating_events,
        "clicks": int((feedback.events["kind"] == "click").sum()),
        "ratings": len(merged_rows),  # the latest rating-like event of each (user, movie)
        "new_pairs": int((~known_pair).sum()),
        "replaced": int((later | same_second).sum()),  # later than the dataset's rating of the pair
        "older_than_dataset": int((known_pair & ~later & ~same_second).sum()),  # the dataset's rating stays
        "new_users": len(set(merged_rows["user_id"].unique()) - dataset_users),
    }
    return merged, ratings, counts


def explain_feedback_failure(
    error: ValidationFailed,
    raw: RawDataset,
    feedback_rows: pd.DataFrame,
    dataset_rows: int,
    settings: Settings,
    path: Path,
) -> ValidationFailed:
    """`error` of the raw suites, with lines naming the feedback events at fault (if any): raw
    row numbers beyond the dataset's rows are feedback, which has no file line to point at."""
    scale = raw.rating_scale
    allowed = np.round(np.asarray(scale.values(), dtype=np.float64), 4)
    earliest = settings.validation.earliest_timestamp
    earliest = earliest if earliest.tzinfo else earliest.replace(tzinfo=UTC)
    latest = datetime.now(UTC) + timedelta(days=settings.validation.max_future_days)
    known_movies = set(raw.movies["movie_id"].to_numpy(np.int64).tolist())
    notes = []
    for row in feedback_rows.itertuples(index=False):
        problems = []
        if not np.isin(round(float(row.rating), 4), allowed):
            problems.append(
                f"rating {row.rating:g} is not on the scale {scale.min:g}-{scale.max:g} (step {scale.step:g})"
            )
        if int(row.movie_id) not in known_movies:
            problems.append(f"movie {row.movie_id} is not in the catalogue")
        if not earliest <= row.timestamp.to_pydatetime() <= latest:
            problems.append(f"timestamp {row.timestamp} is outside {earliest:%Y-%m-%d} .. {latest:%Y-%m-%d}")
        if problems:
            notes.append(
                f"feedback event {row.event_id!r} (user {row.user_id}, movie {row.movie_id}): {'; '.join(problems)}"
            )
    header = (
        f"ratings rows {dataset_rows + 1}..{dataset_rows + len(feedback_rows)} are the "
        f"{len(feedback_rows)} feedback rating(s) merged from {path}"
    )
    explained = ValidationFailed(error.suite, error.failures, error.report)
    explained.feedback_notes = [header, *notes]
    lines = str(error).split("\n")
    at = len(lines) - 1 if error.report is not None else len(lines)  # before the "report:" line
    explained.args = ("\n".join([*lines[:at], *(f"  {note}" for note in explained.feedback_notes), *lines[at:]]),)
    return explained
