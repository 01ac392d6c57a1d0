"""Benchmark: how the cost of each stage grows with the data, from 1M to 25M synthetic ratings.

For each size, in a fresh MOVIEREC_HOME (kept under --homes, so its champion can be served and
exported again afterwards):

1. `movierec pipeline --dataset synthetic --synthetic-ratings N` in a fresh process (the embedded
   SQLite MLflow store, the temporary Prefect server), with `--trials`/`--timeout`: wall time,
   peak RSS of the largest process, each stage's seconds (the flow's own stopwatch), the users
   the validation split and the evaluation sampled, and the champion's test NDCG@10 beside
   popularity's on the same held-out users;
2. `movierec export-recs`: the champion's top-20 for every user, streamed to Parquet, in a fresh
   process: seconds, users/s, peak RSS;
3. `movierec serve`: seconds from start until /readyz says ready (the bundle loaded) and the
   server's resident memory then; with --load, `bench/load_api.py --only ours` at 32 connections.

The stage table at the end has one column per size, so the growth of every stage is visible.

Usage: .venv/bin/python bench/scale.py [SIZES ...] [--trials 4] [--timeout 600] [--max-epochs 10]
       [--continue-epochs 3] [--threads 2] [--homes /var/tmp/movierec-scale] [--load] [--reuse]
       SIZES: 1m 5m 25m (default all three)
`--threads` sets training.num_threads (LightFM's Hogwild threads: faster, not bit-reproducible).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from pipeline import PEAK_RSS_WRAPPER, STAGES  # bench/ is the script's folder, first on sys.path

REPO = Path(__file__).resolve().parent.parent
MOVIEREC = REPO / ".venv" / "bin" / "movierec"
SIZES = {"1m": 1_000_000, "5m": 5_000_000, "25m": 25_000_000}
LOAD = ("--levels", "32", "--duration", "20")


def environment(home: Path, threads: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MOVIEREC_", "MLFLOW_", "PREFECT_"))}
    return {**env, "MOVIEREC_HOME": str(home), "MOVIEREC_TRAINING__NUM_THREADS": str(threads)}


def budget(home: Path, arguments: argparse.Namespace) -> dict[str, str]:
    """The pipeline's environment: `environment` plus the stated epoch budget (the hybrid's trials
    and the mf baseline at most --max-epochs; the served factors continued from the evaluation
    twin's for --continue-epochs)."""
    return {
        **environment(home, arguments.threads),
        "MOVIEREC_TUNING__MAX_EPOCHS": str(arguments.max_epochs),
        "MOVIEREC_TRAINING__EPOCHS": str(arguments.max_epochs),
        **({"MOVIEREC_TRAINING__CONTINUE_EPOCHS": str(arguments.continue_epochs)} if arguments.continue_epochs else {}),
    }


def measured(command: list[str], env: dict[str, str], home: Path) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run `command` through the peak-RSS wrapper: (completed, wall seconds, peak RSS GiB)."""
    rss_file = home / "peak-rss"
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_WRAPPER, str(rss_file), *command],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        sys.exit(f"{' '.join(command[:3])} failed ({completed.returncode}):\n{completed.stderr[-6000:]}")
    return completed, wall, int(rss_file.read_text()) / 1024**2


def pipeline(home: Path, n_ratings: int, arguments: argparse.Namespace) -> dict:
    command = [str(MOVIEREC), "pipeline", "--dataset", "synthetic", "--synthetic-ratings", str(n_ratings), "--json"]
    command += ["--trials", str(arguments.trials), "--timeout", str(arguments.timeout)]
    completed, wall, peak = measured(command, budget(home, arguments), home)
    case = {"result": json.loads(completed.stdout), "wall": wall, "peak_gib": peak}
    (home / "bench-pipeline.json").write_text(json.dumps(case))
    return case


def export(home: Path, arguments: argparse.Namespace) -> dict:
    out = home / "bench-export.parquet"
    command = [str(MOVIEREC), "export-recs", "--out", str(out), "--k", "20"]
    _, wall, peak = measured(command, environment(home, arguments.threads), home)
    users = pq.read_table(out, columns=["user_id"])["user_id"]
    return {"wall": wall, "users": len(pc.unique(users)), "peak_gib": peak, "bytes": out.stat().st_size}


def serve(home: Path, arguments: argparse.Namespace) -> dict:
    port = 18_000 + os.getpid() % 1000
    env = environment(home, arguments.threads)
    started = time.perf_counter()
    server = subprocess.Popen(
        [str(MOVIEREC), "serve", "--port", str(port)],
        env=env,
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        while True:
            if server.poll() is not None:
                sys.exit(f"movierec serve exited: {server.stderr.read().decode()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
                    ready = json.loads(response.read())
                if ready.get("status") == "ready":
                    break
            except OSError:
                pass
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        rss = int(Path(f"/proc/{server.pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024**2
        result = {"ready_seconds": seconds, "rss_gib": rss, "catalogue": ready.get("catalogue")}
    finally:
        server.terminate()
        server.wait(timeout=30)
    if arguments.load:
        load = subprocess.run(
            [sys.executable, str(REPO / "bench" / "load_api.py"), "--home", str(home), "--only", "ours", *LOAD],
            env=env,
            capture_output=True,
            text=True,
        )
        result["load"] = load.stdout.strip() or load.stderr[-2000:]
    return result


def report(size: str, case: dict) -> None:
    result = case["pipeline"]["result"]
    metrics = {row["model"]: row for row in result["metrics"]}
    chosen = result["selection"]["chosen"]
    snapshot = result["snapshot"]["rows"]
    print(
        f"\n{size}: {snapshot}\n"
        f"  pipeline: wall {case['pipeline']['wall']:.0f} s, peak RSS {case['pipeline']['peak_gib']:.2f} GiB, "
        f"{result['tuning']['trials_this_run']} trials ({result['tuning']['counts']}), "
        f"{result['users_evaluated']:,} test users scored"
    )
    popularity = metrics.get("popularity", {}).get("ndcg@10", float("nan"))
    print(
        f"  champion {chosen} (v{result['registration']['champion_version']}): test NDCG@10 "
        f"{metrics[chosen]['ndcg@10']:.4f}, popularity {popularity:.4f} ({metrics[chosen]['ndcg@10'] / popularity:.2f}x)"
    )
    for name, row in metrics.items():
        print(f"    {name:<12} NDCG@10 {row['ndcg@10']:.4f}  fit {row['train_seconds']:8.1f} s")
    for name, reason in result["selection"]["skipped"].items():
        print(f"  skipped {name}: {reason}")
    exported = case["export"]
    print(
        f"  export-recs top-20: {exported['users']:,} users in {exported['wall']:.1f} s = "
        f"{exported['users'] / exported['wall']:,.0f} users/s (whole process), peak RSS {exported['peak_gib']:.2f} GiB, "
        f"{exported['bytes'] / 1024**2:.0f} MiB"
    )
    served = case["serve"]
    print(
        f"  serve: ready in {served['ready_seconds']:.1f} s with {served['catalogue']:,} movies, "
        f"RSS {served['rss_gib']:.2f} GiB"
    )
    if "load" in served:
        print("  " + served["load"].replace("\n", "\n  "))


def stage_table(cases: dict[str, dict]) -> None:
    print(f"\n{'stage seconds':<16}" + "".join(f"{size:>10}" for size in cases))
    for stage in STAGES:
        row = [case["pipeline"]["result"]["stage_seconds"].get(stage, 0.0) for case in cases.values()]
        print(f"{stage:<16}" + "".join(f"{seconds:10.1f}" for seconds in row))
    print(f"{'wall':<16}" + "".join(f"{case['pipeline']['wall']:10.1f}" for case in cases.values()))
    print(f"{'peak RSS GiB':<16}" + "".join(f"{case['pipeline']['peak_gib']:10.2f}" for case in cases.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="*", choices=[*SIZES, []], default=list(SIZES))
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=10,
        help="tuning.max_epochs and training.epochs: a LightFM fit's epochs at most",
    )
    parser.add_argument(
        "--continue-epochs",
        type=int,
        default=3,
        help="training.continue_epochs: the served factors' epochs on every rating (0: a fit from scratch)",
    )
    parser.add_argument("--homes", type=Path, default=Path("/var/tmp/movierec-scale"))
    parser.add_argument("--load", action="store_true", help="also run bench/load_api.py at 32 connections")
    parser.add_argument(
        "--reuse", action="store_true", help="keep a size's home whose pipeline finished; measure export and serving"
    )
    arguments = parser.parse_args()
    print(
        f"synthetic ratings {', '.join(arguments.sizes)}: {arguments.trials} trials or {arguments.timeout:g} s of "
        f"tuning, at most {arguments.max_epochs} epochs, served factors continued for {arguments.continue_epochs}, LightFM threads {arguments.threads}, {os.cpu_count()} cores"
    )
    cases = {}
    for size in arguments.sizes:
        home = arguments.homes / size
        if arguments.reuse and (home / "bench-pipeline.json").is_file():
            cases[size] = {"pipeline": json.loads((home / "bench-pipeline.json").read_text())}
        else:
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            cases[size] = {"pipeline": pipeline(home, SIZES[size], arguments)}
        cases[size]["export"] = export(home, arguments)
        cases[size]["serve"] = serve(home, arguments)
        report(size, cases[size])
    stage_table(cases)


if __name__ == "__main__":
    main()
