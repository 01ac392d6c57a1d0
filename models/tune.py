"""Optuna tuning of the LightFM hybrid.

The objective never sees the test split: each trial trains on the training part of a
validation split carved from the training data by the same rule, and is scored by NDCG@k on
that validation part after every epoch (`fit_partial`), which lets a pruner stop bad trials
early. The search covers the loss, size, learning rate, regularisation, negative sampling,
epochs, and which feature groups are used with what weight.

A new study's first trial is the configured default setting (`default_params`), so the tuned
hybrid is never worse on validation than the untuned one, however small the budget: at 5M
ratings a trial takes minutes and the timeout may allow only one. BPR is not in the search: with
the hybrid's shared feature embeddings LightFM's BPR collapses after an epoch or two (measured on
synthetic 100k and 1M ratings: validation NDCG@10 0.13 after epoch 2, then 0.03, 0.02, 0.01,
below popularity's 0.16; WARP and WARP-kos keep improving on the same data).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
from lightfm import LightFM

from features.prepare import Prepared, prepare
from features.splits import Split
from models.evaluation import evaluated_users, ndcg
from models.factorization import LightFMRecommender

SAMPLERS = ("tpe", "random", "grid")
# Groups the tuner may switch on or off; identity columns always stay (the CF part).
TUNABLE_ITEM_GROUPS = ("genre", "year", "tag", "keyword", "cast", "director", "language", "text")
TUNABLE_USER_GROUPS = ("age", "gender", "occupation", "taste")
# The grid sampler needs a finite space: the settings most worth comparing.
GRID = {
    "loss": ["warp", "warp-kos"],
    "no_components": [32, 64],
    "learning_rate": [0.02, 0.05],
    "epochs": [20, 40],
}


# The search space of `suggest` (ranges are inclusive; the sizes and rates are searched on a log scale).
LOSSES = ["warp", "warp-kos"]
COMPONENTS = (16, 128)
LEARNING_RATES = (0.005, 0.2)
ALPHAS = (1e-8, 1e-3)
MAX_SAMPLED = (5, 50)
ITEM_WEIGHTS = [0.0, 0.25, 0.5, 1.0]
USER_WEIGHTS = [0.0, 0.5, 1.0]


@dataclass
class TrialSetup:
    lightfm: dict
    item_groups: dict[str, float]
    user_groups: dict[str, float]


def present_groups(
    users: pd.DataFrame, items: pd.DataFrame, tags: pd.DataFrame
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The tunable item and user groups the data has any value for: a group with no values
    (demographics of ml-latest-small, TMDB fields without a TMDB join) is left out of the search."""

    def filled(frame: pd.DataFrame, column: str) -> bool:
        return column in frame and frame[column].astype("string").fillna("").str.len().gt(0).any()

    item_columns = {
        "genre": "genres",
        "year": "year",
        "keyword": "keywords",
        "cast": "cast",
        "director": "director",
        "language": "original_language",
        "text": "overview",
    }
    has_tags = not tags.empty
    item_groups = tuple(
        group
        for group in TUNABLE_ITEM_GROUPS
        if (group in ("tag", "text") and has_tags) or (group in item_columns and filled(items, item_columns[group]))
    )
    user_groups = tuple(group for group in TUNABLE_USER_GROUPS if group == "taste" or filled(users, group))
    return item_groups, user_groups


def suggest(
    trial: optuna.Trial,
    *,
    max_epochs: int,
    grid: bool = False,
    item_groups: tuple[str, ...] = TUNABLE_ITEM_GROUPS,
    user_groups: tuple[str, ...] = TUNABLE_USER_GROUPS,
) -> TrialSetup:
    """The trial's hyperparameters and which of `item_groups` / `user_groups` it uses, how much."""
    if grid:
        params = {name: trial.suggest_categorical(name, values) for name, values in GRID.items()}
        return TrialSetup(
            {**params, "max_sampled": 10}, {"identity": 1.0, "genre": 1.0, "text": 0.5}, {"identity": 1.0, "taste": 1.0}
        )
    lightfm = {
        "loss": trial.suggest_categorical("loss", LOSSES),
        "no_components": trial.suggest_int("no_components", *COMPONENTS, log=True),
        "learning_rate": trial.suggest_float("learning_rate", *LEARNING_RATES, log=True),
        "item_alpha": trial.suggest_float("item_alpha", *ALPHAS, log=True),
        "user_alpha": trial.suggest_float("user_alpha", *ALPHAS, log=True),
        "max_sampled": trial.suggest_int("max_sampled", *MAX_SAMPLED),
        "epochs": max_epochs,
    }
    item_weights = {"identity": 1.0}
    for group in item_groups:
        weight = trial.suggest_categorical(f"item_{group}", ITEM_WEIGHTS)
        if weight:
            item_weights[group] = weight
    user_weights = {"identity": 1.0}
    for group in user_groups:
        weight = trial.suggest_categorical(f"user_{group}", USER_WEIGHTS)
        if weight:
            user_weights[group] = weight
    return TrialSetup(lightfm, item_weights, user_weights)


def default_params(
    lightfm: dict,
    item_weights: dict[str, float],
    user_weights: dict[str, float],
    *,
    item_groups: tuple[str, ...] = TUNABLE_ITEM_GROUPS,
    user_groups: tuple[str, ...] = TUNABLE_USER_GROUPS,
) -> dict:
    """The configured setting (LightFM parameters, feature group weights) as a point of the
    search space of `suggest`, to enqueue as a study's first trial: each value moved to the
    nearest the space allows (a regularisation of 0 becomes the lowest, 1e-8; a loss outside it,
    WARP; a weight, the nearest choice; a group absent from the data is not a parameter)."""

    def within(value: float, bounds: tuple[float, float]) -> float:
        return min(max(value, bounds[0]), bounds[1])

    def nearest(value: float, choices: list[float]) -> float:
        return min(choices, key=lambda choice: (abs(choice - value), choice))

    params = {
        "loss": lightfm["loss"] if lightfm["loss"] in LOSSES else "warp",
        "no_components": int(within(lightfm["no_components"], COMPONENTS)),
        "learning_rate": within(lightfm["learning_rate"], LEARNING_RATES),
        "item_alpha": within(lightfm["item_alpha"], ALPHAS),
        "user_alpha": within(lightfm["user_alpha"], ALPHAS),
        "max_sampled": int(within(lightfm["max_sampled"], MAX_SAMPLED)),
    }
    params.update({f"item_{group}": nearest(item_weights.get(group, 0.0), ITEM_WEIGHTS) for group in item_groups})
    params.update({f"user_{group}": nearest(user_weights.get(group, 0.0), USER_WEIGHTS) for group in user_groups})
    return params


def make_objective(
    validation: Split,
    tables: dict[str, pd.DataFrame],
    *,
    k: int = 10,
    max_epochs: int = 30,
    threshold: float = 4.0,
    seed: int = 42,
    grid: bool = False,
    on_trial: Callable[[optuna.Trial, TrialSetup, list[float], str], None] | None = None,
    prepare_features: Callable[[dict[str, float], dict[str, float]], Prepared] | None = None,
) -> Callable[[optuna.Trial], float]:
    """An objective scoring a trial by validation NDCG@k of its best epoch.

    `tables` holds the canonical users, items and tags; `validation` is a split of the training
    ratings. `on_trial(trial, setup, scores, state)` receives each trial's setup, per-epoch
    scores and how it ended ("complete", "pruned" or "failed"), for tracking.
    `prepare_features(item_groups, user_groups)` may replace the default featurisation of the
    validation split (e.g. with a persistently cached one).
    """
    prepared_by_groups: dict[str, Prepared] = {}
    item_groups, user_groups = present_groups(tables["users"], tables["items"], tables["tags"])

    def default_prepare(item_groups: dict[str, float], user_groups: dict[str, float]) -> Prepared:
        return prepare(
            tables["users"],
            tables["items"],
            tables["tags"],
            chosen=validation,
            threshold=threshold,
            item_groups=item_groups,
            user_groups=user_groups,
        )

    def prepared_for(setup: TrialSetup) -> Prepared:
        # Feature matrices depend only on the groups; trials sharing them share the work.
        key = repr(sorted(setup.item_groups.items())) + repr(sorted(setup.user_groups.items()))
        if key not in prepared_by_groups:
            prepared_by_groups[key] = (prepare_features or default_prepare)(setup.item_groups, setup.user_groups)
        return prepared_by_groups[key]

    def objective(trial: optuna.Trial) -> float:
        setup = suggest(trial, max_epochs=max_epochs, grid=grid, item_groups=item_groups, user_groups=user_groups)
        earlier = repeated_trial(trial)
        if earlier is not None:  # e.g. two workers that started together on a new study
            trial.set_user_attr("repeats_trial", earlier)
            raise optuna.TrialPruned(f"the same setting as trial {earlier}: not trained again")
        prepared = prepared_for(setup)
        scores: list[float] = []

        def after_epoch(epoch: int, model: LightFMRecommender) -> bool:
            value = evaluate_ndcg(model, prepared, k)
            scores.append(value)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch} at NDCG@{k} {value:.4f}")
            return False

        model = LightFMRecommender(random_state=seed, **setup.lightfm)
        state = "failed"
        try:
            model.fit(
                prepared.train,
                item_features=prepared.item_features.matrix,
                user_features=prepared.user_features.matrix,
                on_epoch=after_epoch,
            )
            state = "complete"
        except optuna.TrialPruned:
            state = "pruned"
            raise
        finally:
            trial.set_user_attr("ndcg_by_epoch", scores)
            if on_trial is not None:
                on_trial(trial, setup, scores, state)
        best_epoch = max(range(len(scores)), key=scores.__getitem__)
        trial.set_user_attr("best_epoch", best_epoch + 1)
        return scores[best_epoch]

    return objective


def best_setup(study: optuna.Study, *, grid: bool = False) -> TrialSetup:
    """The best trial's setup, trained for the epoch count at which it scored best."""
    best = study.best_trial
    # The trial's parameters name the groups its search space had.
    item_groups = tuple(group for group in TUNABLE_ITEM_GROUPS if f"item_{group}" in best.params)
    user_groups = tuple(group for group in TUNABLE_USER_GROUPS if f"user_{group}" in best.params)
    setup = suggest(
        optuna.trial.FixedTrial(best.params),
        max_epochs=best.user_attrs["best_epoch"],
        grid=grid,
        item_groups=item_groups,
        user_groups=user_groups,
    )
    setup.lightfm["epochs"] = best.user_attrs["best_epoch"]
    return setup


def trial_counts(study: optuna.Study) -> dict[str, int]:
    states = [trial.state for trial in study.trials]
    return {state.name.lower(): states.count(state) for state in optuna.trial.TrialState if state in states}


def evaluate_ndcg(model: LightFMRecommender, prepared: Prepared, k: int) -> float:
    """Validation NDCG@k of `model`, each user's training items excluded (NDCG only: it runs
    after every epoch of every trial)."""
    users = evaluated_users(prepared)
    return ndcg(model.recommend(users, k, exclude=prepared.seen)[0], prepared, users, k)


def fit_best_epoch(model: LightFMRecommender, prepared: Prepared, k: int) -> list[float]:
    """Train `model` (plain MF: no feature matrices) on `prepared.train` for up to its `epochs`,
    measuring validation NDCG@k after each, and leave it as it was after the best epoch (the
    earliest of equal scores) with `epochs` set to that count, so a refit on other data trains as
    long. The per-epoch scores are returned. The hybrid's epochs are chosen the same way by its
    trials (`make_objective`)."""
    scores: list[float] = []
    best: dict[str, LightFM] = {}

    def after_epoch(epoch: int, fitted: LightFMRecommender) -> None:
        scores.append(evaluate_ndcg(fitted, prepared, k))
        if scores[-1] > max(scores[:-1], default=-np.inf):
            best["state"] = fitted.state()

    model.fit(prepared.train, on_epoch=after_epoch)
    best_epoch = int(np.argmax(scores)) + 1
    model.rewind(best["state"], best_epoch)
    return scores


def repeated_trial(trial: optuna.Trial) -> int | None:
    """The number of another trial of the study (finished, pruned or running) with exactly this
    trial's setting, or None."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
    for other in trial.study.get_trials(deepcopy=False, states=states):
        if other.number != trial.number and other.params == trial.params:
            return other.number
    return None


def session_seed(name: str, storage: str | optuna.storages.BaseStorage, seed: int, worker: int = 0) -> int:
    """The sampler seed of this session on study `name` (see `create_study`)."""
    try:
        existing = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # no such study yet
        trials = []
    else:
        trials = existing.get_trials(deepcopy=False)
    if not trials and worker == 0:
        return seed
    running = any(trial.state == optuna.trial.TrialState.RUNNING for trial in trials)
    mixed = np.random.SeedSequence([seed, len(trials), worker, os.getpid() if running else 0])
    return int(mixed.generate_state(1)[0])


def create_study(
    name: str,
    storage: str,
    *,
    sampler: str = "tpe",
    seed: int = 42,
    pruner: str = "median",
    worker: int = 0,
    heartbeat_seconds: int | None = None,
) -> optuna.Study:
    """A study in `storage` (any SQLAlchemy URL); an existing one of that name is resumed.

    The sampler's seed is `seed` for a new study, so a first run is reproducible. A seeded sampler
    replays the same random start in every process, so a study that already has trials (a
    resumed or second run) seeds it with `seed` and the number of trials so far, and one with a
    trial running now (another worker) also with this process's id; parallel workers numbered
    from 0 (`worker`) mix in their number too: each session explores new settings instead of
    re-testing the first ones.

    With `heartbeat_seconds`, each running trial records a heartbeat in the storage and a trial
    silent for two periods (its process died, e.g. with its machine) is marked FAILED when any
    session next starts a trial, so a dead worker's trial does not stay RUNNING forever."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler '{sampler}'; choose from {', '.join(SAMPLERS)}")
    if heartbeat_seconds is not None:
        with warnings.catch_warnings():  # heartbeats are marked experimental since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(storage, heartbeat_interval=heartbeat_seconds)
    seed = session_seed(name, storage, seed, worker)
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, constant_liar=True),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "grid": lambda: optuna.samplers.GridSampler(GRID, seed=seed),
    }
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=2),
        "none": lambda: optuna.pruners.NopPruner(),
    }
    if pruner not in pruners:
        raise ValueError(f"unknown pruner '{pruner}'; choose from {', '.join(pruners)}")
    return optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=samplers[sampler](),
        pruner=pruners[pruner](),
        direction="maximize",
        load_if_exists=True,
    )
