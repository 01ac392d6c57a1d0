"""A pipeline killed with `kill -9`: its temporary Prefect server dies with it, and the next run
marks what it left RUNNING as FAILED (MLflow runs, Optuna trials) and deletes a version that never
finished the gate; finished trials are kept."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from cli_runs import start_pipeline
from mlflow.tracking import MlflowClient
from processes import alive, children
from stores import new_home

from movierec.settings import get_settings
from movierec.tracking import recovery, runs
from movierec.tracking.registry import Registry

pytestmark = pytest.mark.slow


def _running_trials(home: Path) -> int:
    database = home / "optuna.db"
    if not database.is_file():
        return 0
    try:
        with sqlite3.connect(database) as connection:
            return connection.execute("SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_run_killed_during_tuning_leaves_no_process_and_the_next_run_closes_what_it_left(tmp_path):
    home = new_home(tmp_path / "home")
    run = start_pipeline(home, "--trials", "50")
    deadline = time.monotonic() + 240
    while _running_trials(home) == 0 or len(_completed(home)) < 1:
        assert run.poll() is None and time.monotonic() < deadline, run.stdout.read()[-3000:]
        time.sleep(0.3)
    servers = children(run.pid)
    assert servers, "the pipeline runs its temporary Prefect server as a child"
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in servers), "the temporary Prefect server outlived its pipeline"
    finished_before = _completed(home)

    again = start_pipeline(home, "--trials", "1")
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]
    client = MlflowClient(f"sqlite:///{home}/mlflow.db")
    experiment = client.get_experiment_by_name(get_settings().experiment_name)
    dead = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FAILED'")
    parents = [r for r in dead if recovery.PID_TAG in r.data.tags]
    assert len(parents) == 1 and parents[0].data.tags[recovery.PID_TAG] == str(run.pid)
    assert "died before the run ended" in parents[0].data.tags[recovery.FAILURE_TAG]
    assert not client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'")
    study = optuna.load_study(study_name=_study_name(home), storage=f"sqlite:///{home}/optuna.db")
    states = [trial.state for trial in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states and optuna.trial.TrialState.FAIL in states
    failed = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.FAIL]
    assert all("died" in trial.user_attrs["failure"] for trial in failed)
    assert set(finished_before) <= set(_completed(home))  # finished trials are kept


def _completed(home: Path) -> list[int]:
    if not (home / "optuna.db").is_file():
        return []
    try:
        with sqlite3.connect(home / "optuna.db") as connection:
            return [row[0] for row in connection.execute("SELECT number FROM trials WHERE state = 'COMPLETE'")]
    except sqlite3.Error:
        return []


def _study_name(home: Path) -> str:
    with sqlite3.connect(home / "optuna.db") as connection:
        return connection.execute("SELECT study_name FROM studies").fetchone()[0]


def test_a_version_whose_run_died_before_the_gate_is_deleted_and_its_run_failed(home):
    settings = get_settings()
    experiment_id = runs.configure(settings)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs
    with mlflow.start_run(
        tags={recovery.PID_TAG: str(gone.pid), recovery.HOST_TAG: recovery.owner_tags()[recovery.HOST_TAG]}
    ) as parent:
        with mlflow.start_run(nested=True) as child:
            pass
        script = Path(home) / "model.py"
        script.write_text("import mlflow\n\nmlflow.models.set_model(lambda model_input: model_input)\n")
        logged = mlflow.pyfunc.log_model(name="model", python_model=str(script), pip_requirements=["mlflow"])
    # As a killed run leaves them: the parent RUNNING, a child RUNNING, a version with no gate tags.
    client = MlflowClient()
    client.update_run(parent.info.run_id, status="RUNNING")
    client.update_run(child.info.run_id, status="RUNNING")
    registry = Registry(settings.registered_model_name)
    version = mlflow.register_model(logged.model_uri, registry.name, tags={"run_id": parent.info.run_id})
    client.set_registered_model_alias(registry.name, "challenger", version.version)
    by_hand = mlflow.register_model(logged.model_uri, registry.name)  # registered otherwise: left alone

    # A run of unknown owner (no pid tag: a notebook's), still going, with a nested run: left alone.
    notebook = client.create_run(experiment_id)
    nested = client.create_run(experiment_id, tags={"mlflow.parentRunId": notebook.info.run_id})

    closed = recovery.close_dead_runs(experiment_id)
    assert set(closed) == {parent.info.run_id, child.info.run_id}
    assert client.get_run(parent.info.run_id).info.status == "FAILED"
    assert client.get_run(child.info.run_id).info.status == "FAILED"
    assert {client.get_run(run.info.run_id).info.status for run in (notebook, nested)} == {"RUNNING"}
    assert recovery.drop_unfinished_versions(registry.name) == [str(version.version)]
    remaining = {str(v.version) for v in client.search_model_versions(f"name = '{registry.name}'")}
    assert remaining == {str(by_hand.version)}
    assert registry.version_by_alias("challenger") is None
