"""Factor models: LightFM (pure matrix factorisation, or the hybrid with user and item features)
and an explicit-rating predictor (biases + factors, fitted by alternating least squares).

LightFM is scored only through its representations (`get_user_representations` /
`get_item_representations`, biases included): one matrix product per batch of users, never
`predict` per (user, item) pair.

Reproducibility: LightFM trains with Hogwild SGD; with `num_threads > 1` threads race on shared
parameters, so two runs differ slightly even with the same `random_state`. The default here is
one thread, which makes a fit a pure function of data, parameters and seed; more threads train
faster at the cost of that guarantee.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
from lightfm import LightFM

from inference.model import factor_scores, item_side
from models.base import Recommender


class LightFMRecommender(Recommender):
    """LightFM on implicit positives. Without feature matrices it is plain matrix factorisation;
    with them (each including an identity block, see `features/`) it is the hybrid model."""

    def __init__(
        self,
        *,
        no_components: int = 64,
        loss: str = "warp",
        learning_rate: float = 0.05,
        item_alpha: float = 0.0,
        user_alpha: float = 0.0,
        max_sampled: int = 10,
        epochs: int = 30,
        num_threads: int = 1,
        random_state: int = 42,
        name: str | None = None,
    ) -> None:
        self.params = {
            "no_components": no_components,
            "loss": loss,
            "learning_rate": learning_rate,
            "item_alpha": item_alpha,
            "user_alpha": user_alpha,
            "max_sampled": max_sampled,
        }
        self.epochs = epochs
        self.num_threads = num_threads
        self.random_state = random_state
        self.name = name or "lightfm"
        self.model: LightFM | None = None
        self._cache = self._item_side = None

    def fit(
        self,
        interactions: sp.csr_matrix,
        *,
        item_features: sp.csr_matrix | None = None,
        user_features: sp.csr_matrix | None = None,
        on_epoch: Callable[[int, LightFMRecommender], bool | None] | None = None,
        start: LightFM | None = None,
    ) -> LightFMRecommender:
        """Train epoch by epoch; `on_epoch(epoch, self)` may return True to stop early (pruning).
        With `start` (a LightFM with these parameters, shaped for these feature matrices:
        `carried_over`), training continues from a copy of it instead of a fresh initialisation."""
        if start is None:
            self.model = LightFM(random_state=np.random.RandomState(self.random_state), **self.params)
        else:
            differing = {name for name, value in self.params.items() if getattr(start, name) != value}
            if differing:
                raise ValueError(f"the start model differs in {', '.join(sorted(differing))}")
            self.model = copy.deepcopy(start)
        self.item_features = item_features
        self.user_features = user_features
        matrix = interactions.tocoo()
        for epoch in range(1, self.epochs + 1):
            self.model.fit_partial(
                matrix,
                user_features=user_features,
                item_features=item_features,
                epochs=1,
                num_threads=self.num_threads,
            )
            self._cache = self._item_side = None
            if on_epoch is not None and on_epoch(epoch, self):
                break
        self._cache = self._item_side = None
        return self

    def state(self) -> LightFM:
        """A copy of the trained LightFM as it is now (`rewind` returns to it)."""
        if self.model is None:
            raise RuntimeError("fit the model first")
        return copy.deepcopy(self.model)

    def rewind(self, state: LightFM, epochs: int) -> LightFMRecommender:
        """Back to `state`, a `state()` taken after epoch `epochs` of this fit (early stopping):
        `epochs` becomes that count, so a refit on other data trains as long."""
        self.model, self.epochs = state, epochs
        self._cache = self._item_side = None
        return self

    def _representations(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if self.model is None:
            raise RuntimeError("fit the model first")
        if self._cache is None:
            user_bias, user_vectors = self.model.get_user_representations(self.user_features)
            item_bias, item_vectors = self.model.get_item_representations(self.item_features)
            self._cache = (user_bias, user_vectors, item_bias, item_vectors)
        return self._cache

    def scores(self, users: np.ndarray) -> np.ndarray:
        user_bias, user_vectors, item_bias, item_vectors = self._representations()
        if self._item_side is None:
            self._item_side = item_side(item_vectors, item_bias)
        return factor_scores(user_vectors, user_bias, self._item_side, users)

    def new_user_scores(self, liked_items: np.ndarray, user_features: sp.csr_matrix | None = None) -> np.ndarray:
        """With a feature row (hybrid: taste and demographics), the row's representation; without
        one, fold in the user as the mean of the liked items' vectors."""
        _, _, item_bias, item_vectors = self._representations()
        if user_features is not None and self.user_features is not None:
            bias, vector = self.model.get_user_representations(sp.csr_matrix(user_features))
            vector, bias = vector[0], bias[0]
        elif len(liked_items):
            vector, bias = item_vectors[np.asarray(liked_items)].mean(axis=0), 0.0
        else:
            vector, bias = np.zeros(item_vectors.shape[1], np.float32), 0.0
        return (item_vectors @ vector + item_bias + bias).astype(np.float32)

    def item_vectors(self) -> np.ndarray:
        return self._representations()[3]

    def representations(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(user_bias, user_vectors, item_bias, item_vectors), for batched scoring and serving."""
        return self._representations()


# A LightFM's state per feature row, on each side (item_ and user_ prefixed): the factors, the bias
# and what the learning schedule accumulated for each (adagrad's squared gradients, adadelta's
# averages).
_FEATURE_STATE = (
    "embeddings",
    "embedding_gradients",
    "embedding_momentum",
    "biases",
    "bias_gradients",
    "bias_momentum",
)


def feature_rows(fitted_names: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """For each of `names`, its position among `fitted_names`, or -1 where it is not one of them."""
    position = {name: row for row, name in enumerate(fitted_names)}
    if len(position) != len(fitted_names):
        raise ValueError("the fitted model's feature names repeat: its columns cannot be matched by name")
    return np.fromiter((position.get(name, -1) for name in names), dtype=np.int64, count=len(names))


def carried_over(fitted: LightFM, item_rows: np.ndarray, user_rows: np.ndarray, random_state: int) -> LightFM:
    """A LightFM with `fitted`'s parameters for other feature columns (the same entities
    featurised on more data: a vocabulary may gain or lose a word). Item feature j continues from
    `fitted`'s row item_rows[j] (factors, bias and their learning-rate state), or starts as LightFM
    starts a feature (seeded by `random_state`) where item_rows[j] is -1; likewise user features
    with `user_rows`. `fit(..., start=...)` trains on from it."""
    if fitted.item_embeddings is None:
        raise ValueError("the model to carry over is not fitted")
    model = LightFM(**{**fitted.get_params(), "random_state": np.random.RandomState(random_state)})
    model._initialize(fitted.no_components, len(item_rows), len(user_rows))  # LightFM's own starting values
    for side, rows in (("item", np.asarray(item_rows)), ("user", np.asarray(user_rows))):
        known = rows >= 0
        for state in _FEATURE_STATE:
            getattr(model, f"{side}_{state}")[known] = getattr(fitted, f"{side}_{state}")[rows[known]]
    return model


def fit_biases(
    ratings: sp.csr_matrix, *, user_l2: float = 15.0, item_l2: float = 10.0, iterations: int = 10
) -> tuple[float, np.ndarray, np.ndarray]:
    """(mu, user_bias, item_bias) minimising sum (r - mu - b_u - b_i)^2 + user_l2 sum b_u^2 +
    item_l2 sum b_i^2 by alternating closed-form steps (items first, as surprise's BaselineOnly):
    b_i = sum_u (r - mu - b_u) / (item_l2 + n_i), then b_u = sum_i (r - mu - b_i) / (user_l2 + n_u).

    `ratings` is users x items, every stored entry a rating. mu is the plain mean of the ratings.
    A user or item without ratings gets bias 0."""
    ratings = sp.csr_matrix(ratings, dtype=np.float64)
    if ratings.nnz == 0:
        raise ValueError("no ratings to fit")
    mu = float(ratings.data.mean())
    users = np.repeat(np.arange(ratings.shape[0]), np.diff(ratings.indptr))
    items = ratings.indices
    centred = ratings.data - mu
    user_counts = np.bincount(users, minlength=ratings.shape[0])
    item_counts = np.bincount(items, minlength=ratings.shape[1])
    user_bias = np.zeros(ratings.shape[0])
    item_bias = np.zeros(ratings.shape[1])
    for _ in range(iterations):
        item_bias = np.bincount(items, centred - user_bias[users], ratings.shape[1]) / (item_l2 + item_counts)
        user_bias = np.bincount(users, centred - item_bias[items], ratings.shape[0]) / (user_l2 + user_counts)
    return mu, user_bias, item_bias


def rating_range(clip: tuple[float, float] | str | None, ratings: sp.csr_matrix) -> tuple[float, float] | None:
    """The (min, max) predictions are clipped to: `clip` itself, the stored ratings' range for
    "observed", or None (no clipping)."""
    if isinstance(clip, str):
        if clip != "observed":
            raise ValueError(f"clip must be (min, max), 'observed' or None, got {clip!r}")
        return float(ratings.data.min()), float(ratings.data.max())
    return None if clip is None else (float(clip[0]), float(clip[1]))


# Floats per padded design block of the vectorised ALS solve (16 MB in float64), and the most a
# group's longest row may exceed its shortest (padding wastes at most that share of the work).
_BLOCK_FLOATS = 2_000_000
_GROUP_SPREAD = 1.25


def _count_groups(counts: np.ndarray, width: int) -> list[np.ndarray]:
    """The rows with counts > 0, in blocks of similar count (ascending): within a block the largest
    count is at most _GROUP_SPREAD times the smallest (exact for small counts), and the padded
    block (rows x largest count x width) holds at most _BLOCK_FLOATS floats."""
    active = np.flatnonzero(counts > 0)
    order = active[np.argsort(counts[active], kind="stable")]
    sorted_counts = counts[order]
    blocks, start = [], 0
    while start < len(order):
        ceiling = max(sorted_counts[start] * _GROUP_SPREAD, sorted_counts[start])
        stop = int(np.searchsorted(sorted_counts, ceiling, side="right"))
        rows_fitting = max(1, _BLOCK_FLOATS // (int(sorted_counts[stop - 1]) * width))
        stop = min(stop, start + rows_fitting)
        blocks.append(order[start:stop])
        start = stop
    return blocks


class BiasedMF(Recommender):
    """Explicit-rating predictor: r(u, i) = mu + b_u + b_i + p_u . q_i, fitted by alternating
    least squares.

    Fit: mu is the mean training rating; the biases start from the regularised bias baseline
    (`fit_biases` with `bias_l2`), the factors from N(0, init_std). Each half-step then solves, for
    every user (then every item) at once, the ridge regression of its residuals r - mu - b_other
    on the other side's augmented vectors [q, 1]:

        min ||r - mu - b_i - [q_i, 1] . [p_u, b_u]||^2 + n_u^w l2 ||p_u||^2 + bias_l2 b_u^2

    where w = 1 with `weighted` (the factors' penalty scaled by the number of ratings, "ALS-WR",
    Zhou et al. 2008) and w = 0 without (the default: weighted measured worse on both MovieLens
    sets). Factors and biases have separate penalties: a bias is one well-determined number per
    user and needs far less shrinkage than a vector of factors, and the factors need a strong
    one (with l2 = 5 they overfit: RMSE 1.03 on ml-100k, worse than the biases alone). The
    defaults were chosen on validation splits of ml-100k and ml-latest-small; `models.ratings.
    tune_biased_mf` tunes them per dataset. Each half-step is exact and vectorised (`_solve`).

    Predictions (`predict`) are clipped to `clip`: a (min, max) pair, "observed" (the training
    ratings' min and max, the default) or None (no clipping). `scores` (rankings) stay
    unclipped: clipping is monotone and never reorders, but it would tie every item predicted
    above the maximum and hand the order among them to the item index.

    Unknown users or items (no training rating, or an index outside the fitted matrix) fall back
    to what is known: an unrated user has b_u = 0 and p_u = 0 (likewise an unrated item), so a
    pair predicts mu + b_i (unknown user), mu + b_u (unknown item) or mu (both), then clipped.
    """

    name = "biased_mf"

    def __init__(
        self,
        *,
        factors: int = 16,
        l2: float = 12.0,
        bias_l2: float = 3.0,
        iterations: int = 20,
        weighted: bool = False,
        init_std: float = 0.1,
        clip: tuple[float, float] | str | None = "observed",
        random_state: int = 42,
    ) -> None:
        if factors < 0 or l2 <= 0 or bias_l2 <= 0 or iterations < 1:
            # Positive penalties make every ridge system solvable, however few ratings a row has.
            raise ValueError("factors must be non-negative; l2, bias_l2 and iterations positive")
        if isinstance(clip, str) and clip != "observed":
            raise ValueError(f"clip must be (min, max), 'observed' or None, got {clip!r}")
        self.factors, self.l2, self.bias_l2, self.iterations = factors, l2, bias_l2, iterations
        self.weighted, self.init_std, self.clip, self.random_state = weighted, init_std, clip, random_state

    def params(self) -> dict:
        """The constructor arguments: `BiasedMF(**model.params())` is an unfitted copy."""
        return {
            "factors": self.factors,
            "l2": self.l2,
            "bias_l2": self.bias_l2,
            "iterations": self.iterations,
            "weighted": self.weighted,
            "init_std": self.init_std,
            "clip": self.clip,
            "random_state": self.random_state,
        }

    def fit(
        self,
        interactions: sp.csr_matrix,
        *,
        item_features: sp.csr_matrix | None = None,
        user_features: sp.csr_matrix | None = None,
        on_iteration: Callable[[int, BiasedMF], bool | None] | None = None,
    ) -> BiasedMF:
        """`interactions` holds explicit ratings (see features.interactions.rating_matrix): every
        stored entry is a rating. `on_iteration(iteration, self)` runs after each ALS iteration
        (1, 2, ...) and may return True to stop there (early stopping on a validation split)."""
        ratings = sp.csr_matrix(interactions, dtype=np.float64)
        ratings.sum_duplicates()
        by_item = ratings.T.tocsr()
        self.mu, self.user_bias, self.item_bias = fit_biases(ratings, user_l2=self.bias_l2, item_l2=self.bias_l2)
        self.rating_range = rating_range(self.clip, ratings)
        n_users, n_items = ratings.shape
        generator = np.random.default_rng(self.random_state)
        user_counts, item_counts = np.diff(ratings.indptr), np.diff(by_item.indptr)
        # Rows without ratings keep zero vectors (the documented fallback).
        self.user_factors = generator.normal(0, self.init_std, (n_users, self.factors)) * (user_counts > 0)[:, None]
        self.item_factors = generator.normal(0, self.init_std, (n_items, self.factors)) * (item_counts > 0)[:, None]
        for iteration in range(1, self.iterations + 1):
            self.user_factors, self.user_bias = self._solve(ratings, self.item_factors, self.item_bias)
            self.item_factors, self.item_bias = self._solve(by_item, self.user_factors, self.user_bias)
            if on_iteration is not None and on_iteration(iteration, self):
                break
        return self

    def _solve(self, rows: sp.csr_matrix, fixed: np.ndarray, fixed_bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For every row entity with ratings, its z = [x, b] minimising ||y - D z||^2 + z' L z, where
        D holds the augmented vectors [f, 1] of the row's n rated columns, y = r - mu - fixed_bias
        and L is diagonal: l2 for the factors (times n when weighted), bias_l2 for the bias. Rows
        without ratings get zeros.

        Exact and vectorised: rows are grouped by similar n and each group's D is zero-padded to
        the group's largest n (padding adds nothing to either form below), so every group is a
        few batched BLAS products and one batched `np.linalg.solve`. A group with n >= k + 1
        solves the primal (D'D + L) z = D'y; a group with fewer ratings than unknowns (most items
        of a long-tailed catalogue) the smaller dual (D L^-1 D' + I) a = y, z = L^-1 D' a (the
        same minimiser)."""
        augmented = np.hstack([fixed, np.ones((len(fixed), 1))])
        width = augmented.shape[1]
        counts = np.diff(rows.indptr)
        values = rows.data - self.mu - fixed_bias[rows.indices]
        penalty = np.tile(np.r_[np.full(width - 1, self.l2), self.bias_l2], (rows.shape[0], 1))
        if self.weighted:
            penalty[:, :-1] *= counts[:, None]
        solved = np.zeros((rows.shape[0], width))
        for block in _count_groups(counts, width):
            longest = int(counts[block].max())
            offsets = np.arange(longest)
            present = offsets < counts[block, None]  # (rows, longest): real ratings, not padding
            positions = np.where(present, rows.indptr[block, None] + offsets, 0)
            design = augmented[rows.indices[positions]] * present[..., None]  # (rows, longest, width)
            target = np.where(present, values[positions], 0.0)
            if longest >= width:
                gram = design.transpose(0, 2, 1) @ design
                gram[:, np.arange(width), np.arange(width)] += penalty[block]
                right = (design.transpose(0, 2, 1) @ target[..., None])[..., 0]
                solved[block] = np.linalg.solve(gram, right[..., None])[..., 0]
            else:
                scaled = design / penalty[block, None, :]  # D L^-1
                kernel = scaled @ design.transpose(0, 2, 1)
                kernel[:, offsets, offsets] += 1.0
                dual = np.linalg.solve(kernel, target[..., None])
                solved[block] = (scaled.transpose(0, 2, 1) @ dual)[..., 0]
        return solved[:, :-1], solved[:, -1]

    def _gather(self, values: np.ndarray, index: np.ndarray) -> np.ndarray:
        """values[index], with 0 (the unknown fallback) for an index outside the fitted rows."""
        known = (index >= 0) & (index < len(values))
        gathered = np.zeros((len(index), *values.shape[1:]))
        gathered[known] = values[index[known]]
        return gathered

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings of the (user, item) pairs, clipped to `rating_range` (see the class
        docstring for unknown users and items)."""
        if not hasattr(self, "mu"):
            raise RuntimeError("fit the model first")
        users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
        dot = np.einsum("ij,ij->i", self._gather(self.user_factors, users), self._gather(self.item_factors, items))
        predicted = self.mu + self._gather(self.user_bias, users) + self._gather(self.item_bias, items) + dot
        if self.rating_range is not None:
            predicted = np.clip(predicted, *self.rating_range)
        return predicted

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Unclipped predicted ratings: the global mean rides on the item biases of `factor_scores`."""
        items = item_side(self.item_factors, self.item_bias + self.mu)
        return factor_scores(self.user_factors, self.user_bias, items, users)

    def new_user_scores(self, liked_items: np.ndarray, user_features: sp.csr_matrix | None = None) -> np.ndarray:
        vector = self.item_factors[np.asarray(liked_items)].mean(axis=0) if len(liked_items) else 0.0
        return (self.mu + self.item_bias + self.item_factors @ vector).astype(np.float32)

    def item_vectors(self) -> np.ndarray:
        return self.item_factors
