"""Impressions: which movies the API showed to whom, by which model version, and the API's
request counts and latencies per interval, for monitoring.

Stored in their own SQLite file beside the feedback store (`settings.impressions_db`, WAL), so
recording them never waits on feedback's synced commits. Impression ids are random 128-bit
values, so the table keeps no unique index on them: an insert only appends to the time index
(2.5 µs a row against 12.3 µs with a unique index on them, measured in batches of 160). The API does not write on the request
path: `ImpressionRecorder.record` puts the row on a queue and a background thread writes what
is queued every `FLUSH_SECONDS` (one commit per batch, and on shutdown). A crash of the API can
lose the last fraction of a second of impressions, never acknowledged feedback. Retention is
bounded (`ImpressionStore.prune`: rows older than N days, then the oldest beyond M rows).

Serving statistics: the same thread asks the API's metrics for their totals every
`STATS_SECONDS` (and on shutdown) and stores what changed since the last call, one row per
endpoint and interval (requests, client and server errors, latency histogram), so request
counts and latency percentiles survive restarts of the API and can be summed over any window.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from movierec.data.sqlite import SQLiteStore, between

log = logging.getLogger("movierec")

SCHEMA = """
CREATE TABLE IF NOT EXISTS impressions (
    impression_id TEXT NOT NULL,
    shown_at TEXT NOT NULL,
    user_id INTEGER,
    model_version TEXT,
    source TEXT NOT NULL,
    movie_ids TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS impressions_shown_at ON impressions (shown_at);
CREATE TABLE IF NOT EXISTS serving_stats (
    started_at TEXT NOT NULL,
    ended_at TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    requests INTEGER NOT NULL,
    client_errors INTEGER NOT NULL,
    server_errors INTEGER NOT NULL,
    latency_seconds REAL NOT NULL,
    bucket_bounds TEXT NOT NULL,
    bucket_counts TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS serving_stats_ended_at ON serving_stats (ended_at);
"""
FLUSH_SECONDS = 0.2
BATCH_ROWS = 500
STATS_SECONDS = 60.0


@dataclass(frozen=True)
class EndpointTotals:
    """What an endpoint served, counted since some start: requests, 4xx and 5xx answers, the sum
    of latencies, and how many requests took at most each of `bucket_bounds` seconds (cumulative,
    as a Prometheus histogram; the last bound is infinity)."""

    requests: int
    client_errors: int
    server_errors: int
    latency_seconds: float
    bucket_bounds: tuple[float, ...]
    cumulative_counts: tuple[int, ...]

    def minus(self, earlier: EndpointTotals | None) -> EndpointTotals:
        if earlier is None or earlier.bucket_bounds != self.bucket_bounds:
            return self
        return EndpointTotals(
            self.requests - earlier.requests,
            self.client_errors - earlier.client_errors,
            self.server_errors - earlier.server_errors,
            self.latency_seconds - earlier.latency_seconds,
            self.bucket_bounds,
            tuple(now - then for now, then in zip(self.cumulative_counts, earlier.cumulative_counts, strict=True)),
        )


@dataclass(frozen=True)
class Impression:
    impression_id: str
    shown_at: datetime
    user_id: int | None  # None: a new user (POST /recommendations)
    model_version: str | None
    source: str  # "model" or "popularity"
    movie_ids: tuple[int, ...]  # in the order shown

    def row(self) -> tuple:
        return (
            self.impression_id,
            self.shown_at.astimezone(UTC).isoformat(),
            self.user_id,
            self.model_version,
            self.source,
            json.dumps(list(self.movie_ids)),
        )


class ImpressionStore(SQLiteStore):
    # A crash of the process loses no committed impression; a power cut may lose the last.
    SYNCHRONOUS = "NORMAL"

    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)

    def append_many(self, impressions: Iterable[Impression]) -> int:
        rows = [impression.row() for impression in impressions]
        with self._transaction() as connection:
            connection.executemany("INSERT INTO impressions VALUES (?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def read(self, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
        """Impressions shown in [since, until) (all by default), oldest first; `movie_ids` as lists."""
        where, params = between("shown_at", since, until)
        query = f"SELECT * FROM impressions{where} ORDER BY shown_at, impression_id"
        frame = pd.read_sql_query(query, self._connection(), params=params)
        frame["shown_at"] = pd.to_datetime(frame["shown_at"], utc=True, format="ISO8601")
        frame["user_id"] = frame["user_id"].astype("Int64")
        frame["movie_ids"] = [json.loads(value) for value in frame["movie_ids"]]
        return frame

    def count(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM impressions").fetchone()[0]

    def append_stats(self, started_at: datetime, ended_at: datetime, totals: dict[str, EndpointTotals]) -> None:
        """One row per endpoint that served requests in [started_at, ended_at)."""
        rows = [
            (
                started_at.astimezone(UTC).isoformat(),
                ended_at.astimezone(UTC).isoformat(),
                endpoint,
                t.requests,
                t.client_errors,
                t.server_errors,
                t.latency_seconds,
                json.dumps([_bound(bound) for bound in t.bucket_bounds]),
                json.dumps(list(t.cumulative_counts)),
            )
            for endpoint, t in sorted(totals.items())
            if t.requests > 0
        ]
        if rows:
            with self._transaction() as connection:
                connection.executemany("INSERT INTO serving_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def read_stats(self, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
        """Serving statistics of the intervals that ended in [since, until) (consecutive windows
        count each interval once); `bucket_bounds` and `bucket_counts` (cumulative) as lists."""
        where, params = between("ended_at", since, until)
        query = f"SELECT * FROM serving_stats{where} ORDER BY ended_at, endpoint"
        frame = pd.read_sql_query(query, self._connection(), params=params)
        for column in ("started_at", "ended_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        frame["bucket_bounds"] = [[float(value) for value in json.loads(text)] for text in frame["bucket_bounds"]]
        frame["bucket_counts"] = [json.loads(text) for text in frame["bucket_counts"]]
        return frame

    def prune(self, max_age_days: float, max_rows: int, now: datetime | None = None) -> int:
        """Delete impressions and serving statistics older than `max_age_days`, then the oldest
        impressions beyond `max_rows`; returns how many rows were deleted."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=max_age_days)
        with self._transaction() as connection:
            deleted = connection.execute("DELETE FROM impressions WHERE shown_at < ?", (cutoff.isoformat(),)).rowcount
            deleted += connection.execute(
                "DELETE FROM serving_stats WHERE ended_at < ?", (cutoff.isoformat(),)
            ).rowcount
            deleted += connection.execute(
                "DELETE FROM impressions WHERE rowid IN (SELECT rowid FROM impressions "
                "ORDER BY shown_at DESC, rowid DESC LIMIT -1 OFFSET ?)",
                (max_rows,),
            ).rowcount
        return deleted


class ImpressionRecorder:
    """Records impressions off the request path: `record` queues, a daemon thread wakes every
    `FLUSH_SECONDS` and writes what is queued in transactions of up to `BATCH_ROWS` rows (one
    commit per batch, not per request); `stop` writes what is left. Pruning (`max_age_days`,
    `max_rows`) runs when the recorder starts and then once an hour. With `totals` (the API's
    metrics: endpoint -> `EndpointTotals` since the process started), the same thread stores
    their change every `stats_seconds` and on stop."""

    def __init__(
        self,
        store: ImpressionStore,
        max_age_days: float,
        max_rows: int,
        totals: Callable[[], dict[str, EndpointTotals]] | None = None,
        stats_seconds: float = STATS_SECONDS,
    ) -> None:
        self.store, self.max_age_days, self.max_rows = store, max_age_days, max_rows
        self.totals, self.stats_seconds = totals, stats_seconds
        self._stored_totals: dict[str, EndpointTotals] = {}
        self._stats_since = datetime.now(UTC)
        self._last_stats = time.monotonic()
        self._stats_lock = threading.Lock()
        # Plain tuples (the fields of `Impression`, time as epoch seconds): the request path only
        # draws an id and appends; the writer thread builds the rows.
        self._queue: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = float("-inf")

    def record(self, user_id: int | None, model_version: str | None, source: str, movie_ids: Iterable[int]) -> str:
        impression_id = os.urandom(16).hex()
        self._queue.put((impression_id, time.time(), user_id, model_version, source, movie_ids))
        return impression_id

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="impression-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._thread.join(timeout=30)
            self._thread = None
        self.flush()
        self.store_stats()

    def flush(self) -> None:
        """Write everything queued now, in batches (the caller's thread)."""
        while True:
            batch = []
            while len(batch) < BATCH_ROWS:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if batch:
                try:
                    self.store.append_many(
                        Impression(key, datetime.fromtimestamp(stamp, UTC), user, version, source, tuple(movies))
                        for key, stamp, user, version, source, movies in batch
                    )
                except BaseException:
                    for row in batch:  # kept for the next try
                        self._queue.put(row)
                    raise
            if len(batch) < BATCH_ROWS:
                return

    def store_stats(self) -> None:
        """Store what the API served since the last call (the caller's thread; one at a time)."""
        if self.totals is None:
            return
        with self._stats_lock:
            now, totals = datetime.now(UTC), self.totals()
            changes = {endpoint: t.minus(self._stored_totals.get(endpoint)) for endpoint, t in totals.items()}
            self.store.append_stats(self._stats_since, now, changes)
            self._stored_totals, self._stats_since, self._last_stats = totals, now, time.monotonic()

    def _run(self) -> None:
        while True:
            stopping = self._stopping.wait(FLUSH_SECONDS)
            try:
                if time.monotonic() - self._last_prune > 3600:
                    self.store.prune(self.max_age_days, self.max_rows)
                    self._last_prune = time.monotonic()
                self.flush()
                if not stopping and time.monotonic() - self._last_stats >= self.stats_seconds:
                    self.store_stats()
            except (sqlite3.Error, OSError) as error:
                # The store is locked or the disk full: keep serving and recording; what is queued
                # (and the statistics' change) is written at the next try.
                log.warning("impressions not written yet: %s: %s", type(error).__name__, error)
            if stopping:
                return


def _bound(value: float) -> float | str:
    """A bucket bound as JSON (which has no infinity)."""
    return "inf" if value == float("inf") else value
