"""The one small interface every recommender implements.

Users and items are the snapshot's contiguous indices (user_idx, item_idx). `fit` takes the
training interactions as a users x items CSR matrix (and, for models that use them, feature
matrices); everything else is derived from what `fit` saw, never from test data. Rankings go
through `inference.model.top_k`, the selection every list in the project (the served model's
included) is made with.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import scipy.sparse as sp

from inference.model import cosine_top_k, top_k, unit_rows


class Recommender(ABC):
    name: str = "recommender"

    @abstractmethod
    def fit(
        self,
        interactions: sp.csr_matrix,
        *,
        item_features: sp.csr_matrix | None = None,
        user_features: sp.csr_matrix | None = None,
    ) -> Recommender:
        """Learn from training interactions (users x items)."""

    @abstractmethod
    def scores(self, users: np.ndarray) -> np.ndarray:
        """Dense (len(users), n_items) scores; higher is better."""

    @abstractmethod
    def new_user_scores(self, liked_items: np.ndarray, user_features: sp.csr_matrix | None = None) -> np.ndarray:
        """(n_items,) scores for a user the model never saw, from liked items and/or a feature row."""

    def recommend(
        self, users: np.ndarray, k: int, exclude: sp.csr_matrix | None = None, batch_size: int = 2048
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items per user, excluding `exclude[user]` (the user's seen items)."""
        users = np.asarray(users)
        items, values = [], []
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            batch_items, batch_scores = top_k(self.scores(batch), k, exclude, batch)
            items.append(batch_items)
            values.append(batch_scores)
        if not items:
            return np.empty((0, k), np.int32), np.empty((0, k), np.float32)
        return np.vstack(items), np.vstack(values)

    def recommend_new_user(
        self, liked_items: np.ndarray, k: int, user_features: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        liked_items = np.asarray(liked_items, dtype=np.int64)
        scores = self.new_user_scores(liked_items, user_features)[None, :]
        seen = sp.csr_matrix(
            (np.ones(len(liked_items), np.float32), (np.zeros(len(liked_items), np.int64), liked_items)),
            shape=(1, scores.shape[1]),
        )
        items, values = top_k(scores, k, seen)
        return items[0], values[0]

    @abstractmethod
    def item_vectors(self) -> np.ndarray:
        """(n_items, d) vectors whose cosine similarity defines `similar_items`."""

    def similar_items(self, item: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k items whose `item_vectors` are most cosine-similar to `item`'s, itself excluded."""
        return cosine_top_k(unit_rows(self.item_vectors()), item, k)
