"""The SQLite files the API writes and the flows read (feedback, impressions): one file in WAL
mode shared by threads and processes, each with its own connection, writes in transactions."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path


class SQLiteStore:
    """Subclasses set `SYNCHRONOUS` (FULL: a committed write survives a power cut; NORMAL: a
    crash of the process loses none) and pass their schema."""

    SYNCHRONOUS = "FULL"

    def __init__(self, path: Path, schema: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connection().executescript(schema)

    def _connection(self) -> sqlite3.Connection:
        """One connection per thread and process: sqlite3 connections must not be shared across
        threads, nor carried into a forked child (the child opens its own)."""
        connection = getattr(self._local, "connection", None)
        if connection is None or getattr(self._local, "pid", None) != os.getpid():
            connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={self.SYNCHRONOUS}")
            self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    @contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """A transaction (IMMEDIATE: a write; DEFERRED: one consistent read), committed when the
        block ends, rolled back if it raises."""
        connection = self._connection()
        connection.execute(f"BEGIN {mode}")
        try:
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def between(column: str, since: datetime | None, until: datetime | None) -> tuple[str, list[str]]:
    """A WHERE clause keeping rows whose ISO-8601 UTC `column` is in [since, until) (either end
    open when None), and its parameters."""
    conditions, params = ["1 = 1"], []
    if since is not None:
        conditions.append(f"{column} >= ?")
        params.append(since.astimezone(UTC).isoformat())
    if until is not None:
        conditions.append(f"{column} < ?")
        params.append(until.astimezone(UTC).isoformat())
    return " WHERE " + " AND ".join(conditions), params
