"""What a killed run (`kill -9`, a lost machine) leaves behind, found and closed by the next run.

A pipeline run's parent MLflow run carries the pid and host of its process (`OWNER_TAGS`). The
next run on the home holds the run lock (`movierec.runlock`), so no other pipeline run is alive
there: a run still RUNNING whose process is gone on this host died. It is marked FAILED with the
reason, and so are the nested runs (trials, candidates) still RUNNING under it or under a run
that has ended; a RUNNING run of unknown owner (no pid tag: a notebook's) is left alone. A registered version
without a gate decision whose run is no longer running never finished the gate: it is deleted,
so no `challenger` alias points at a model nobody measured and the registry is as the dead run
found it. (Optuna trials left RUNNING are closed by the tuning stage, which owns the study.)
"""

from __future__ import annotations

import logging
import os
import socket

from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

log = logging.getLogger("movierec")

PID_TAG, HOST_TAG = "movierec.pid", "movierec.host"
FAILURE_TAG = "failure.reason"


def owner_tags() -> dict[str, str]:
    """Tags naming this process, for the parent run of a pipeline run."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def close_dead_runs(experiment_id: str, client: MlflowClient | None = None) -> list[str]:
    """Mark FAILED the RUNNING runs of `experiment_id` whose process died on this host, and their
    RUNNING nested runs; returns their run ids."""
    client = client or MlflowClient()
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=5000)
    host = socket.gethostname()
    dead: dict[str, str] = {}
    for run in running:
        tags = run.data.tags
        if PID_TAG in tags and tags.get(HOST_TAG) == host and not process_alive(int(tags[PID_TAG])):
            dead[run.info.run_id] = f"its process (pid {tags[PID_TAG]} on {host}) died before the run ended"
    # Nested runs of a dead run, or of a run that has ended (a RUNNING parent of unknown owner,
    # a notebook's, is left alone with its children).
    still_running = {run.info.run_id for run in running} - set(dead)
    for run in running:
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent is not None and parent not in still_running and run.info.run_id not in dead:
            dead[run.info.run_id] = f"its parent run {parent} ended without closing it"
    for run_id, reason in dead.items():
        client.set_tag(run_id, FAILURE_TAG, reason)
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        log.warning("run %s marked FAILED: %s", run_id, reason)
    return list(dead)


def drop_unfinished_versions(name: str, client: MlflowClient | None = None) -> list[str]:
    """Delete the versions of registered model `name` that a pipeline run registered (tag
    `run_id`, a run with `OWNER_TAGS`) and that have no gate decision while that run is no longer
    running: it died before the gate decided. Returns their version numbers. Versions registered
    any other way are left alone."""
    client = client or MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    dropped = []
    for version in versions:
        if "gate.decision" in version.tags:
            continue
        run_id = version.tags.get("run_id")
        if not run_id:  # not registered by a pipeline run: not ours to judge
            continue
        try:
            run = client.get_run(run_id)
        except MlflowException:
            continue
        status = run.info.status
        if PID_TAG not in run.data.tags or status == "RUNNING":
            continue
        client.delete_model_version(name, version.version)
        dropped.append(str(version.version))
        log.warning(
            "registered version %s of '%s' never finished the gate (its run %s is %s): deleted",
            version.version,
            name,
            run_id,
            status,
        )
    return dropped
