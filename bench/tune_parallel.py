"""Benchmark: the tuning stage with 1 and with 2 worker processes on one Optuna study in the stack's
PostgreSQL, the same trial budget for both; trials per minute and the best validation NDCG@10.

It runs the pipeline's own tuning task (`tasks.tune.tune_hybrid`: the study created once, then W
`tuning worker` task runs on Prefect's process pool, each trial a nested MLflow run) on the
dataset's validation split, inside a Prefect flow and an MLflow run (a throwaway SQLite store).
PostgreSQL is started by `movierec.stack` in a throwaway home under /var/tmp and stopped at the
end; each worker count tunes a study of its own. The wall time includes starting the worker
processes (spawned: each imports the project). Trials per minute depend on how many the pruner
stops early (fewer in parallel: it judges against fewer finished trials), so the epochs trained
per minute are printed too.

Usage: .venv/bin/python bench/tune_parallel.py [DATASET] [TRIALS]   (default ml-100k, 16;
MOVIEREC_DATA_DIR or ../shared/data)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import optuna
from prefect import flow
from recommenders import snapshot_of

from features.splits import validation_split
from movierec import runtime
from movierec.settings import Settings, get_settings
from movierec.stack import Stack
from movierec.training import protocol
from tasks.tune import tune_hybrid


@flow(name="bench tuning workers")
def tune_with(settings: Settings, dataset: str, workers: int, trials: int) -> tuple[float, dict]:
    tables, _ = snapshot_of(dataset)
    held_out = protocol.held_out_split(settings, tables.ratings)
    validation = validation_split(held_out)
    with mlflow.start_run(run_name=f"{workers} workers"):
        started = time.perf_counter()
        tuned = tune_hybrid(settings, f"{dataset}-{workers}w", "bench", tables, held_out, validation, trials, None)
        seconds = time.perf_counter() - started
    study = optuna.load_study(study_name=tuned.study_name, storage=settings.tuning.storage)
    epochs = sum(len(trial.user_attrs.get("ndcg_by_epoch", [])) for trial in study.trials)
    return seconds, {"ran": tuned.trials_this_run, "epochs": epochs, "best": tuned.best_value, "counts": tuned.counts}


def main(dataset: str, trials: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="movierec-bench-", dir="/var/tmp"))
    folder.chmod(0o755)  # PostgreSQL runs as the postgres user when we are root
    os.environ["MOVIEREC_HOME"] = str(folder / "home")
    runtime.configure(get_settings())
    stack = Stack(get_settings())
    try:
        storage = stack.database_up()
        os.environ["PGPASSFILE"] = stack.exports()["PGPASSFILE"]
        mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
        print(f"{dataset}: {trials} trials per worker count, study storage PostgreSQL ({storage.split('@')[-1]})")
        for workers in (1, 2):
            settings = get_settings().model_copy(deep=True)
            settings.tuning.storage, settings.tuning.workers, settings.tuning.timeout_seconds = storage, workers, None
            seconds, tuned = tune_with(settings, dataset, workers, trials)
            counts = ", ".join(f"{count} {state}" for state, count in tuned["counts"].items())
            print(
                f"{workers} worker{'s' if workers > 1 else ' '}: {tuned['ran']} trials in {seconds:6.1f} s = "
                f"{tuned['ran'] / seconds * 60:5.2f} trials/min ({counts}), {tuned['epochs'] / seconds * 60:5.1f} "
                f"epochs/min; best validation NDCG@10 {tuned['best']:.4f}"
            )
    finally:
        stack.database_down()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "ml-100k", int(sys.argv[2]) if len(sys.argv) > 2 else 16)
