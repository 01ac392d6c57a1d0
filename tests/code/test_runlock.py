"""One run at a time per home: the lock names its holder, waits or fails fast, is re-entrant in a
process and dies with its holder (kill -9 included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from movierec.runlock import RunLocked, holder, run_lock

REPO = Path(__file__).resolve().parents[2]
HOLD = textwrap.dedent(
    """
    import sys, time
    from movierec.runlock import run_lock
    with run_lock(sys.argv[1], "retrain ml-100k"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def _holder(home: Path, seconds: float) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(home), str(seconds)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_busy_home_names_its_holder_and_fails_fast_without_waiting(tmp_path):
    process = _holder(tmp_path, 30)
    try:
        assert holder(tmp_path)["label"] == "retrain ml-100k" and holder(tmp_path)["pid"] == process.pid
        expected = rf"run 'retrain ml-100k' \(pid {process.pid}, started .*\) is using"
        with pytest.raises(RunLocked, match=expected), run_lock(tmp_path, "second", wait=False):
            pass
    finally:
        process.kill()
        process.wait()


def test_a_waiting_run_says_what_it_waits_for_and_goes_on_when_the_holder_ends(tmp_path):
    process = _holder(tmp_path, 1.0)
    told = []
    started = time.monotonic()
    with run_lock(tmp_path, "second", on_wait=told.append, poll_seconds=0.05):
        assert holder(tmp_path)["label"] == "second" and holder(tmp_path)["pid"] == os.getpid()
    assert time.monotonic() - started >= 0.5 and [record["pid"] for record in told] == [process.pid]
    process.wait()


def test_a_killed_holder_never_blocks_the_next_run(tmp_path):
    process = _holder(tmp_path, 60)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    with run_lock(tmp_path, "next", wait=False):
        pass


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with run_lock(tmp_path, "cli", wait=False):
        with run_lock(tmp_path, "flow", wait=False):  # the flow the CLI runs takes it again
            assert holder(tmp_path)["label"] == "cli"
        # Still held after the inner block: another process cannot take it.
        probe = subprocess.run(
            [sys.executable, "-c", "import sys; from movierec.runlock import run_lock, RunLocked\n"
             "try:\n    run_lock(sys.argv[1], 'probe', wait=False).__enter__()\nexcept RunLocked:\n    sys.exit(3)",
             str(tmp_path)],
            cwd=REPO,
        )  # fmt: skip
        assert probe.returncode == 3
    with run_lock(tmp_path, "again", wait=False):
        pass
