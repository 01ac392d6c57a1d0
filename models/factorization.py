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

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from lightfm import LightFM

from inference.model import factor_scores
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

    def fit(
        self,
        interactions: sp.csr_matrix,
        *,
        item_features: sp.csr_matrix | None = None,
        user_features: sp.csr_matrix | None = None,
        on_epoch: Callable[[int, LightFMRecommender], bool | None] | None = None,
    ) -> LightFMRecommender:
        """Train epoch by epoch; `on_epoch(epoch, self)` may return True to stop early (pruning)."""
        self.model = LightFM(random_state=np.random.RandomState(self.random_state), **self.params)
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
            self._cache = None
            if on_epoch is not None and on_epoch(epoch, self):
                break
        self._cache = None
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
        return factor_scores(user_vectors, item_vectors, user_bias, item_bias, users)

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


class BiasedMF(Recommender):
    """Explicit-rating predictor: r(u, i) = mu + b_u + b_i + p_u . q_i, by alternating least
    squares with L2 regularisation. Each half-step solves one small ridge regression per user
    (or item) on the ratings it has; biases are the last coordinate of augmented vectors."""

    name = "biased_mf"

    def __init__(self, *, factors: int = 32, l2: float = 5.0, iterations: int = 15, random_state: int = 42) -> None:
        self.factors, self.l2, self.iterations, self.random_state = factors, l2, iterations, random_state

    def fit(
        self,
        interactions: sp.csr_matrix,
        *,
        item_features: sp.csr_matrix | None = None,
        user_features: sp.csr_matrix | None = None,
    ) -> BiasedMF:
        """`interactions` holds explicit ratings (see features.interactions.rating_matrix)."""
        ratings = interactions.tocsr()
        self.mu = float(ratings.data.mean())
        residual = ratings.copy()
        residual.data = residual.data - self.mu
        n_users, n_items = ratings.shape
        generator = np.random.default_rng(self.random_state)
        self.user_factors = generator.normal(0, 0.01, (n_users, self.factors))
        self.item_factors = generator.normal(0, 0.01, (n_items, self.factors))
        self.user_bias = np.zeros(n_users)
        self.item_bias = np.zeros(n_items)
        by_item = residual.T.tocsr()
        for _ in range(self.iterations):
            self.user_factors, self.user_bias = self._solve(residual, self.item_factors, self.item_bias)
            self.item_factors, self.item_bias = self._solve(by_item, self.user_factors, self.user_bias)
        return self

    def _solve(self, rows: sp.csr_matrix, fixed: np.ndarray, fixed_bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each row entity: min ||r - fixed_bias - [f, 1] . [x, b]||^2 + l2 ||[x, b]||^2."""
        augmented = np.hstack([fixed, np.ones((len(fixed), 1))])
        identity = self.l2 * np.eye(self.factors + 1)
        solved = np.zeros((rows.shape[0], self.factors + 1))
        for row in range(rows.shape[0]):
            start, stop = rows.indptr[row], rows.indptr[row + 1]
            if start == stop:
                continue
            columns = rows.indices[start:stop]
            design = augmented[columns]
            target = rows.data[start:stop] - fixed_bias[columns]
            solved[row] = np.linalg.solve(design.T @ design + identity, design.T @ target)
        return solved[:, :-1], solved[:, -1]

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users, items = np.asarray(users), np.asarray(items)
        dot = np.einsum("ij,ij->i", self.user_factors[users], self.item_factors[items])
        return self.mu + self.user_bias[users] + self.item_bias[items] + dot

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Predicted ratings: the global mean rides on the item biases of `factor_scores`."""
        return factor_scores(self.user_factors, self.item_factors, self.user_bias, self.item_bias + self.mu, users)

    def new_user_scores(self, liked_items: np.ndarray, user_features: sp.csr_matrix | None = None) -> np.ndarray:
        vector = self.item_factors[np.asarray(liked_items)].mean(axis=0) if len(liked_items) else 0.0
        return (self.mu + self.item_bias + self.item_factors @ vector).astype(np.float32)

    def item_vectors(self) -> np.ndarray:
        return self.item_factors
