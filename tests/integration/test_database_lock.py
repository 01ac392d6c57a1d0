"""`movierec.runlock.database_lock` in a real PostgreSQL (the `postgres` fixture): one holder at
a time across processes, a waiting one names the holder, and `kill -9` of the holder frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from movierec.runlock import database_lock

pytestmark = pytest.mark.slow

HOLD = """
import sys, time
from movierec.runlock import database_lock
with database_lock(sys.argv[1], "registry movierec-lightfm", "retrain elsewhere"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_one_holder_across_processes_and_a_killed_one_frees_it(postgres, monkeypatch):
    _home, storage, pgpass = postgres
    monkeypatch.setenv("PGPASSFILE", pgpass)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, storage], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PGPASSFILE": pgpass})  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        waited: list[str] = []
        killer = None

        def on_wait(holders: str) -> None:
            waited.append(holders)
            nonlocal killer
            killer = time.monotonic()
            os.kill(holder.pid, signal.SIGKILL)  # the holder dies with the lock held

        with database_lock(storage, "registry movierec-lightfm", "retrain here", on_wait):
            acquired = time.monotonic()
        assert waited == [f"movierec retrain elsewhere (pid {holder.pid} on {os.uname().nodename})"]
        assert acquired - killer < 5  # freed as the holder died, not after a timeout
        # Another name is another lock; no URL or a non-PostgreSQL one holds nothing.
        with database_lock(storage, "registry other-model", "x", lambda _: pytest.fail("no one holds it")):
            pass
        with database_lock(None, "registry movierec-lightfm", "x"), database_lock("sqlite:///x.db", "n", "x"):
            pass
    finally:
        holder.kill()
        holder.wait()
