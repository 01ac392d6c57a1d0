"""The tuning stage: an Optuna study of the LightFM hybrid, tracked in MLflow, and the final fit of
its best setting.

The study lives in the Optuna storage of the settings and is named after everything its
objective depends on (dataset, snapshot, split rule, k, epochs, search space, code), so a run on
an unchanged snapshot continues the same study: an interrupted run loses no finished trial, and
a second run adds its trials to the first run's. Each trial of this run is a nested MLflow run
with its parameters and its validation NDCG@k per epoch; how it ended (complete, pruned,
failed) is its tag `optuna.state` and its run status (FINISHED, KILLED, FAILED).

With `tuning.workers` W > 1 and a database server as the storage, W processes run the trials of
one study (`tasks.tune`): `open_study` creates it once before they join, `run_worker` is one
worker's loop, `finish` reads the outcome. A trial records the process running it, so the next
run closes the trials of a process that died (`close_dead_trials`); Optuna's heartbeat closes
those of another machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
import sqlalchemy.exc

import models.tune
from features.prepare import Prepared
from features.splits import Split
from features.tables import CanonicalTables
from models.tune import (
    TUNABLE_ITEM_GROUPS,
    TUNABLE_USER_GROUPS,
    TrialSetup,
    best_setup,
    create_study,
    default_params,
    make_objective,
    present_groups,
    trial_counts,
)
from movierec.errors import DataError
from movierec.settings import Settings
from movierec.tracking import reports, runs
from movierec.tracking.recovery import process_alive
from movierec.training.protocol import feature_code_hash

log = logging.getLogger("movierec")
RUN_STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}


@dataclass
class Tuned:
    study_name: str
    setup: TrialSetup
    best_value: float
    best_trial: int
    counts: dict[str, int]  # trials of the whole study by state
    trials_this_run: int


def study_name(settings: Settings, dataset: str, snapshot_id: str, held_out: Split) -> str:
    tuning = settings.tuning
    space = {
        "split": [held_out.kind, held_out.params],
        "validation_users": settings.training.validation_users,
        "threshold": settings.training.positive_threshold,
        "k": settings.training.k,
        "max_epochs": tuning.max_epochs,
        "grid": tuning.sampler == "grid",
        "seed": settings.training.seed,
        "code": [feature_code_hash(), hashlib.sha256(Path(models.tune.__file__).read_bytes()).hexdigest()[:16]],
    }
    digest = hashlib.sha256(json.dumps(space, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{dataset}-{snapshot_id}-{digest}"


def setup_params(setup: TrialSetup) -> dict:
    """A trial's setup as flat MLflow params; a feature group left out has weight 0."""
    params = dict(setup.lightfm)
    params.update({f"item_{group}": setup.item_groups.get(group, 0.0) for group in TUNABLE_ITEM_GROUPS})
    params.update({f"user_{group}": setup.user_groups.get(group, 0.0) for group in TUNABLE_USER_GROUPS})
    return params


def settings_study(settings: Settings, name: str, storage: str, worker: int = 0) -> optuna.Study:
    """The study `name` in `storage` with the settings' sampler, pruner, seed and heartbeat, as
    opened by parallel worker number `worker`; a storage that cannot be read (a damaged SQLite
    file, a database that refuses) is a `DataError` naming it."""
    tuning = settings.tuning
    try:
        return create_study(
            name,
            storage,
            sampler=tuning.sampler,
            seed=tuning.seed,
            pruner=tuning.pruner,
            worker=worker,
            # SQLite is one machine's: `close_dead_trials` knows its dead trials without one.
            heartbeat_seconds=None if storage.startswith("sqlite") else tuning.heartbeat_seconds,
        )
    except sqlalchemy.exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).splitlines()[0][:200]
        advice = (
            f"delete {storage_name(storage)} to start the study afresh (its finished trials are lost)"
            if storage.startswith("sqlite:///")
            else "check that the database is up and reachable (tuning.storage)"
        )
        raise DataError(
            f"the Optuna study storage {storage_name(storage)} cannot be used ({reason}): {advice}"
        ) from None


def storage_name(storage: str) -> str:
    """A storage URL as it may be shown: the SQLite file, or the database's host and name."""
    return storage.removeprefix("sqlite:///") if storage.startswith("sqlite:///") else storage.split("@")[-1]


def settings_objective(settings: Settings, tables: CanonicalTables, validation: Split, **hooks) -> Callable:
    """The objective the settings describe (k, epochs, threshold, seed, grid) on `validation`;
    `hooks`: `on_trial` and `prepare_features` of `models.tune.make_objective`."""
    training, tuning = settings.training, settings.tuning
    return make_objective(
        validation,
        {"users": tables.users, "items": tables.items, "tags": tables.tags},
        k=training.k,
        max_epochs=tuning.max_epochs,
        threshold=training.positive_threshold,
        seed=training.seed,
        grid=tuning.sampler == "grid",
        **hooks,
    )


def run_trials(study: optuna.Study, objective: Callable, trials: int | None, timeout: float | None) -> int:
    """Optimise `study` for `trials` and/or `timeout`; returns how many trials this call ran (other
    workers on a shared study add theirs meanwhile, so the study's count does not tell)."""
    ran = []
    study.optimize(
        owned(objective),
        n_trials=trials,
        timeout=timeout,
        gc_after_trial=False,
        callbacks=[lambda _study, trial: ran.append(trial.number)],
    )
    return len(ran)


def owned(objective: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
    """`objective`, each trial first recording the process running it (user attributes `pid` and
    `host`), for `close_dead_trials`."""

    def run(trial: optuna.Trial) -> float:
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("host", socket.gethostname())
        return objective(trial)

    return run


def close_dead_trials(study: optuna.Study, *, own: bool = False) -> list[int]:
    """Mark FAILED (with the reason as user attribute `failure`) every RUNNING trial of `study`
    whose process is known to be gone: it ran on this host and its pid no longer runs, or, with
    `own` (the home's own study, whose run lock the caller holds), any. Returns their numbers.
    Another host's trial is left to Optuna's heartbeat (`tuning.heartbeat_seconds`)."""
    host = socket.gethostname()
    closed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = trial.user_attrs
        mine = owner.get("host") == host and "pid" in owner
        if not own and (not mine or process_alive(int(owner["pid"]))):
            continue
        process = f"its process (pid {owner['pid']} on {host})" if mine else "its process"
        optuna.trial.Trial(study, trial._trial_id).set_user_attr(
            "failure", f"{process} died before the trial ended; closed by the next run"
        )
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        closed.append(trial.number)
    if closed:
        log.warning(
            "tuning: trials %s of study %s were left running by a dead process: marked FAILED", closed, study.study_name
        )
    return closed


def shares(trials: int | None, workers: int) -> list[int | None]:
    """`trials` split between `workers` as evenly as whole trials go (None: no limit for any)."""
    if trials is None:
        return [None] * workers
    return [trials // workers + (worker < trials % workers) for worker in range(workers)]


def open_study(
    settings: Settings,
    dataset: str,
    snapshot_id: str,
    tables: CanonicalTables,
    held_out: Split,
    trials: int | None,
    timeout: float | None,
) -> str:
    """Create (or resume) this run's study, once, before any worker joins it (concurrent creation
    races in Optuna), and close the trials dead processes left running; its name. A new study's
    first trial is the settings' own hybrid (`models.tune.default_params`)."""
    name = study_name(settings, dataset, snapshot_id, held_out)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = settings_study(settings, name, settings.optuna_storage)
    # The home's own study is this run's alone while it holds the home's lock.
    close_dead_trials(study, own=settings.tuning.storage is None)
    if not study.trials and settings.tuning.sampler != "grid":
        training = settings.training
        item_groups, user_groups = present_groups(tables.users, tables.items, tables.tags)
        lightfm = training.lightfm_params()
        study.enqueue_trial(
            default_params(
                lightfm,
                training.item_feature_groups,
                training.user_feature_groups,
                item_groups=item_groups,
                user_groups=user_groups,
            ),
            user_attrs={"origin": "the settings' default hybrid"},
        )
    log.info(
        "tuning: study %s (%d earlier trials), budget %s trials, %s, %d worker%s",
        name,
        len(study.trials),
        "no limit on" if trials is None else trials,
        f"{timeout:g} s" if timeout else "no timeout",
        settings.tuning.workers,
        "" if settings.tuning.workers == 1 else "s",
    )
    return name


def run_worker(
    settings: Settings,
    name: str,
    tables: CanonicalTables,
    validation: Split,
    trials: int | None,
    timeout: float | None,
    parent_run_id: str,
    worker: int = 0,
    features: Callable[[dict[str, float], dict[str, float]], Prepared] | None = None,
) -> int:
    """Run `trials` and/or `timeout` of study `name` in this process as worker number `worker`,
    each trial a nested MLflow run of `parent_run_id`; `features(item_groups, user_groups)`
    featurises the validation split (default: in memory). Returns how many trials it ran."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = settings_study(settings, name, settings.optuna_storage, worker)
    metric = f"val_ndcg@{settings.training.k}"
    experiment_id = mlflow.get_run(parent_run_id).info.experiment_id

    def log_trial(trial: optuna.Trial, setup: TrialSetup, scores: list[float], state: str) -> None:
        run = mlflow.start_run(
            run_name=f"trial {trial.number}",
            experiment_id=experiment_id,
            parent_run_id=parent_run_id,
            nested=True,
            tags={
                "kind": "optuna-trial",
                "optuna.study": name,
                "optuna.trial": str(trial.number),
                "optuna.state": state,
                "optuna.worker": str(worker),
            },
        )
        try:
            mlflow.log_params(setup_params(setup))
            runs.log_series(run.info.run_id, metric, scores)
            if scores:
                mlflow.log_metric(runs.metric_key(f"best_{metric}"), max(scores))
        finally:
            mlflow.end_run(RUN_STATUS[state])
        best = f"{max(scores):.4f}" if scores else "–"
        log.info(
            "trial %d %s after %d epochs: best validation NDCG@%d %s%s",
            trial.number,
            state,
            len(scores),
            settings.training.k,
            best,
            f" (worker {worker})" if settings.tuning.workers > 1 else "",
        )

    hooks = {"on_trial": log_trial} if features is None else {"on_trial": log_trial, "prepare_features": features}
    objective = settings_objective(settings, tables, validation, **hooks)
    return run_trials(study, objective, trials, timeout) if trials != 0 else 0


def finish(settings: Settings, name: str, ran: int) -> Tuned:
    """The outcome of study `name` after this run's `ran` trials, logged on the active MLflow run
    (the best value, trial counts, the optimisation history and parameter importances). Raises
    when the study has no completed trial."""
    study = settings_study(settings, name, settings.optuna_storage)
    completed = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(f"study '{name}' has no completed trial (all pruned or failed); raise the trial budget")
    tuning, metric = settings.tuning, f"val_ndcg@{settings.training.k}"
    tuned = Tuned(
        study_name=name,
        setup=best_setup(study, grid=tuning.sampler == "grid"),
        best_value=study.best_value,
        best_trial=study.best_trial.number,
        counts=trial_counts(study),
        trials_this_run=ran,
    )
    mlflow.log_params(
        {
            "optuna.study": name,
            "optuna.sampler": tuning.sampler,
            "optuna.pruner": tuning.pruner,
            "optuna.storage": settings.optuna_storage.split("://")[0],
            "optuna.workers": tuning.workers,
        }
    )
    mlflow.log_metrics(
        {
            runs.metric_key(f"best_{metric}"): tuned.best_value,
            "optuna_trials_this_run": tuned.trials_this_run,
            **{f"optuna_trials_{state}": count for state, count in tuned.counts.items()},
        }
    )
    mlflow.log_figure(reports.plot_optimisation_history(study), "plots/optuna_history.png")
    importances = reports.plot_param_importances(study)
    if importances is not None:
        mlflow.log_figure(importances, "plots/optuna_param_importances.png")
    return tuned
