import threading
import time

import optuna
import pandas as pd
import pytest

from features.splits import user_temporal_split, validation_split
from models.tune import best_setup, create_study, default_params, make_objective, present_groups, trial_counts
from movierec.data.preprocess import canonicalize
from movierec.data.synthetic import generate
from movierec.settings import Settings
from movierec.training.tuning import open_study, run_trials

optuna.logging.set_verbosity(optuna.logging.WARNING)

GOOD = {
    "loss": "warp",
    "no_components": 32,
    "learning_rate": 0.08,
    "item_alpha": 1e-8,
    "user_alpha": 1e-8,
    "max_sampled": 10,
    "item_genre": 1.0,
    "item_year": 0.0,
    "item_tag": 0.0,
    "item_keyword": 0.0,
    "item_cast": 0.0,
    "item_director": 0.0,
    "item_language": 0.0,
    "item_text": 0.0,
    "user_age": 0.0,
    "user_gender": 0.0,
    "user_occupation": 0.0,
    "user_taste": 1.0,
}


@pytest.fixture(scope="module")
def setting():
    tables = canonicalize(generate(12_000, seed=5), None)[0]
    held_out = user_temporal_split(tables.ratings)
    validation = validation_split(held_out)
    return tables, held_out, validation


def test_validation_is_carved_from_train_only(setting):
    _tables, held_out, validation = setting
    train_keys = set(zip(held_out.train["user_id"], held_out.train["movie_id"], strict=True))
    validation_keys = set(zip(validation.train["user_id"], validation.train["movie_id"], strict=True)) | set(
        zip(validation.test["user_id"], validation.test["movie_id"], strict=True)
    )
    assert validation_keys == train_keys
    assert not validation_keys & set(zip(held_out.test["user_id"], held_out.test["movie_id"], strict=True))


def test_bad_trials_are_pruned_and_a_study_resumes(setting, tmp_path):
    tables, _, validation = setting
    frames = {"users": tables.users, "items": tables.items, "tags": tables.tags}
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    ended = []
    objective = make_objective(
        validation,
        frames,
        max_epochs=8,
        on_trial=lambda trial, setup, scores, state: ended.append((state, len(scores))),
    )
    study = create_study("hybrid", storage, seed=1)
    # Three settings (a repeated one would not be trained again): the pruner's startup trials,
    # never pruned. A fourth as good could be: its curve against the median of three almost
    # identical ones is a coin toss that float rounding decides.
    for step in range(3):
        study.enqueue_trial({**GOOD, "item_alpha": (1 + step) * 1e-8})
    # A learning rate this small barely moves from the random start: the median pruner stops it.
    study.enqueue_trial({**GOOD, "learning_rate": 0.005})
    study.optimize(objective, n_trials=4)
    states = [trial.state for trial in study.trials]
    assert states[:3] == [optuna.trial.TrialState.COMPLETE] * 3
    assert states[3] == optuna.trial.TrialState.PRUNED
    pruned = study.trials[3]
    assert len(pruned.user_attrs["ndcg_by_epoch"]) < 8
    assert [state for state, _ in ended] == ["complete"] * 3 + ["pruned"]
    assert ended[3][1] == len(pruned.user_attrs["ndcg_by_epoch"])
    assert trial_counts(study) == {"complete": 3, "pruned": 1}
    best = study.best_value
    # The final model trains for as many epochs as the best trial's best validation epoch.
    setup = best_setup(study)
    assert setup.lightfm["epochs"] == study.best_trial.user_attrs["best_epoch"]
    assert setup.lightfm["learning_rate"] == GOOD["learning_rate"] and setup.user_groups == {
        "identity": 1.0,
        "taste": 1.0,
    }

    # A new process opening the same study continues it: earlier trials are kept.
    resumed = create_study("hybrid", storage, seed=1)
    resumed.optimize(objective, n_trials=2)
    assert len(resumed.trials) == 6
    assert resumed.best_value >= best


def test_a_second_session_on_a_study_explores_new_settings(tmp_path):
    storage = f"sqlite:///{tmp_path / 'repeat.db'}"

    def objective(trial: optuna.Trial) -> float:
        return trial.suggest_float("x", 0.0, 1.0) + trial.suggest_int("n", 1, 1000)

    first = create_study("repeat", storage, seed=3)
    first.optimize(objective, n_trials=3)
    # The first session is reproducible: a new study with the same seed samples the same start.
    fresh = create_study("again", storage, seed=3)
    fresh.optimize(objective, n_trials=3)
    assert [t.params for t in fresh.trials] == [t.params for t in first.trials]
    # A second session (another process, a resumed run) does not replay that start.
    second = create_study("repeat", storage, seed=3)
    second.optimize(objective, n_trials=3)
    settings = [tuple(sorted(t.params.items())) for t in second.trials]
    assert len(second.trials) == 6 and len(set(settings)) == 6


def test_unknown_sampler_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown sampler 'annealing'"):
        create_study("x", f"sqlite:///{tmp_path / 'o.db'}", sampler="annealing")


def test_grid_and_random_samplers_run_the_same_objective(setting, tmp_path):
    tables, _, validation = setting
    frames = {"users": tables.users, "items": tables.items, "tags": tables.tags}
    grid = create_study("grid", f"sqlite:///{tmp_path / 'g.db'}", sampler="grid", pruner="none")
    grid.optimize(make_objective(validation, frames, max_epochs=2, grid=True), n_trials=2)
    assert {frozenset(t.params) for t in grid.trials} == {
        frozenset({"loss", "no_components", "learning_rate", "epochs"})
    }
    assert len({tuple(sorted(t.params.items())) for t in grid.trials}) == 2
    random = create_study("random", f"sqlite:///{tmp_path / 'r.db'}", sampler="random", pruner="none")
    random.optimize(make_objective(validation, frames, max_epochs=2), n_trials=2)
    assert all(0.0 <= t.value <= 1.0 for t in random.trials)


def test_the_search_space_leaves_out_groups_the_data_has_no_values_for(setting, tmp_path):
    tables, _, validation = setting
    # Generated data has MovieLens fields and demographics but no TMDB metadata.
    assert present_groups(tables.users, tables.items, tables.tags) == (
        ("genre", "year", "tag", "text"),
        ("age", "gender", "occupation", "taste"),
    )
    no_demographics = tables.users.assign(age=pd.NA, gender=None, occupation=None)
    assert present_groups(no_demographics, tables.items, tables.tags)[1] == ("taste",)

    frames = {"users": no_demographics, "items": tables.items, "tags": tables.tags}
    study = create_study("space", f"sqlite:///{tmp_path / 's.db'}", pruner="none")
    study.optimize(make_objective(validation, frames, max_epochs=1), n_trials=2)
    for trial in study.trials:
        assert not {"user_age", "user_gender", "user_occupation", "item_keyword", "item_cast"} & set(trial.params)
        assert {"user_taste", "item_genre", "item_text"} <= set(trial.params)
    assert set(best_setup(study).user_groups) <= {"identity", "taste"}


def test_each_worker_counts_its_own_trials_on_a_shared_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    create_study("shared", storage, seed=5)  # created once, before the workers join

    def objective(trial: optuna.Trial) -> float:
        time.sleep(0.02)
        return trial.suggest_float("x", 0.0, 1.0)

    counts = []

    def worker() -> None:
        counts.append(run_trials(create_study("shared", storage, seed=5), objective, trials=4, timeout=None))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts == [4, 4] and len(optuna.load_study(study_name="shared", storage=storage).trials) == 8


def test_a_setting_already_tried_is_not_trained_again(setting, tmp_path):
    tables, _, validation = setting
    trained = []
    objective = make_objective(
        validation,
        {"users": tables.users, "items": tables.items, "tags": tables.tags},
        max_epochs=2,
        on_trial=lambda trial, setup, scores, state: trained.append(trial.number),
    )
    study = create_study("twice", f"sqlite:///{tmp_path / 'twice.db'}", seed=1, pruner="none")
    study.enqueue_trial(GOOD)
    study.enqueue_trial(GOOD)  # as two workers starting together on a new study would sample
    study.optimize(objective, n_trials=2)
    assert trained == [0]
    second = study.trials[1]
    assert second.state == optuna.trial.TrialState.PRUNED and second.user_attrs["repeats_trial"] == 0


def test_default_params_place_the_settings_hybrid_in_the_search_space():
    lightfm = {
        "loss": "bpr",  # not searched: WARP
        "no_components": 256,
        "learning_rate": 0.05,
        "item_alpha": 0.0,
        "user_alpha": 1e-4,
        "max_sampled": 10,
    }
    params = default_params(
        lightfm,
        {"identity": 1.0, "genre": 1.0, "year": 0.4, "text": 0.1},
        {"identity": 1.0, "taste": 0.7},
        item_groups=("genre", "year", "tag", "text"),
        user_groups=("age", "taste"),
    )
    assert params == {
        "loss": "warp",
        "no_components": 128,
        "learning_rate": 0.05,
        "item_alpha": 1e-8,
        "user_alpha": 1e-4,
        "max_sampled": 10,
        "item_genre": 1.0,
        "item_year": 0.5,
        "item_tag": 0.0,
        "item_text": 0.0,
        "user_age": 0.0,
        "user_taste": 0.5,
    }


def test_a_new_study_first_trains_the_settings_default_hybrid(setting, tmp_path):
    tables, held_out, validation = setting
    settings = Settings(home=tmp_path)
    first = open_study(settings, "synthetic", "snapshot", tables, held_out, 2, None)
    assert open_study(settings, "synthetic", "snapshot", tables, held_out, 2, None) == first  # queued once
    study = optuna.load_study(study_name=first, storage=settings.optuna_storage)
    objective = make_objective(validation, {"users": tables.users, "items": tables.items, "tags": tables.tags})
    run_trials(study, objective, 2, None)
    trial = study.trials[0]
    assert len(study.trials) == 2
    assert trial.user_attrs["origin"] == "the settings' default hybrid"
    training = settings.training
    assert trial.params["loss"] == training.loss
    assert trial.params["no_components"] == training.no_components
    assert trial.params["learning_rate"] == training.learning_rate
    assert trial.params["item_genre"] == training.item_feature_groups["genre"]
    assert trial.params["user_taste"] == training.user_feature_groups["taste"]
    assert study.trials[1].params != trial.params


def test_mf_is_left_at_its_best_validation_epoch(setting, monkeypatch):
    """fit_best_epoch keeps the model as it was after the best epoch (the earliest of equal
    scores), not the last: the same parameters as a fresh fit of that many epochs."""
    import numpy as np

    import models.tune
    from features.prepare import prepare
    from models.factorization import LightFMRecommender

    tables, _, validation = setting
    prepared = prepare(
        tables.users,
        tables.items,
        tables.tags,
        chosen=validation,
        item_groups={"genre": 1.0},
        user_groups={"taste": 1.0},
    )
    scripted = iter([0.10, 0.30, 0.20, 0.30, 0.25])  # best after epoch 2, tied by epoch 4
    monkeypatch.setattr(models.tune, "evaluate_ndcg", lambda model, prepared, k: next(scripted))
    model = LightFMRecommender(name="mf", no_components=8, epochs=5)
    assert models.tune.fit_best_epoch(model, prepared, 10) == [0.10, 0.30, 0.20, 0.30, 0.25]
    assert model.epochs == 2
    fresh = LightFMRecommender(name="mf", no_components=8, epochs=2).fit(prepared.train)
    for kept, expected in zip(model.representations(), fresh.representations(), strict=True):
        np.testing.assert_allclose(kept, expected, rtol=1e-6, atol=1e-6)
    five = LightFMRecommender(name="mf", no_components=8, epochs=5).fit(prepared.train)
    assert not np.allclose(model.representations()[1], five.representations()[1], rtol=1e-6, atol=1e-6)
