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
import math
import os
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
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
            raise ValueError(f"feedback event {self.event_id!r}: timestamp must be timezone-aware, got {self.timestamp!r}")

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
        received_at = datetime.now(timezone.utc).isoformat()
        connection = self._connection()
        stored = []
        connection.execute("BEGIN IMMEDIATE")
        try:
            for event in events:
                # Only a repeated id is ignored; any other constraint violation raises.
                cursor = connection.execute(
                    "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(event_id) DO NOTHING", event.row(received_at)
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
        query = (f"SELECT event_id, user_id, movie_id, kind, value, timestamp FROM events "
                 f"WHERE kind IN ({', '.join('?' * len(kinds))}) ORDER BY event_id")
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
    rated = rated.sort_values(["timestamp", "event_id"], kind="stable").drop_duplicates(["user_id", "movie_id"], keep="last")
    return (
        rated.rename(columns={"value": "rating"})[["user_id", "movie_id", "rating", "timestamp", "event_id"]]
        .sort_values(["user_id", "movie_id"], kind="stable")
        .reset_index(drop=True)
    )
