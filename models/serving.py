"""Serving a fitted LightFM model: everything a request needs, precomputed, in original ids.

Pure: no file I/O, no MLflow (see `movierec.pyfunc` for saving and logging a bundle).

A `ServingBundle` holds the model's user and item representations (biases included), so scoring
a batch of known users is one matrix product (`models.topk.top_k` then selects, with each user's
training ratings excluded). Users and movies are addressed by their ORIGINAL ids (`user_id`,
`movie_id`); the bundle maps them to the snapshot's indices. Three kinds of request:

* a known user: the model's scores, the user's training items excluded;
* a new user described by liked movies and/or demographics: see `recommend_new_user`;
* anyone else: the popularity list (`fallback` / `source == "popularity"`).

Scores. Model scores are LightFM's `user . item + user_bias + item_bias` (float32, unbounded).
Popularity scores are the normalised popularity: an item's number of training positives over
that of the most popular item, in [0, 1] and monotone in the popularity order. The two scales are
not comparable; `source` says which one a row uses.

Padding: a list with fewer than k eligible items (tiny catalogue, many exclusions) is padded with
movie id -1 and score -inf in the array APIs; `predict` leaves padded entries out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.items import FeatureMatrix
from features.users import DEFAULT_USER_GROUPS, DEMOGRAPHICS, genre_matrix, new_user_features
from features.interactions import rating_matrix
from models.evaluate import ranking_metrics
from models.topk import PAD_ITEM, top_k

if TYPE_CHECKING:
    from models.compare import Prepared
    from models.factorization import LightFMRecommender

PAD_MOVIE = -1
ITEM_COLUMNS = ("movie_id", "title", "year", "genres")
OUTPUT_COLUMNS = ("request", "user_id", "movie_id", "rank", "score", "source")
REQUEST_COLUMNS = ("user_id", "k", "liked_movie_ids", *DEMOGRAPHICS)
MODEL, POPULARITY = "model", "popularity"
BATCH_SIZE = 2048


@dataclass(eq=False)
class ServingBundle:
    """A fitted LightFM model reduced to what serving needs (see the module docstring).

    Arrays are indexed by the training snapshot's user_idx / item_idx.
    """

    user_ids: np.ndarray  # int64 (n_users,): user_id of each user_idx
    item_ids: np.ndarray  # int64 (n_items,): movie_id of each item_idx
    user_bias: np.ndarray  # float32 (n_users,)
    user_vectors: np.ndarray  # float32 (n_users, d)
    item_bias: np.ndarray  # float32 (n_items,)
    item_vectors: np.ndarray  # float32 (n_items, d)
    # users x items, every rating the snapshot holds (training and held-out parts): what a user
    # has rated is never recommended to them.
    seen: sp.csr_matrix
    popularity: np.ndarray  # int64 (n_items,): item_idx, most training positives first
    popularity_counts: np.ndarray  # int64 (n_items,): training positives per item_idx
    items: pd.DataFrame  # movie_id, title, year, genres in item_idx order
    # New users (hybrid only; None / empty for pure matrix factorisation):
    user_feature_embeddings: np.ndarray | None = None  # float32 (n_user_features, d)
    user_feature_biases: np.ndarray | None = None  # float32 (n_user_features,)
    user_feature_names: list[str] = field(default_factory=list)
    user_feature_groups: dict[str, tuple[int, int]] = field(default_factory=dict)
    user_groups: dict[str, float] | None = None  # group weights the user features were built with
    # users x items, the ratings the model was trained on (None: `seen`). A holdout evaluation
    # excludes these, not `seen`, which holds the held-out part too.
    trained: sp.csr_matrix | None = None

    def __post_init__(self) -> None:
        self.user_ids = np.asarray(self.user_ids, dtype=np.int64)
        self.item_ids = np.asarray(self.item_ids, dtype=np.int64)
        self.user_bias = np.asarray(self.user_bias, dtype=np.float32)
        self.user_vectors = np.asarray(self.user_vectors, dtype=np.float32)
        self.item_bias = np.asarray(self.item_bias, dtype=np.float32)
        self.item_vectors = np.asarray(self.item_vectors, dtype=np.float32)
        self.popularity = np.asarray(self.popularity, dtype=np.int64)
        self.popularity_counts = np.asarray(self.popularity_counts, dtype=np.int64)
        self.seen = sp.csr_matrix(self.seen)
        self.trained = self.seen if self.trained is None else sp.csr_matrix(self.trained)
        self.user_feature_groups = {g: (int(a), int(b)) for g, (a, b) in self.user_feature_groups.items()}
        n_users, n_items = len(self.user_ids), len(self.item_ids)
        checks = {
            "user_bias": (self.user_bias.shape, (n_users,)),
            "user_vectors": (self.user_vectors.shape[:1], (n_users,)),
            "item_bias": (self.item_bias.shape, (n_items,)),
            "item_vectors": (self.item_vectors.shape[:1], (n_items,)),
            "seen": (self.seen.shape, (n_users, n_items)),
            "trained": (self.trained.shape, (n_users, n_items)),
            "popularity": (self.popularity.shape, (n_items,)),
            "popularity_counts": (self.popularity_counts.shape, (n_items,)),
            "items": ((len(self.items),), (n_items,)),
        }
        for name, (actual, expected) in checks.items():
            if tuple(actual) != expected:
                raise ValueError(f"ServingBundle.{name} has shape {tuple(actual)}, expected {expected}")
        if self.user_vectors.shape[1] != self.item_vectors.shape[1]:
            raise ValueError(f"user vectors ({self.user_vectors.shape[1]}) and item vectors "
                             f"({self.item_vectors.shape[1]}) differ in dimension")
        if self.user_feature_embeddings is not None:
            self.user_feature_embeddings = np.asarray(self.user_feature_embeddings, dtype=np.float32)
            self.user_feature_biases = np.asarray(self.user_feature_biases, dtype=np.float32)
            n_features = len(self.user_feature_names)
            if self.user_feature_embeddings.shape != (n_features, self.item_vectors.shape[1]) or \
                    self.user_feature_biases.shape != (n_features,):
                raise ValueError(f"user feature embeddings {self.user_feature_embeddings.shape} / biases "
                                 f"{self.user_feature_biases.shape} do not match {n_features} feature names")
        self._users = pd.Index(self.user_ids)
        self._movies = pd.Index(self.item_ids)
        if not self._users.is_unique or not self._movies.is_unique:
            raise ValueError("user_ids and item_ids must be unique")
        if not np.array_equal(self.popularity, np.argsort(-self.popularity_counts, kind="stable")):
            raise ValueError("popularity must order item_idx by popularity_counts, ties by lower item_idx")
        top = self.popularity_counts.max() if n_items else 0
        # Normalised popularity, the fallback's score: positives over the most popular item's.
        self.popularity_score = (self.popularity_counts / top if top else np.zeros(n_items)).astype(np.float32)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_model(
        cls,
        model: LightFMRecommender,
        prepared: Prepared,
        users: pd.DataFrame,
        items: pd.DataFrame,
        user_groups: dict[str, float] | None,
    ) -> ServingBundle:
        """Bundle a fitted `LightFMRecommender` with the split it was trained on.

        `users` / `items` are the canonical tables (all user_idx / item_idx of the snapshot);
        `user_groups` the user feature group weights given to `prepare` (None: the defaults).
        Popularity counts the positives of `prepared.train`; `trained` is `prepared.seen`, and
        `seen` adds the split's held-out ratings, so serving never recommends a rated movie.
        """
        if model.model is None:
            raise ValueError("fit the model before bundling it")
        user_bias, user_vectors, item_bias, item_vectors = model.representations()
        users = users.sort_values("user_idx")
        items = items.sort_values("item_idx")
        for name, frame, column in (("users", users, "user_idx"), ("items", items, "item_idx")):
            if not np.array_equal(frame[column].to_numpy(), np.arange(len(frame))):
                raise ValueError(f"{name}.{column} must be 0..{len(frame) - 1}")
        counts = np.asarray(prepared.train.getnnz(axis=0), dtype=np.int64)
        features = {}
        if model.user_features is not None:
            fitted = prepared.user_features
            if model.model.user_embeddings.shape[0] != len(fitted.names):
                raise ValueError(f"the model has {model.model.user_embeddings.shape[0]} user features, "
                                 f"prepared.user_features {len(fitted.names)}")
            features = {
                "user_feature_embeddings": np.array(model.model.user_embeddings, dtype=np.float32),
                "user_feature_biases": np.array(model.model.user_biases, dtype=np.float32),
                "user_feature_names": list(fitted.names),
                "user_feature_groups": dict(fitted.groups),
                "user_groups": dict(DEFAULT_USER_GROUPS if user_groups is None else user_groups),
            }
        return cls(
            user_ids=users["user_id"].to_numpy(np.int64),
            item_ids=items["movie_id"].to_numpy(np.int64),
            user_bias=np.array(user_bias, dtype=np.float32),
            user_vectors=np.array(user_vectors, dtype=np.float32),
            item_bias=np.array(item_bias, dtype=np.float32),
            item_vectors=np.array(item_vectors, dtype=np.float32),
            seen=_all_ratings(prepared),
            trained=prepared.seen.copy(),
            # Ties in popularity: lower item_idx first, the rule of models.topk.
            popularity=np.argsort(-counts, kind="stable"),
            popularity_counts=counts,
            items=items[list(ITEM_COLUMNS)].reset_index(drop=True),
            **features,
        )

    # ------------------------------------------------------------------ basic facts

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def has_user_features(self) -> bool:
        return self.user_feature_embeddings is not None and len(self.user_feature_names) > 0

    def user_index(self, user_ids: Iterable[int]) -> np.ndarray:
        """user_idx of each original user id, -1 for unknown users."""
        return self._users.get_indexer(_ids(user_ids))

    def item_index(self, movie_ids: Iterable[int]) -> np.ndarray:
        """item_idx of each original movie id, -1 for unknown movies."""
        return self._movies.get_indexer(_ids(movie_ids))

    # ------------------------------------------------------------------ scoring

    def _model_scores(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) float32, the same expression as LightFMRecommender.scores."""
        return (self.user_vectors[users] @ self.item_vectors.T + self.user_bias[users, None]
                + self.item_bias[None, :]).astype(np.float32)

    def _movie_ids(self, items: np.ndarray) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        return np.where(items == PAD_ITEM, PAD_MOVIE, self.item_ids[np.where(items == PAD_ITEM, 0, items)])

    def _top_known(self, users: np.ndarray, k: int, exclude: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model top-k of user_idx `users`, excluding row `rows[i]` of `exclude` for users[i]."""
        items = np.full((len(users), k), PAD_ITEM, dtype=np.int32)
        scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        for start in range(0, len(users), BATCH_SIZE):
            chunk = slice(start, start + BATCH_SIZE)
            items[chunk], scores[chunk] = top_k(self._model_scores(users[chunk]), k, exclude, user_rows=rows[chunk])
        return items, scores

    def _top_popular(self, n: int, k: int, exclude: sp.csr_matrix | None = None, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Popularity top-k for n lists; without exclusions every list is the same."""
        if exclude is None:
            items, scores = top_k(self.popularity_score[None, :], k)
            return np.repeat(items, n, axis=0), np.repeat(scores, n, axis=0)
        items = np.full((n, k), PAD_ITEM, dtype=np.int32)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        for start in range(0, n, BATCH_SIZE):
            chunk = slice(start, min(start + BATCH_SIZE, n))
            batch = np.broadcast_to(self.popularity_score, (chunk.stop - chunk.start, self.n_items))
            items[chunk], scores[chunk] = top_k(batch, k, exclude, user_rows=rows[chunk])
        return items, scores

    def recommend_users(self, user_ids: Iterable[int], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k movies for each original user id, in one batched product per 2,048 users.

        Known users: the model's scores, their training items (`seen`) excluded. Unknown users:
        the popularity list (normalised popularity as score) and `fallback` True.
        Returns (movie_ids int64 (n, k), scores float32 (n, k), fallback bool (n,)).
        """
        index = self.user_index(user_ids)
        known = index >= 0
        movie_ids = np.full((len(index), k), PAD_MOVIE, dtype=np.int64)
        scores = np.full((len(index), k), -np.inf, dtype=np.float32)
        if known.any():
            users = index[known]
            items, values = self._top_known(users, k, self.seen, users)
            movie_ids[known], scores[known] = self._movie_ids(items), values
        if (~known).any():
            items, values = self._top_popular(int((~known).sum()), k)
            movie_ids[~known], scores[~known] = self._movie_ids(items), values
        return movie_ids, scores, ~known

    def new_user_representation(
        self, liked_items: np.ndarray, demographics: Mapping[str, object] | None = None
    ) -> tuple[np.ndarray, float] | None:
        """(vector, bias) of a new user from known liked item_idx and demographics, or None when
        nothing usable is given. The rule of `recommend_new_user`."""
        liked_items = np.asarray(liked_items, dtype=np.int64)
        if self.has_user_features:
            row = self.new_user_row(liked_items, demographics)
            if row.nnz:
                return np.asarray(row @ self.user_feature_embeddings).ravel(), float(np.asarray(row @ self.user_feature_biases).ravel()[0])
        if len(liked_items):
            return self.item_vectors[liked_items].mean(axis=0), 0.0
        return None

    def new_user_row(self, liked_items: np.ndarray, demographics: Mapping[str, object] | None = None) -> sp.csr_matrix:
        """The 1 x n_user_features row `features.users.new_user_features` builds for a new user.

        Taste depends only on the liked items' genres, so the items table passed down holds just
        those items (re-indexed 0..m-1): the same row as with the whole catalogue, without parsing
        every item's genres per request.
        """
        if not self.has_user_features:
            raise ValueError("this model was trained without user features")
        liked_items = np.unique(np.asarray(liked_items, dtype=np.int64))
        liked = self.items.iloc[liked_items].assign(item_idx=np.arange(len(liked_items)))
        fitted = FeatureMatrix(sp.csr_matrix((0, len(self.user_feature_names)), dtype=np.float32),
                               list(self.user_feature_names), dict(self.user_feature_groups))
        return new_user_features(fitted, liked, liked_items=np.arange(len(liked_items)),
                                 demographics=_clean_demographics(demographics), groups=self.user_groups)

    def recommend_new_user(
        self, liked_movie_ids: Iterable[int] | None, demographics: Mapping[str, object] | None, k: int
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """Top-k movies for a user the model never saw. Liked movies are never recommended back;
        movie ids the bundle does not know are ignored.

        Rule, in order:
        1. hybrid model (user features): build the user's feature row with
           `features.users.new_user_features` (taste from the liked movies' genres, demographic
           columns for values in the fitted vocabulary; no identity column) and use its
           representation, `row @ user_feature_embeddings` and `row @ user_feature_biases`
           (exactly LightFM's `get_user_representations(row)`);
        2. if there is no usable feature (pure MF, or an empty row) but some liked movies are
           known: fold the user in as the mean of those movies' item vectors, user bias 0;
        3. otherwise (nothing usable): the popularity list, `fallback` True.
        Returns (movie_ids int64 (k,), scores float32 (k,), fallback).
        """
        liked_ids = _int_array(liked_movie_ids)
        liked = np.unique(self.item_index(liked_ids))
        liked = liked[liked >= 0]
        exclude = sp.csr_matrix((np.ones(len(liked), np.float32), (np.zeros(len(liked), np.int64), liked)), shape=(1, self.n_items))
        representation = self.new_user_representation(liked, demographics)
        if representation is None:
            items, scores = self._top_popular(1, k, exclude, np.zeros(1, np.int64))
            return self._movie_ids(items[0]), scores[0], True
        vector, bias = representation
        scores = (self.item_vectors @ vector + self.item_bias + np.float32(bias)).astype(np.float32)
        items, values = top_k(scores[None, :], k, exclude)
        return self._movie_ids(items[0]), values[0], False

    @cached_property
    def unit_item_vectors(self) -> np.ndarray:
        """Item vectors scaled to unit length (zero vectors stay zero): cosine is a dot product."""
        norms = np.linalg.norm(self.item_vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return (self.item_vectors / norms).astype(np.float32)

    def similar_movies(self, movie_id: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k movies whose item vectors have the highest cosine similarity with `movie_id`'s,
        the movie itself excluded. Returns (movie_ids int64 (k,), cosines float32 (k,))."""
        index = int(self.item_index([movie_id])[0])
        if index < 0:
            raise KeyError(f"movie_id {movie_id} is not in the model's catalogue ({self.n_items} movies)")
        unit = self.unit_item_vectors
        similarity = unit @ unit[index]
        itself = sp.csr_matrix(([1.0], ([0], [index])), shape=(1, self.n_items))
        items, values = top_k(similarity[None, :], k, itself)
        return self._movie_ids(items[0]), values[0]

    # ------------------------------------------------------------------ requests

    def predict(self, requests: pd.DataFrame | Mapping | list, default_k: int = 10) -> pd.DataFrame:
        """Recommendations for a frame of requests, one output row per recommended movie.

        Request columns (all optional): `user_id` (nullable int), `k` (nullable int, default
        `default_k`), `liked_movie_ids` (list of ints or None), `age`, `gender`, `occupation`.
        A row whose user_id is known gets `recommend_users` (liked movies and demographics are
        not used: the model knows the user); all such rows are scored in one batched call. Any
        other row is a new user: `recommend_new_user` with its liked movies and demographics,
        which is the popularity list when there is nothing usable.

        Output columns: request (int64, the row position in `requests`), user_id (Int64, NA
        when missing), movie_id (int64), rank (int64, 1-based), score (float64), source ("model"
        or "popularity"); ordered by request then rank; padding is left out.
        """
        frame = as_request_frame(requests)
        n = len(frame)
        user_ids = _nullable_ints(frame["user_id"], "user_id") if "user_id" in frame else pd.array([pd.NA] * n, dtype="Int64")
        ks = _nullable_ints(frame["k"], "k") if "k" in frame else pd.array([pd.NA] * n, dtype="Int64")
        ks = ks.fillna(default_k).to_numpy(np.int64) if n else np.empty(0, np.int64)
        if (ks < 1).any():
            raise ValueError(f"k must be positive; got {sorted(set(ks[ks < 1].tolist()))}")
        present = ~pd.isna(user_ids)
        index = np.full(n, -1, dtype=np.int64)
        if present.any():
            index[present] = self.user_index(np.asarray(user_ids[present], dtype=np.int64))
        known = np.flatnonzero(index >= 0)

        lists: list[tuple[np.ndarray, np.ndarray, str] | None] = [None] * n
        if len(known):
            kmax = int(ks[known].max())
            items, scores = self._top_known(index[known], kmax, self.seen, index[known])
            movie_ids = self._movie_ids(items)
            for row, request in enumerate(known):
                lists[request] = (movie_ids[row, : ks[request]], scores[row, : ks[request]], MODEL)
        for request in np.flatnonzero(index < 0):
            liked = frame["liked_movie_ids"].iloc[request] if "liked_movie_ids" in frame else None
            demographics = {c: frame[c].iloc[request] for c in DEMOGRAPHICS if c in frame}
            movie_ids, scores, fallback = self.recommend_new_user(liked, demographics, int(ks[request]))
            lists[request] = (movie_ids, scores, POPULARITY if fallback else MODEL)
        return _output_frame(lists, user_ids)

    def because(self, liked_items: np.ndarray, recommended: np.ndarray) -> np.ndarray:
        """For each recommended item_idx, the liked item_idx whose item vector is most similar
        (cosine; ties: the first in `liked_items`). -1 where `recommended` is padding (-1) or
        nothing is liked. The "because you liked ..." of a recommendation."""
        liked = np.asarray(liked_items, dtype=np.int64).ravel()
        recommended = np.asarray(recommended, dtype=np.int64)
        out = np.full(recommended.shape, -1, dtype=np.int64)
        valid = recommended >= 0
        if not len(liked) or not valid.any():
            return out
        unit = self.unit_item_vectors
        similarity = unit[recommended[valid]] @ unit[liked].T
        out[valid] = liked[np.argmax(similarity, axis=1)]
        return out


def holdout_metrics(bundle: ServingBundle, train: pd.DataFrame, test: pd.DataFrame, *, k: int, threshold: float) -> dict:
    """Ranking metrics of `bundle` as served, on a holdout given in ORIGINAL ids.

    `train` / `test` have user_id, movie_id, rating. Evaluated users: the test users with at least
    one positive (rating >= threshold). Each gets the bundle's top-k: a user the bundle knows gets
    the model's list with the items it was `trained` on AND the user's `train` pairs excluded; an
    unknown user gets the popularity list with their `train` pairs excluded. Both exclusions are
    one combined matrix in the bundle's item space (train movies the bundle does not know cannot
    be recommended anyway), so the selection is exact. Test positives on movies the bundle does
    not know count in every denominator (recall, ideal DCG) but can never be hit: an old champion
    and a new challenger are measured identically on the same current holdout.

    Returns the keys of `models.evaluate.ranking_metrics` (ndcg@k, recall@k, ..., novelty@k from
    the bundle's training popularity, diversity@k from the genres, n_users_evaluated) plus
    `fallback_users` (evaluated users served by popularity).
    """
    positives = test.loc[test["rating"] >= threshold, ["user_id", "movie_id"]].drop_duplicates()
    users = np.unique(positives["user_id"].to_numpy(np.int64))
    n = len(users)
    row_of = pd.Index(users)

    # Test positives: known movies in their item_idx column, unknown ones in extra columns.
    test_rows = row_of.get_indexer(positives["user_id"].to_numpy(np.int64))
    test_items = bundle.item_index(positives["movie_id"].to_numpy(np.int64))
    unknown = test_items < 0
    if unknown.any():
        extra = pd.factorize(positives["movie_id"].to_numpy(np.int64)[unknown])[0]
        test_items[unknown] = bundle.n_items + extra
    n_columns = int(max(bundle.n_items, test_items.max() + 1 if len(test_items) else 0))
    test_matrix = sp.csr_matrix((np.ones(len(test_rows), np.float32), (test_rows, test_items)), shape=(n, n_columns))

    # Exclusions: the items each known user's model was trained on plus every given train pair.
    index = bundle.user_index(users)
    known = index >= 0
    seen_rows = bundle.trained[index[known]].tocoo()
    train_rows = row_of.get_indexer(train["user_id"].to_numpy(np.int64))
    train_items = bundle.item_index(train["movie_id"].to_numpy(np.int64))
    keep = (train_rows >= 0) & (train_items >= 0)
    exclude = sp.csr_matrix(
        (
            np.ones(seen_rows.nnz + int(keep.sum()), np.float32),
            (
                np.concatenate([np.flatnonzero(known)[seen_rows.row], train_rows[keep]]),
                np.concatenate([seen_rows.col, train_items[keep]]),
            ),
        ),
        shape=(n, bundle.n_items),
    )
    exclude.sum_duplicates()

    rows = np.arange(n)
    recommended = np.full((n, k), PAD_ITEM, dtype=np.int64)
    if known.any():
        recommended[known] = bundle._top_known(index[known], k, exclude, rows[known])[0]
    if (~known).any():
        recommended[~known] = bundle._top_popular(int((~known).sum()), k, exclude, rows[~known])[0]

    genres = genre_matrix(bundle.items.assign(item_idx=np.arange(bundle.n_items)))
    metrics = ranking_metrics(
        recommended, test_matrix, k=k, users=rows, train=exclude, n_items=bundle.n_items,
        item_popularity=bundle.popularity_counts.astype(np.float64), item_genres=genres,
    )
    metrics["fallback_users"] = int((~known).sum())
    return metrics


# ---------------------------------------------------------------------- helpers


def as_request_frame(requests: pd.DataFrame | Mapping | list) -> pd.DataFrame:
    """A DataFrame of requests from a frame, one request dict, or a list of request dicts."""
    if isinstance(requests, pd.DataFrame):
        return requests.reset_index(drop=True)
    if isinstance(requests, Mapping):
        return pd.DataFrame([dict(requests)])
    if isinstance(requests, list):
        return pd.DataFrame([dict(request) for request in requests]) if requests else pd.DataFrame(columns=list(REQUEST_COLUMNS))
    raise TypeError(f"requests must be a DataFrame, a dict or a list of dicts, got {type(requests).__name__}")


def _ids(values: Iterable[int]) -> np.ndarray:
    if not isinstance(values, (np.ndarray, pd.Series, pd.Index, pd.api.extensions.ExtensionArray)):
        values = list(values)
    return np.asarray(values, dtype=np.int64)


def _missing(value: object) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return bool(np.isscalar(value) and pd.isna(value))
    except (TypeError, ValueError):
        return False


def _nullable_ints(values: pd.Series, name: str) -> pd.arrays.IntegerArray:
    """A column of integers with gaps (ints, integral floats, None/NaN/NA) as Int64."""
    out = []
    for value in values.tolist():
        if _missing(value):
            out.append(pd.NA)
            continue
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name} must be an integer or missing, got {value!r}")
        if float(value) != int(value):
            raise ValueError(f"{name} must be an integer or missing, got {value!r}")
        out.append(int(value))
    return pd.array(out, dtype="Int64")


def _int_array(values: Iterable[int] | None) -> np.ndarray:
    """Liked movie ids as int64: None / NaN -> empty; a list, tuple or array of integers."""
    if values is None or (np.isscalar(values) and _missing(values)):
        return np.empty(0, dtype=np.int64)
    if isinstance(values, (str, bytes)) or np.isscalar(values):
        raise ValueError(f"liked_movie_ids must be a list of integers, got {values!r}")
    array = np.asarray(list(values))
    if array.size == 0:
        return np.empty(0, dtype=np.int64)
    if array.dtype.kind not in "iuf" or (array.dtype.kind == "f" and not np.all(array == np.round(array))):
        raise ValueError(f"liked_movie_ids must be integers, got {list(values)!r}")
    return array.astype(np.int64)


def _clean_demographics(demographics: Mapping[str, object] | None) -> dict[str, object]:
    return {key: value for key, value in (demographics or {}).items() if key in DEMOGRAPHICS and not _missing(value)}


def _output_frame(lists: list[tuple[np.ndarray, np.ndarray, str]], user_ids: pd.arrays.IntegerArray) -> pd.DataFrame:
    requests, movies, ranks, scores, sources = [], [], [], [], []
    for request, (movie_ids, values, source) in enumerate(lists):
        valid = movie_ids != PAD_MOVIE
        count = int(valid.sum())
        requests.append(np.full(count, request, dtype=np.int64))
        movies.append(movie_ids[valid].astype(np.int64))
        ranks.append(np.arange(1, count + 1, dtype=np.int64))
        scores.append(values[valid].astype(np.float64))
        sources.append(np.full(count, source, dtype=object))
    request = np.concatenate(requests) if requests else np.empty(0, np.int64)
    return pd.DataFrame(
        {
            "request": request,
            "user_id": pd.array(user_ids, dtype="Int64")[request] if len(request) else pd.array([], dtype="Int64"),
            "movie_id": np.concatenate(movies) if movies else np.empty(0, np.int64),
            "rank": np.concatenate(ranks) if ranks else np.empty(0, np.int64),
            "score": np.concatenate(scores) if scores else np.empty(0, np.float64),
            "source": pd.Series(np.concatenate(sources) if sources else np.empty(0, object), dtype="str"),
        }
    )


def _all_ratings(prepared: Prepared) -> sp.csr_matrix:
    """users x items, every rating of the split (training and held-out), valued by the rating."""
    both = pd.concat([prepared.split.train, prepared.split.test], ignore_index=True)
    return rating_matrix(both, prepared.n_users, prepared.n_items)
