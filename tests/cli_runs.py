"""`movierec pipeline` as a separate process on a test's home, at toy size (as `quick_pipeline`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICK = {
    "MOVIEREC_TUNING__MAX_EPOCHS": "3",
    "MOVIEREC_TRAINING__EPOCHS": "3",
    "MOVIEREC_TRAINING__NO_COMPONENTS": "8",
    "MOVIEREC_PIPELINE__BASELINES": '["popularity"]',
}


def start_pipeline(home: Path, *options: str) -> subprocess.Popen:
    """`movierec pipeline --dataset synthetic --synthetic-ratings 4000 OPTIONS` with only this
    home's settings (none inherited from the caller's environment), output as text on stdout."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MOVIEREC_", "MLFLOW_", "PREFECT_"))}
    env.update(QUICK, MOVIEREC_HOME=str(home), PYTHONUNBUFFERED="1")
    command = [
        sys.executable,
        "-m",
        "movierec.cli",
        "pipeline",
        "--dataset",
        "synthetic",
        "--synthetic-ratings",
        "4000",
    ]
    return subprocess.Popen(
        [*command, *options], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
