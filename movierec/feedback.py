"""Feedback events from users of the API: durable storage and their meaning as ratings.

Storage is one SQLite file (`settings.feedback_db`) in WAL mode with `synchronous=FULL`: an event
is acknowledged only after its transaction is committed and synced, so an acknowledged event
survives a crash of the server (kill -9) or of the machine. The event id is the primary key:
a retried request stores its event once. Every writer opens its own connection and SQLite
serialises them (with a busy timeout), so concurrent writers lose nothing.

Meaning. A `rating` event carries a rating on the dataset's scale; a `thumb` event +1 or -1,
taken as the top or the bottom of the scale; a `click` is kept for monitoring but is not a
rating. For each (user, movie) the latest rating-like event wins (`feedback_ratings`), and the
retrain flow merges those into the ratings of the next snapshot.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import pandas as pd

from movierec.schema import RatingScale

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

    def row(self, received_at: str) -> tuple:
        return (self.event_id, int(self.user_id), int(self.movie_id), self.kind, float(self.value),
                self.timestamp.astimezone(timezone.utc).isoformat(), received_at)


class FeedbackStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connection() as connection:
            connection.execute(SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        """One connection per thread (sqlite3 connections must not be shared across threads)."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            self._local.connection = connection
        return connection

    def append(self, event: FeedbackEvent) -> bool:
        """Store `event` durably; False if an event with its id was stored before."""
        return self.append_many([event])[0]

    def append_many(self, events: Iterable[FeedbackEvent]) -> list[bool]:
        """Store events in one transaction; per event, whether it was new."""
        received_at = datetime.now(timezone.utc).isoformat()
        connection = self._connection()
        stored = []
        connection.execute("BEGIN IMMEDIATE")
        try:
            for event in events:
                cursor = connection.execute("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", event.row(received_at))
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
        return frame

    def digest(self) -> str:
        """Content hash of the stored events: changes exactly when an event is added."""
        digest = hashlib.sha256()
        for row in self._connection().execute("SELECT event_id, user_id, movie_id, kind, value, timestamp FROM events ORDER BY event_id"):
            digest.update(repr(row).encode())
        return digest.hexdigest()

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def feedback_ratings(events: pd.DataFrame, scale: RatingScale) -> pd.DataFrame:
    """Ratings implied by feedback (user_id, movie_id, rating, timestamp): rating events as given,
    thumbs up/down as the scale's max/min; clicks are not ratings. For each (user, movie) the
    latest event wins (ties by event id, so the result does not depend on storage order)."""
    rated = events[events["kind"].isin(["rating", "thumb"])].copy()
    thumbs = rated["kind"] == "thumb"
    rated.loc[thumbs, "value"] = rated.loc[thumbs, "value"].map(lambda v: scale.max if v > 0 else scale.min)
    rated = rated.sort_values(["timestamp", "event_id"]).drop_duplicates(["user_id", "movie_id"], keep="last")
    return (
        rated.rename(columns={"value": "rating"})[["user_id", "movie_id", "rating", "timestamp"]]
        .sort_values(["user_id", "movie_id"])
        .reset_index(drop=True)
    )
