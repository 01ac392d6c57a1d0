"""MLflow tracking for pipeline runs: where runs go, the parent run, names MLflow accepts, and
what a run records about its data (datasets, feature vocabularies).

The parent run is opened by the flow and stays active in its thread; Prefect 3 runs a sync
flow's tasks in that same thread, so tasks log to it and open nested runs with the fluent API.
A run that raises ends FAILED, with the error as tag `error` and its traceback as `error.txt`.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.entities import Metric

from movierec.settings import REPO_ROOT, Settings

# MLflow keys allow letters, digits, "_", "-", ".", " ", "/"; "ndcg@10" becomes "ndcg_at_10".
log = logging.getLogger("movierec")
_INVALID_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def metric_key(name: str) -> str:
    return _INVALID_KEY.sub("_", name.replace("@", "_at_").replace("+", "plus"))


def finite_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Numeric, non-NaN entries under MLflow-safe keys (NaN: metric undefined for the model)."""
    return {
        prefix + metric_key(name): float(value)
        for name, value in metrics.items()
        if isinstance(value, int | float) and value == value
    }


# MLflow 3's UI opens an experiment in the view its kind asks for; without this tag it may guess
# the GenAI view (traces, token usage) instead of the runs table and charts.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def configure(settings: Settings) -> str:
    """Point MLflow at the settings' stores and return the experiment id.

    With the default local store the experiment's artifacts go to `<home>/mlartifacts`; with a
    tracking server the server decides where artifacts live. The experiment is tagged as a
    (classic) model-training experiment.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    # A tracking server that fails gets each request retried 3 times with backoff (2, 4, 8 s): a
    # restart is ridden out, and a run whose server died fails within a minute, not after MLflow's
    # default 7 retries (about 4 minutes) for each of its last requests. A value set wins.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri)
    experiment_id = experiment(settings, settings.experiment_name)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def experiment(settings: Settings, name: str) -> str:
    """The id of experiment `name` in the current tracking store, created if absent (artifacts
    under `<home>/mlartifacts` with the default local store)."""
    found = mlflow.get_experiment_by_name(name)
    if found is None:
        local = settings.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in settings.tracking_uri
        location = settings.artifacts_dir.as_uri() if local else None
        return mlflow.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
        )
    if EXPERIMENT_KIND_TAG not in found.tags:
        mlflow.MlflowClient().set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return found.experiment_id


def code_version() -> str:
    """The git commit of the code, with "-dirty" for uncommitted changes; "unknown" outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


@contextmanager
def pipeline_run(run_name: str, tags: dict[str, str]) -> Iterator[mlflow.ActiveRun]:
    """The parent run of one pipeline run; FAILED with the error recorded if the body raises."""
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        try:
            yield run
        except BaseException as error:
            try:
                mlflow.set_tag("error", f"{type(error).__name__}: {error}"[:4000])
                mlflow.log_text("".join(traceback.format_exception(error)), "error.txt")
            except Exception as unrecorded:  # the tracking server may be what failed the run
                log.warning("the error could not be recorded on run %s: %s", run.info.run_id, unrecorded)
            raise


def log_series(run_id: str, key: str, values: list[float]) -> None:
    """One metric per step (epoch 1, 2, ...) in a single request, so the UI draws a curve."""
    if not values:
        return
    timestamp = int(mlflow.utils.time.get_current_time_millis())
    metrics = [Metric(metric_key(key), float(value), timestamp, step) for step, value in enumerate(values, start=1)]
    mlflow.tracking.MlflowClient().log_batch(run_id, metrics=metrics)


def log_datasets(snapshot, parts: dict) -> None:
    """Data lineage on the active run: each named frame of `parts` (e.g. the snapshot's ratings
    and the split's train / test parts) as an MLflow dataset input, its digest derived from the
    snapshot id and its source the snapshot folder."""
    source = snapshot.path.as_uri()
    with warnings.catch_warnings():
        # Two hints that do not apply here: integer columns and missing values (that concerns
        # model inputs), and a file URI matching two equivalent local source types.
        warnings.simplefilter("ignore", UserWarning)
        for context, frame in parts.items():
            dataset = mlflow.data.from_pandas(
                frame, source=source, name=f"{snapshot.dataset}-{context}", digest=f"{snapshot.id}-{context}"[:36]
            )
            mlflow.log_input(dataset, context=context)


def log_feature_vocabularies(folder: Path) -> None:
    """The vocabularies and settings of a feature store folder as run artifacts (`features/`),
    and its path as tag `features_path`."""
    for name in ("item_vocabulary.parquet", "user_vocabulary.parquet", "settings.json"):
        mlflow.log_artifact(str(folder / name), "features")
    mlflow.set_tag("features_path", str(folder))
