"""One pipeline run at a time per `MOVIEREC_HOME`.

Runs on one home share its stores: the SQLite MLflow database and registry, the Optuna study,
the snapshots, the Prefect database of the temporary server. Two runs at once raced in all of
them (both promoted themselves as the first model; MLflow's schema migration failed in one), so
a run holds an exclusive `flock` on `<home>/pipeline.lock` from before anything opens those
stores until it ends. The kernel releases the lock when its process dies, `kill -9` included: a
dead run never blocks the next. The holder writes who it is into the file, so a waiting run can
say what it waits for. Within one process the lock is re-entrant (the CLI takes it before the
flow it runs takes it again). `movierec promote` and `rollback` take it too, so the gate's
read-compare-move of `champion` never interleaves with a manual move.

Runs on different homes sharing one registry (workers on several machines of one stack) cannot
see each other's home lock: `database_lock` serialises them in the PostgreSQL they share.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from movierec.settings import Settings

LOCK_FILE = "pipeline.lock"

_held: dict[Path, tuple[int, int]] = {}  # path -> (file descriptor, depth) held by this process
_guard = threading.Lock()


class RunLocked(RuntimeError):
    """Another run holds the home's lock and the caller chose not to wait."""


def holder(home: Path) -> dict | None:
    """Who holds (or last held) the lock of `home`: label, pid, started; None if unknown."""
    try:
        text = (Path(home) / LOCK_FILE).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def describe(record: dict | None) -> str:
    if not record:
        return "another run"
    return f"run '{record.get('label')}' (pid {record.get('pid')}, started {record.get('started')})"


@contextmanager
def run_lock(
    home: Path,
    label: str,
    *,
    wait: bool = True,
    on_wait: Callable[[dict | None], None] | None = None,
    poll_seconds: float = 0.5,
) -> Iterator[None]:
    """Hold the home's run lock for the block. Busy: with `wait`, call `on_wait(holder)` once and
    wait; without, raise `RunLocked` naming the holder."""
    path = (Path(home) / LOCK_FILE).resolve()
    with _guard:
        held = _held.get(path)
        if held is not None:  # re-entrant within the process
            _held[path] = (held[0], held[1] + 1)
    if held is None:
        descriptor = _acquire(path, home, label, wait, on_wait, poll_seconds)
        with _guard:
            _held[path] = (descriptor, 1)
    try:
        yield
    finally:
        _release(path)


def _acquire(
    path: Path, home: Path, label: str, wait: bool, on_wait: Callable[[dict | None], None] | None, poll_seconds: float
) -> int:
    """Take the flock of `path` (see `run_lock`), write who holds it; returns the descriptor."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        told = False
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                current = holder(home)
                if not wait:
                    raise RunLocked(
                        f"{describe(current)} is using {home}; wait for it to finish or run without --no-wait"
                    ) from None
                if not told and on_wait is not None:
                    on_wait(current)
                    told = True
                time.sleep(poll_seconds)
        record = {"label": label, "pid": os.getpid(), "started": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(record).encode(), 0)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _release(path: Path) -> None:
    with _guard:
        descriptor, depth = _held[path]
        if depth > 1:
            _held[path] = (descriptor, depth - 1)
            return
        del _held[path]
    fcntl.flock(descriptor, fcntl.LOCK_UN)
    os.close(descriptor)


@contextmanager
def database_lock(
    url: str | None, name: str, label: str, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold PostgreSQL advisory lock `name` in the database at `url` for the block: one holder at a
    time among every process and machine reaching that database (runs on different homes, e.g.
    workers on several machines sharing one stack, whose home locks cannot see each other).
    Busy: `on_wait(holders)` is called once, naming the holder, and the call waits. Nothing is
    held when `url` is None or not PostgreSQL.

    The lock belongs to the connection: it ends with its process, `kill -9` included (the server
    sees the socket close), and the stack's server drops a connection whose machine is gone
    after about a minute of failed keepalives."""
    if url is None or not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    who = f"movierec {label} (pid {os.getpid()} on {socket.gethostname()})"[:63]
    engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args={"application_name": who})
    connection = engine.connect()
    try:
        if not connection.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
            if on_wait is not None:
                holders = connection.execute(
                    sqlalchemy.text(
                        "SELECT string_agg(a.application_name, ', ') FROM pg_locks l JOIN pg_stat_activity a "
                        "USING (pid) WHERE l.locktype = 'advisory' AND l.granted "
                        "AND ((l.classid::bigint << 32) | l.objid::bigint) = :key"
                    ),
                    {"key": key},
                ).scalar()
                on_wait(holders or "another run")
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        connection.commit()
        yield
    finally:
        # Closing the connection releases the lock, also when the database is what failed.
        with contextlib.suppress(Exception):
            connection.close()
        engine.dispose()


def registry_lock(settings: Settings, label: str, on_wait: Callable[[str], None] | None = None):
    """`database_lock` of the settings' registered model in their shared PostgreSQL (`tuning.storage`):
    what a run's gate and a manual move of `champion` hold."""
    return database_lock(settings.tuning.storage, f"registry {settings.registered_model_name}", label, on_wait)
