"""Benchmark: the whole pipeline (`movierec pipeline`) per dataset: every model's validation and
test NDCG@10, the champion chosen on validation and its ratio to EASE, wall time, peak RSS and
the share of time per stage.

Each case runs in a fresh process with an empty MOVIEREC_HOME, like `make run` on a new machine
(with the ephemeral Prefect server the CLI starts). Stage times come from the flow's own
stopwatch; "Prefect and process overhead" is the wall time no stage accounts for (interpreter
and import start-up, the temporary Prefect API server, flow and task bookkeeping).

Usage: .venv/bin/python bench/pipeline.py [DATASET ...] [--trials N]
       (default: ml-100k ml-latest-small at the settings' tuning budget, as `make run`; data from
       MOVIEREC_DATA_DIR or ../shared/data)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MOVIEREC = REPO / ".venv" / "bin" / "movierec"
PEAK_RSS_WRAPPER = (
    "import resource, subprocess, sys, pathlib; code = subprocess.run(sys.argv[2:]).returncode; "
    "pathlib.Path(sys.argv[1]).write_text(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(code)"
)
STAGES = (
    "ingest",
    "validation",
    "features",
    "tuning",
    "selection",
    "evaluation",
    "final training",
    "registration",
    "export",
)


def run_case(dataset: str, trials: int | None, data_dir: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="movierec-bench-") as home:
        env = {**os.environ, "MOVIEREC_HOME": home, "MOVIEREC_DATA_DIR": str(data_dir)}
        for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL", "PREFECT_HOME"):
            env.pop(variable, None)
        rss_file = Path(home) / "peak-rss"
        started = time.perf_counter()
        # A wrapper process per case, so the peak RSS of its children is this case's alone.
        completed = subprocess.run(
            [
                sys.executable,
                "-c",
                PEAK_RSS_WRAPPER,
                str(rss_file),
                str(MOVIEREC),
                "pipeline",
                "--dataset",
                dataset,
                *(["--trials", str(trials)] if trials is not None else []),
                "--json",
            ],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        if completed.returncode != 0:
            sys.exit(f"{dataset}: pipeline failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
        peak_kib = int(rss_file.read_text())
    return {"result": json.loads(completed.stdout), "wall": wall, "peak_mib": peak_kib / 1024}


def report(dataset: str, case: dict) -> None:
    result, wall = case["result"], case["wall"]
    seconds = result["stage_seconds"]
    overhead = wall - sum(seconds.values())
    tuning, selection = result["tuning"], result["selection"]
    metrics = {row["model"]: row for row in result["metrics"]}
    chosen = selection["chosen"]
    validation = {row["model"]: row["ndcg@10"] for row in selection["validation"]}
    print(
        f"{dataset}: wall {wall:.1f} s, peak RSS {case['peak_mib']:,.0f} MiB (largest process), "
        f"{tuning['trials_this_run']} trials ({tuning['counts']}), "
        f"registered v{result['registration']['version']}, champion v{result['registration']['champion_version']}"
    )
    weights = ", ".join(f"{name} {weight:g}" for name, weight in selection["blend_weights"].items())
    print(f"  blend: {weights}; EASE l2 {selection['ease_l2']}; recency half-life {selection['half_life']}")
    print(f"  movies without a rating: content model's say {selection['unrated_content_weight']:g}")
    print(f"  {'model':<12} {'validation NDCG@10':>19} {'test NDCG@10':>13}")
    for name, row in metrics.items():
        mark = "  <- champion (chosen on validation)" if name == chosen else ""
        print(f"  {name:<12} {validation.get(name, float('nan')):19.4f} {row['ndcg@10']:13.4f}{mark}")
    if "ease" in metrics:
        print(f"  champion / EASE test NDCG@10: {metrics[chosen]['ndcg@10'] / metrics['ease']['ndcg@10']:.3f}")
    for name, reason in selection["skipped"].items():
        print(f"  skipped {name}: {reason}")
    for stage in STAGES:
        print(f"  {stage:<32} {seconds.get(stage, 0.0):7.1f} s  {seconds.get(stage, 0.0) / wall:6.1%}")
    print(f"  {'Prefect and process overhead':<32} {overhead:7.1f} s  {overhead / wall:6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="*", default=["ml-100k", "ml-latest-small"])
    parser.add_argument("--trials", type=int, default=None, help="default: the settings' tuning budget")
    arguments = parser.parse_args()
    data_dir = Path(os.environ.get("MOVIEREC_DATA_DIR") or REPO.parent / "shared" / "data")
    if not data_dir.is_dir():
        sys.exit(f"no dataset folder at {data_dir}; set MOVIEREC_DATA_DIR")
    for dataset in arguments.datasets:
        report(dataset, run_case(dataset, arguments.trials, data_dir))


if __name__ == "__main__":
    main()
