"""`movierec pipeline --tuning-workers 2` with the study in a real PostgreSQL (the `postgres`
fixture): two processes run the trials of one study, each trial one nested MLflow run of the
pipeline's run."""

from __future__ import annotations

import json

import optuna
import pytest
from cli_runs import QUICK, movierec
from mlflow.tracking import MlflowClient
from stores import new_home

pytestmark = pytest.mark.slow


def test_two_workers_share_one_study_and_the_budget(postgres):
    home, storage, pgpass = postgres
    new_home(home)
    shared = {**QUICK, "MOVIEREC_TUNING__STORAGE": storage, "PGPASSFILE": pgpass}
    options = ["--dataset", "synthetic", "--synthetic-ratings", "4000", "--trials", "5", "--json"]
    result = movierec(home, "pipeline", *options, "--tuning-workers", "2", timeout=600, **shared)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["tuning"]["trials_this_run"] == 5

    import os

    os.environ["PGPASSFILE"] = pgpass
    try:
        study = optuna.load_study(study_name=summary["tuning"]["study"], storage=storage)
    finally:
        del os.environ["PGPASSFILE"]
    assert len(study.trials) == 5
    assert not [trial for trial in study.trials if trial.state == optuna.trial.TrialState.RUNNING]
    # Two processes ran them, neither the pipeline's own.
    pids = {trial.user_attrs["pid"] for trial in study.trials}
    assert len(pids) == 2

    client = MlflowClient(f"sqlite:///{home}/mlflow.db")
    parent = client.get_run(summary["run_id"])
    assert parent.data.params["optuna.workers"] == "2" and parent.data.params["optuna.storage"] == "postgresql+psycopg2"
    trials = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.kind = 'optuna-trial'",
    )
    # Each trial one nested run; the budget split 3 + 2 between the workers.
    assert sorted(run.data.tags["optuna.trial"] for run in trials) == [str(trial.number) for trial in study.trials]
    by_worker = [run.data.tags["optuna.worker"] for run in trials]
    assert sorted(by_worker.count(worker) for worker in ("0", "1")) == [2, 3]


def test_parallel_tuning_refuses_the_home_sqlite_study(tmp_path):
    result = movierec(tmp_path / "home", "pipeline", "--dataset", "synthetic", "--tuning-workers", "2")
    assert result.returncode == 2
    assert "--tuning-workers" in result.stderr and "tuning.storage" in result.stderr
    assert not (tmp_path / "home" / "snapshots").exists()  # refused before any work
