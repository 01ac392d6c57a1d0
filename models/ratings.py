"""Explicit-rating prediction: a bias baseline, and tuning of `BiasedMF` (errors: `models.metrics.rating_errors`).

Pure: arrays and sparse matrices in, numbers and fitted models out (no I/O, no tracking). Ratings
are a users x items CSR matrix whose stored entries are the ratings (as
`features.interactions.rating_matrix` builds it); held-out pairs are three aligned arrays
(user_idx, item_idx, rating).

* `BiasBaseline`    - mu + b_u + b_i with separately regularised user and item biases (what
                      surprise calls BaselineOnly, fitted by alternating closed-form steps).
* `tune_biased_mf`  - picks `BiasedMF` parameters on a validation split: the bias penalty on
                      the bias baseline (closed form, milliseconds), then a grid of factors x
                      factor penalty, each fit stopped early on validation RMSE, whose best
                      iteration count is kept. Never give it test pairs: carve the validation
                      split from the training part (e.g. `features.splits.validation_split`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from models.factorization import BiasedMF, fit_biases, rating_range
from models.metrics import rating_errors

# The search space of `tune_biased_mf`: bias penalties tried on the bias baseline, then every
# (factors, l2) pair with BiasedMF (unweighted penalties, see `BiasedMF`).
BIAS_L2_GRID = (0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0)
FACTORS_GRID = (8, 16, 32)
L2_GRID = (8.0, 12.0, 16.0, 24.0)


class BiasBaseline:
    """r(u, i) = mu + b_u + b_i: mu the mean training rating, biases minimising the squared error
    plus user_l2 sum b_u^2 + item_l2 sum b_i^2, by `iterations` alternating closed-form steps
    (`models.factorization.fit_biases`; the defaults are surprise BaselineOnly's).

    Unknown users or items (no training rating, or an index outside the fitted matrix) have bias
    0, so a pair predicts mu + the known bias (mu if neither is known). Predictions are clipped to
    `clip`: (min, max), "observed" (the training ratings' range, the default) or None."""

    name = "bias_baseline"

    def __init__(
        self,
        *,
        user_l2: float = 15.0,
        item_l2: float = 10.0,
        iterations: int = 10,
        clip: tuple[float, float] | str | None = "observed",
    ) -> None:
        if user_l2 < 0 or item_l2 < 0 or iterations < 1:
            raise ValueError("user_l2 and item_l2 must be non-negative and iterations positive")
        self.user_l2, self.item_l2, self.iterations, self.clip = user_l2, item_l2, iterations, clip

    def fit(self, ratings: sp.csr_matrix) -> BiasBaseline:
        ratings = sp.csr_matrix(ratings, dtype=np.float64)
        self.rating_range = rating_range(self.clip, ratings)
        self.mu, self.user_bias, self.item_bias = fit_biases(
            ratings, user_l2=self.user_l2, item_l2=self.item_l2, iterations=self.iterations
        )
        return self

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if not hasattr(self, "mu"):
            raise RuntimeError("fit the model first")
        users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
        predicted = self.mu + _known(self.user_bias, users) + _known(self.item_bias, items)
        return predicted if self.rating_range is None else np.clip(predicted, *self.rating_range)

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Dense (len(users), n_items) unclipped predictions, float32 (as `BiasedMF.scores`)."""
        users = np.asarray(users)
        return (self.mu + self.user_bias[users, None] + self.item_bias[None, :]).astype(np.float32)


def _known(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[index], 0 where the index is outside the fitted range."""
    known = (index >= 0) & (index < len(values))
    return np.where(known, values[np.where(known, index, 0)], 0.0)


@dataclass
class Tuning:
    """What `tune_biased_mf` found. `params` build the chosen model: `BiasedMF(**params)`."""

    params: dict
    rmse: float  # validation RMSE of the chosen parameters
    bias_l2_rmse: dict[float, float]  # bias baseline's validation RMSE per bias penalty tried
    trials: list[dict] = field(default_factory=list)  # per (factors, l2): best rmse, iteration, seconds
    seconds: float = 0.0


def tune_biased_mf(
    train: sp.csr_matrix,
    validation: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    factors: Iterable[int] = FACTORS_GRID,
    l2: Iterable[float] = L2_GRID,
    bias_l2: Iterable[float] = BIAS_L2_GRID,
    max_iterations: int = 25,
    patience: int = 3,
    tolerance: float = 1e-4,
    clip: tuple[float, float] | str | None = "observed",
    random_state: int = 42,
) -> Tuning:
    """The `BiasedMF` parameters with the lowest RMSE on `validation`, fitting on `train` only.

    `train`: users x items CSR of training ratings. `validation`: (user_idx, item_idx, rating)
    arrays, pairs disjoint from `train` (e.g. the last 20% of each training user's ratings).
    Step 1: the bias penalty, as the `BiasBaseline` (user_l2 = item_l2) with the lowest validation
    RMSE among `bias_l2`. Step 2: for every (factors, l2) pair, one fit with that bias penalty,
    measured on validation after every iteration and stopped once `patience` iterations in a row
    improved the best RMSE by less than `tolerance` (or at `max_iterations`); its best iteration
    becomes `iterations`. The grid is
    walked in a fixed order with a fixed seed, so the result is deterministic; ties keep the
    setting tried first. Penalties are unweighted (see `BiasedMF`). Refit `BiasedMF(**tuning.params)` on all training data afterwards.
    """
    started = time.perf_counter()
    train = sp.csr_matrix(train, dtype=np.float64)
    users, items, actual = (np.asarray(column) for column in validation)
    if not len(actual):
        raise ValueError("the validation split is empty")

    bias_scores = {}
    for penalty in bias_l2:
        baseline = BiasBaseline(user_l2=penalty, item_l2=penalty, clip=clip).fit(train)
        bias_scores[float(penalty)] = rating_errors(baseline.predict(users, items), actual)["rmse"]
    if not bias_scores:
        raise ValueError("bias_l2 lists no penalty to try")
    chosen_bias_l2 = min(bias_scores, key=bias_scores.get)

    trials = []
    for size, penalty in itertools.product(factors, l2):
        history: list[float] = []

        def measure(iteration: int, model: BiasedMF, history: list[float] = history) -> bool:
            history.append(rating_errors(model.predict(users, items), actual)["rmse"])
            if len(history) <= patience:
                return False
            # Stop when the last `patience` iterations improved on the best before them by < tolerance.
            return min(history[-patience:]) > min(history[:-patience]) - tolerance

        trial_started = time.perf_counter()
        BiasedMF(
            factors=size,
            l2=penalty,
            bias_l2=chosen_bias_l2,
            iterations=max_iterations,
            weighted=False,
            clip=clip,
            random_state=random_state,
        ).fit(train, on_iteration=measure)
        best = int(np.argmin(history))  # history[j] is after iteration j + 1
        trials.append(
            {
                "factors": size,
                "l2": float(penalty),
                "rmse": history[best],
                "iterations": best + 1,
                "seconds": time.perf_counter() - trial_started,
            }
        )
    if not trials:
        raise ValueError("factors and l2 list no setting to try")
    best_trial = min(trials, key=lambda trial: trial["rmse"])
    params = {
        "factors": best_trial["factors"],
        "l2": best_trial["l2"],
        "bias_l2": chosen_bias_l2,
        "iterations": best_trial["iterations"],
        "weighted": False,
        "clip": clip,
        "random_state": random_state,
    }
    return Tuning(
        params=params,
        rmse=best_trial["rmse"],
        bias_l2_rmse=bias_scores,
        trials=trials,
        seconds=time.perf_counter() - started,
    )
