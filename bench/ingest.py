"""Benchmark: wall time and peak RSS of ingest + validate.

Each case runs the real `ingest` flow in a fresh process with an empty MOVIEREC_HOME (so nothing
is reused), and prints:
  process  - the whole process: Python start, imports, Prefect's temporary API server, the flow
  flow     - the flow call alone
  steps    - the sum of its task run times, as Prefect recorded them, and the slowest steps
  peak RSS - maximum resident memory of the process (from wait4)

Usage:  .venv/bin/python bench/ingest.py [CASE ...]
Cases:  ml-latest-small, ml-100k (need MOVIEREC_DATA_DIR or ../shared/data), synthetic-1m,
        synthetic-25m. Default: all that can run here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES = {
    "ml-latest-small": {"dataset": "ml-latest-small"},
    "ml-100k": {"dataset": "ml-100k"},
    "synthetic-1m": {"dataset": "synthetic", "synthetic_ratings": 1_000_000},
    "synthetic-25m": {"dataset": "synthetic", "synthetic_ratings": 25_000_000},
}

CHILD = """
import json, sys, time
from movierec import runtime
from movierec.settings import get_settings
runtime.configure(get_settings())
from flows.ingest import ingest
runtime.warm_imports("great_expectations")  # as the CLI does
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import TaskRunSort

started = time.perf_counter()
state = ingest(**json.loads(sys.argv[1]), return_state=True)
flow_seconds = time.perf_counter() - started
summary = state.result()
with get_client(sync_client=True) as client:
    runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])),
        sort=TaskRunSort.EXPECTED_START_TIME_ASC,
        limit=200,
    )
steps = {run.name.rsplit("-", 1)[0]: run.total_run_time.total_seconds() for run in runs}
print(json.dumps({"flow_seconds": flow_seconds, "steps": steps, "rows": summary["rows"], "tmdb": summary["tmdb"]}))
"""


def data_dir() -> Path | None:
    explicit = os.environ.get("MOVIEREC_DATA_DIR")
    candidate = Path(explicit) if explicit else REPO.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def run_case(name: str, parameters: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="movierec-bench-") as home:
        env = {**os.environ, "MOVIEREC_HOME": home}
        if data_dir():
            env["MOVIEREC_DATA_DIR"] = str(data_dir())
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(parameters)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # wait4 reports the child's own resource usage, including its peak RSS.
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        stdout, stderr = child.stdout.read(), child.stderr.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{name} failed:\n{stderr[-3000:]}")
        result = json.loads(stdout.strip().splitlines()[-1])
        return {**result, "process_seconds": wall, "peak_rss_mib": usage.ru_maxrss / 1024}


def main(names: list[str]) -> None:
    if not names:
        names = [n for n in CASES if data_dir() or CASES[n]["dataset"] == "synthetic"]
    print(
        f"{'case':<16} {'ratings':>11} {'process s':>10} {'flow s':>8} {'steps s':>8} {'peak RSS':>10}  slowest steps"
    )
    for name in names:
        result = run_case(name, CASES[name])
        steps = result["steps"]
        slowest = ", ".join(
            f"{step} {seconds:.1f}s" for step, seconds in sorted(steps.items(), key=lambda s: -s[1])[:4]
        )
        print(
            f"{name:<16} {result['rows']['ratings']:>11,} {result['process_seconds']:>10.1f} "
            f"{result['flow_seconds']:>8.1f} {sum(steps.values()):>8.1f} {result['peak_rss_mib']:>7.0f} MiB  {slowest}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
