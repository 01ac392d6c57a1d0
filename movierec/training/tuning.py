"""The tuning stage: an Optuna study of the LightFM hybrid, tracked in MLflow, and the final fit of
its best setting.

The study lives in the Optuna storage of the settings and is named after everything its
objective depends on (dataset, snapshot, split rule, k, epochs, search space, code), so a run on
an unchanged snapshot continues the same study: an interrupted run loses no finished trial, and
a second run adds its trials to the first run's. Each trial of this run is a nested MLflow run
with its parameters and its validation NDCG@k per epoch; how it ended (complete, pruned,
failed) is its tag `optuna.state` and its run status (FINISHED, KILLED, FAILED).
"""

from __future__ import annotations

import hashlib
import json
import logging
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
    make_objective,
    trial_counts,
)
from movierec.errors import DataError
from movierec.settings import Settings
from movierec.tracking import reports, runs
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


def settings_study(settings: Settings, name: str, storage: str) -> optuna.Study:
    """The study `name` in `storage` with the settings' sampler, pruner and seed; a storage that
    cannot be read (a damaged SQLite file, a database that refuses) is a `DataError` naming it."""
    tuning = settings.tuning
    try:
        return create_study(name, storage, sampler=tuning.sampler, seed=tuning.seed, pruner=tuning.pruner)
    except sqlalchemy.exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).splitlines()[0][:200]
        where = storage.removeprefix("sqlite:///") if storage.startswith("sqlite:///") else storage.split("@")[-1]
        advice = (
            f"delete {where} to start the study afresh (its finished trials are lost)"
            if storage.startswith("sqlite:///")
            else "check that the database is up and reachable (tuning.storage)"
        )
        raise DataError(f"the Optuna study storage {where} cannot be used ({reason}): {advice}") from None


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
        objective,
        n_trials=trials,
        timeout=timeout,
        gc_after_trial=False,
        callbacks=[lambda _study, trial: ran.append(trial.number)],
    )
    return len(ran)


def close_dead_trials(study: optuna.Study) -> list[int]:
    """Mark FAILED (with the reason as user attribute `failure`) every RUNNING trial of `study`,
    for a caller that knows no process is running them; returns their numbers."""
    closed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        optuna.trial.Trial(study, trial._trial_id).set_user_attr(
            "failure", "its run died before the trial ended; closed by the next run"
        )
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        closed.append(trial.number)
    if closed:
        log.warning(
            "tuning: trials %s of study %s were left running by a dead run: marked FAILED", closed, study.study_name
        )
    return closed


def tune(
    settings: Settings,
    dataset: str,
    snapshot_id: str,
    tables: CanonicalTables,
    held_out: Split,
    validation: Split,
    trials: int | None,
    timeout: float | None,
    features: Callable[[dict[str, float], dict[str, float]], Prepared],
) -> Tuned:
    """Run this pipeline run's trials of the study (`trials` and/or `timeout`; 0 trials: none)
    inside the active MLflow run; `features(item_groups, user_groups)` featurises the validation
    split. Raises when the study has no completed trial."""
    tuning, training = settings.tuning, settings.training
    name = study_name(settings, dataset, snapshot_id, held_out)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = settings_study(settings, name, settings.optuna_storage)
    if tuning.storage is None and close_dead_trials(study):
        # The home's own study and this run holds the home's lock: a RUNNING trial was a dead
        # run's (a shared storage's may be another worker's, alive). Opened again, the sampler is
        # seeded as for any resumed study, not as beside a running worker.
        study = settings_study(settings, name, settings.optuna_storage)
    metric = f"val_ndcg@{training.k}"

    def log_trial(trial: optuna.Trial, setup: TrialSetup, scores: list[float], state: str) -> None:
        run = mlflow.start_run(
            run_name=f"trial {trial.number}",
            nested=True,
            tags={
                "kind": "optuna-trial",
                "optuna.study": name,
                "optuna.trial": str(trial.number),
                "optuna.state": state,
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
            "trial %d %s after %d epochs: best validation NDCG@%d %s",
            trial.number,
            state,
            len(scores),
            training.k,
            best,
        )

    objective = settings_objective(settings, tables, validation, on_trial=log_trial, prepare_features=features)
    before = len(study.trials)
    log.info(
        "tuning: study %s (%d earlier trials), budget %s trials, %s",
        name,
        before,
        "no limit on" if trials is None else trials,
        f"{timeout:g} s" if timeout else "no timeout",
    )
    ran = run_trials(study, objective, trials, timeout) if trials != 0 else 0
    completed = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(f"study '{name}' has no completed trial (all pruned or failed); raise the trial budget")

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
