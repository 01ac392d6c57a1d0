"""Benchmark: explicit-rating prediction (MAE / MSE / RMSE) on ml-100k and ml-latest-small.

Protocol (that of bench/recommenders.py): per-user temporal split, the last 20% of each user's
ratings by time are test, users with >= 5 ratings (thinner users stay in train). Every model is
fitted on the same training part and predicts the same test pairs, clipped to the dataset's
rating scale. The tuned BiasedMF is tuned on a validation split carved from the TRAINING part by
the same rule (the last 20% of each training user's ratings, `features.splits.validation_split`),
then refitted with the chosen parameters on the whole training part; the test part is never
looked at before the final measure.

Test pairs whose user or movie has no training rating: our models predict mu plus the known bias
(see `models.factorization.BiasedMF`); surprise does the same for SVD / SVD++ / BaselineOnly
(unknown biases and factors are zero) and falls back to the global mean only where an
algorithm cannot predict at all (`was_impossible`). Their number is printed.

SVD++ is slow (each rating's step sums the user's implicit vectors): one epoch is timed first and
the epoch count lowered (and said so) if the default 20 epochs would take over 3 minutes.

Usage: MOVIEREC_DATA_DIR=/path/to/data .venv/bin/python bench/ratings.py [DATASET ...]
(needs scikit-surprise, a dev dependency; MOVIEREC_DATA_DIR or ../shared/data).
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from recommenders import data_dir  # bench/ is the script's folder, first on sys.path
from surprise import SVD, BaselineOnly, Dataset, Reader, SVDpp

from features.interactions import rating_matrix
from features.splits import user_temporal_split, validation_split
from models.factorization import BiasedMF
from models.metrics import rating_errors
from models.ratings import BiasBaseline, tune_biased_mf
from movierec.data.datasets import get_spec
from movierec.data.fetch import locate
from movierec.data.parse import read_dataset
from movierec.data.preprocess import canonicalize

SVDPP_BUDGET_SECONDS = 180.0
SVDPP_EPOCHS = 20  # surprise's default
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def load(dataset: str):
    """Canonical tables (no TMDB: ratings are all this needs) and the (min, max) rating scale."""
    spec = get_spec(dataset)
    raw = read_dataset(spec, locate(spec, data_dir(), Path("/tmp/movierec-bench-downloads")))
    tables = canonicalize(raw, None)[0]
    scale = spec.rating_scale
    ratings = tables.ratings["rating"]
    bounds = (scale.min, scale.max) if scale else (float(ratings.min()), float(ratings.max()))
    return tables, (float(bounds[0]), float(bounds[1]))


def timed(fit):
    started = time.perf_counter()
    model = fit()
    return model, time.perf_counter() - started


def surprise_trainset(train: pd.DataFrame, scale: tuple[float, float]):
    frame = train[["user_idx", "item_idx", "rating"]].astype({"rating": np.float64})
    return Dataset.load_from_df(frame, Reader(rating_scale=scale)).build_full_trainset()


def surprise_predict(algo, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, int]:
    """Predictions (clipped to the scale, surprise's default) and how many were impossible."""
    predicted, impossible = np.empty(len(users)), 0
    for row, (user, item) in enumerate(zip(users.tolist(), items.tolist(), strict=True)):
        prediction = algo.predict(user, item)
        predicted[row] = prediction.est
        impossible += bool(prediction.details.get("was_impossible", False))
    return predicted, impossible


def run(dataset: str) -> None:
    tables, scale = load(dataset)
    n_users, n_items = len(tables.users), len(tables.items)
    chosen = user_temporal_split(tables.ratings, test_share=0.2, min_ratings=5)
    carved = validation_split(chosen)  # the same rule on the training part only
    train = rating_matrix(chosen.train, n_users, n_items)
    test_users = chosen.test["user_idx"].to_numpy(np.int64)
    test_items = chosen.test["item_idx"].to_numpy(np.int64)
    actual = chosen.test["rating"].to_numpy(np.float64)
    known_users = np.diff(train.indptr) > 0
    known_items = np.bincount(train.indices, minlength=n_items) > 0
    unknown_user, unknown_item = ~known_users[test_users], ~known_items[test_items]

    rows, notes = [], []

    def record(name: str, predicted: np.ndarray, fit_seconds: float, tune_seconds: float = float("nan")) -> None:
        errors = rating_errors(predicted, actual)
        rows.append(
            {
                "model": name,
                "MAE": errors["mae"],
                "MSE": errors["mse"],
                "RMSE": errors["rmse"],
                "fit_s": fit_seconds,
                "tune_s": tune_seconds,
            }
        )
        print(f"  {name}: RMSE {errors['rmse']:.4f} (fit {fit_seconds:.2f} s)", flush=True)

    print(
        f"\n{dataset}: {n_users} users, {n_items} movies; scale {scale[0]:g}-{scale[1]:g}; "
        f"train {chosen.train.shape[0]} ratings, test {len(actual)} pairs "
        f"({chosen.excluded_users} users with < 5 ratings kept in train); "
        f"validation carved from train: {carved.train.shape[0]} fit / {carved.test.shape[0]} validation ratings",
        flush=True,
    )
    print(
        f"  test pairs with no training rating: user {int(unknown_user.sum())}, movie {int(unknown_item.sum())}, "
        f"either {int((unknown_user | unknown_item).sum())} (ours: mu + known bias)"
    )

    started = time.perf_counter()
    mu = float(train.data.mean())
    record("global mean", np.full(len(actual), np.clip(mu, *scale)), time.perf_counter() - started)

    baseline, seconds = timed(lambda: BiasBaseline(clip=scale).fit(train))
    record("BiasBaseline (user_l2 15, item_l2 10)", baseline.predict(test_users, test_items), seconds)

    default, seconds = timed(lambda: BiasedMF(clip=scale).fit(train))
    record("BiasedMF default", default.predict(test_users, test_items), seconds)

    validation_train = rating_matrix(carved.train, n_users, n_items)
    validation = (
        carved.test["user_idx"].to_numpy(np.int64),
        carved.test["item_idx"].to_numpy(np.int64),
        carved.test["rating"].to_numpy(np.float64),
    )
    tuning = tune_biased_mf(validation_train, validation, clip=scale)
    tuned, seconds = timed(lambda: BiasedMF(**tuning.params).fit(train))
    record("BiasedMF tuned", tuned.predict(test_users, test_items), seconds, tuning.seconds)
    bias_l2 = tuning.params["bias_l2"]
    tuned_baseline, seconds = timed(lambda: BiasBaseline(user_l2=bias_l2, item_l2=bias_l2, clip=scale).fit(train))
    record(f"BiasBaseline (tuned l2 {bias_l2:g})", tuned_baseline.predict(test_users, test_items), seconds)
    shown = {key: value for key, value in tuning.params.items() if key not in ("clip", "random_state")}
    notes.append(f"BiasedMF default: {_params(default)}")
    notes.append(f"BiasedMF tuned: {shown}, validation RMSE {tuning.rmse:.4f}, tuning {tuning.seconds:.1f} s")
    notes.append(
        "  tuning trials (validation RMSE @ best iteration): "
        + ", ".join(f"f{t['factors']}/l2 {t['l2']:g}: {t['rmse']:.4f}@{t['iterations']}" for t in tuning.trials)
    )
    notes.append(
        "  bias baseline validation RMSE by bias_l2: "
        + ", ".join(f"{penalty:g}: {rmse:.4f}" for penalty, rmse in tuning.bias_l2_rmse.items())
    )

    trainset = surprise_trainset(chosen.train, scale)
    impossible = {}
    for name, algo in (
        ("surprise BaselineOnly", BaselineOnly(verbose=False)),
        ("surprise SVD (random_state 0)", SVD(random_state=0)),
    ):
        _, seconds = timed(lambda algo=algo: algo.fit(trainset))
        predicted, impossible[name] = surprise_predict(algo, test_users, test_items)
        record(name, predicted, seconds)
    # SVD's SGD depends on its seed: the spread over a few seeds, beside the row above (seed 0).
    spread = [
        rating_errors(surprise_predict(SVD(random_state=seed).fit(trainset), test_users, test_items)[0], actual)["rmse"]
        for seed in range(5)
    ]
    notes.append(
        f"surprise SVD RMSE over random_state 0-4: min {min(spread):.4f}, mean {np.mean(spread):.4f}, max {max(spread):.4f}"
    )

    _, one_epoch = timed(lambda: SVDpp(n_epochs=1, random_state=0, cache_ratings=True).fit(trainset))
    epochs = SVDPP_EPOCHS
    if one_epoch * SVDPP_EPOCHS > SVDPP_BUDGET_SECONDS:
        epochs = max(1, int(SVDPP_BUDGET_SECONDS // one_epoch))
        notes.append(
            f"SVD++: one epoch took {one_epoch:.1f} s, so {epochs} epochs instead of the default {SVDPP_EPOCHS} "
            f"(budget {SVDPP_BUDGET_SECONDS:.0f} s)"
        )
    svdpp = SVDpp(n_epochs=epochs, random_state=0, cache_ratings=True)
    _, seconds = timed(lambda: svdpp.fit(trainset))
    name = f"surprise SVD++ ({epochs} epochs, random_state 0)"
    predicted, impossible[name] = surprise_predict(svdpp, test_users, test_items)
    record(name, predicted, seconds)
    notes.append(
        "surprise predictions flagged impossible (global mean used): "
        + ", ".join(f"{key.split(' (')[0]} {value}" for key, value in impossible.items())
    )

    table = pd.DataFrame(rows).set_index("model")
    print(f"\n{dataset}: rating prediction on the per-user temporal test split ({len(actual)} pairs)")
    print(table.to_string(float_format=lambda value: f"{value:.4f}", na_rep="-"))
    for note in notes:
        print(note)


def _params(model: BiasedMF) -> dict:
    return {key: value for key, value in model.params().items() if key not in ("clip", "random_state")}


def main(datasets: list[str]) -> None:
    command = " ".join(shlex.quote(part) for part in sys.orig_argv)
    threads = "".join(f"{name}={os.environ[name]} " for name in THREAD_VARIABLES if name in os.environ)
    print(f"command: {threads}MOVIEREC_DATA_DIR={shlex.quote(str(data_dir()))} {command}")
    for dataset in datasets or ["ml-100k", "ml-latest-small"]:
        run(dataset)


if __name__ == "__main__":
    main(sys.argv[1:])
