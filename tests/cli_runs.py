"""`movierec` commands as separate processes on a test's home, with only that home's settings;
`movierec pipeline` at toy size (as `quick_pipeline`)."""

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


def own_settings(home: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without its movierec, MLflow and Prefect settings, plus
    MOVIEREC_HOME=`home` and `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MOVIEREC_", "MLFLOW_", "PREFECT_"))}
    return {**env, "MOVIEREC_HOME": str(home), **extra}


def movierec(home: Path, *args: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
    """`movierec ARGS` on `home` (settings: `own_settings`), run to the end, output as text."""
    command = [sys.executable, "-m", "movierec.cli", *args]
    env = own_settings(home, **extra)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def start_pipeline(home: Path, *options: str) -> subprocess.Popen:
    """`movierec pipeline --dataset synthetic --synthetic-ratings 4000 OPTIONS` with only this
    home's settings (none inherited from the caller's environment), output as text on stdout."""
    env = own_settings(home, **QUICK, PYTHONUNBUFFERED="1")
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
