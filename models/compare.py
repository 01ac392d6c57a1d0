"""Fit every model family on one split and measure them the same way.

`prepare` turns canonical tables into a split, training matrices and feature matrices (fitted on
the training part only); `build_model` knows which inputs each family uses; `evaluate` ranks the
full catalogue for every test user with the user's training items excluded and computes the
metrics of `models.evaluate`. `cold_item_report` repeats the exercise on a split that holds out
every interaction of a share of items, and measures AUC among those cold items only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.interactions import interaction_matrix, rating_matrix
from features.items import FeatureMatrix, item_features, train_tags
from features.splits import Split, cold_item_split, cold_user_split, split
from features.users import DEMOGRAPHICS, genre_matrix, new_user_features, user_features
from models.base import Recommender
from models.evaluate import activity_segments, auc, ranking_metrics, rating_errors, segment_metrics
from models.factorization import BiasedMF, LightFMRecommender
from movierec.schema import CanonicalTables

MODEL_NAMES = ("popularity", "item_knn", "ease", "user_knn", "content", "mf", "hybrid", "biased_mf")
# Item feature groups that describe a movie without using its interactions (content-based).
METADATA_GROUPS = ("genre", "year", "tag", "keyword", "cast", "director", "language", "text")


@dataclass
class Prepared:
    split: Split
    train: sp.csr_matrix  # implicit positives of the training part
    test: sp.csr_matrix  # implicit positives of the test part
    # Every training rating with its value: excluded from rankings, learned by the rating predictor.
    seen: sp.csr_matrix
    item_features: FeatureMatrix
    user_features: FeatureMatrix
    metadata_features: FeatureMatrix
    genres: sp.csr_matrix
    n_users: int
    n_items: int


def prepare(
    users: pd.DataFrame,
    items: pd.DataFrame,
    tags: pd.DataFrame,
    *,
    chosen: Split,
    threshold: float = 4.0,
    item_groups: dict[str, float] | None = None,
    user_groups: dict[str, float] | None = None,
) -> Prepared:
    n_users, n_items = len(users), len(items)
    train = interaction_matrix(chosen.train, n_users, n_items, threshold=threshold)
    allowed_tags = train_tags(tags, chosen.train, chosen.test)
    fit_items = np.unique(chosen.train["item_idx"].to_numpy())
    items_built = item_features(items, tags=allowed_tags, fit_items=fit_items, groups=item_groups)
    metadata_groups = {g: w for g, w in (item_groups or {g: 1.0 for g in METADATA_GROUPS}).items() if g in METADATA_GROUPS}
    metadata = item_features(items, tags=allowed_tags, fit_items=fit_items, groups=metadata_groups or {"genre": 1.0})
    return Prepared(
        split=chosen,
        train=train,
        test=interaction_matrix(chosen.test, n_users, n_items, threshold=threshold),
        seen=rating_matrix(chosen.train, n_users, n_items),
        item_features=items_built,
        user_features=user_features(users, train, items, groups=user_groups),
        metadata_features=metadata,
        genres=genre_matrix(items),
        n_users=n_users,
        n_items=n_items,
    )


def build_model(name: str, prepared: Prepared, lightfm_params: dict | None = None) -> Recommender:
    """A fitted model of family `name`."""
    from models import baselines

    lightfm_params = lightfm_params or {}
    if name == "popularity":
        return baselines.Popularity().fit(prepared.train)
    if name == "item_knn":
        return baselines.ItemKNN().fit(prepared.train)
    if name == "ease":
        return baselines.EASE().fit(prepared.train)
    if name == "user_knn":
        return baselines.UserKNN().fit(prepared.train)
    if name == "content":
        return baselines.ContentBased(prepared.metadata_features.matrix).fit(prepared.train)
    if name == "mf":
        return LightFMRecommender(name="mf", **lightfm_params).fit(prepared.train)
    if name == "hybrid":
        return LightFMRecommender(name="hybrid", **lightfm_params).fit(
            prepared.train, item_features=prepared.item_features.matrix, user_features=prepared.user_features.matrix
        )
    if name == "biased_mf":
        return BiasedMF().fit(prepared.seen)
    raise ValueError(f"unknown model '{name}'; choose from {', '.join(MODEL_NAMES)}")


def evaluate(model: Recommender, prepared: Prepared, *, k: int = 10) -> dict:
    """Ranking metrics over the full catalogue, each test user's training items excluded, plus
    AUC, NDCG@k per training-activity segment and, for the rating predictor, MAE/RMSE."""
    users = evaluated_users(prepared)
    recommended, _ = model.recommend(users, k, exclude=prepared.seen)
    popularity = np.asarray(prepared.train.sum(axis=0)).ravel()
    common = {"train": prepared.seen, "item_popularity": popularity, "item_genres": prepared.genres, "n_items": prepared.n_items}
    metrics = ranking_metrics(recommended, prepared.test, k=k, users=users, **common)
    metrics["auc"] = _batched_auc(model, prepared, users)
    segments = segment_metrics(
        recommended, prepared.test, k=k, users=users, segments=activity_segments(prepared.seen, users), **common
    )
    for segment, row in segments.iterrows():
        metrics[f"ndcg@{k} users with {segment} train ratings"] = row[f"ndcg@{k}"]
    if isinstance(model, BiasedMF):
        test = prepared.split.test
        predicted = model.predict(test["user_idx"].to_numpy(), test["item_idx"].to_numpy())
        metrics.update(rating_errors(predicted, test["rating"].to_numpy()))
    return metrics


def evaluated_users(prepared: Prepared) -> np.ndarray:
    """Users with at least one held-out positive: the users every metric is averaged over."""
    return np.flatnonzero(np.diff(prepared.test.indptr) > 0)


def _batched_auc(
    model: Recommender, prepared: Prepared, users: np.ndarray, items: np.ndarray | None = None, batch: int = 1024
) -> float:
    """Mean per-user AUC (among `items` if given), scoring users in batches so memory stays at
    batch x n_items. Every user passed has positives, so batch means weight by batch size."""
    total = 0.0
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        total += auc(model.scores(chunk), prepared.test, prepared.seen, users=chunk, items=items) * len(chunk)
    return total / len(users) if len(users) else float("nan")


def compare(prepared: Prepared, names: tuple[str, ...] = MODEL_NAMES, *, k: int = 10, lightfm_params: dict | None = None) -> pd.DataFrame:
    """One row per model: its metrics and training seconds."""
    rows = []
    for name in names:
        started = time.perf_counter()
        model = build_model(name, prepared, lightfm_params)
        seconds = time.perf_counter() - started
        rows.append({"model": name, **evaluate(model, prepared, k=k), "train_seconds": seconds})
    return pd.DataFrame(rows).set_index("model")


@dataclass(frozen=True)
class ColdStartSetup:
    """What the cold-start reports hold fixed besides their split: the positive threshold, the
    feature groups, LightFM's parameters and the seed of the held-out items or users."""

    threshold: float = 4.0
    item_groups: dict[str, float] | None = None
    user_groups: dict[str, float] | None = None
    lightfm_params: dict | None = None
    seed: int = 0

    def prepare(self, tables: CanonicalTables, chosen: Split) -> Prepared:
        return prepare(tables.users, tables.items, tables.tags, chosen=chosen, threshold=self.threshold,
                       item_groups=self.item_groups, user_groups=self.user_groups)


def cold_item_report(
    tables: CanonicalTables,
    names: tuple[str, ...] = ("mf", "content", "hybrid"),
    *,
    item_share: float = 0.1,
    setup: ColdStartSetup = ColdStartSetup(),
) -> pd.DataFrame:
    """AUC of each model at ranking a user's held-out positives among the cold items."""
    chosen = cold_item_split(tables.ratings, item_share=item_share, seed=setup.seed)
    prepared = setup.prepare(tables, chosen)
    cold, evaluated = chosen.cold_items, evaluated_users(prepared)
    rows = []
    for name in names:
        model = build_model(name, prepared, setup.lightfm_params)
        rows.append(
            {
                "model": name,
                "cold_item_auc": _batched_auc(model, prepared, evaluated, items=cold),
                "cold_items": len(cold),
                "users": len(evaluated),
            }
        )
    return pd.DataFrame(rows).set_index("model")


def cold_user_report(
    tables: CanonicalTables, *, k: int = 10, user_share: float = 0.1, setup: ColdStartSetup = ColdStartSetup()
) -> pd.DataFrame:
    """Ranking metrics for users with no training data at all, known only by demographics:
    the hybrid (through its demographic features) against popularity."""
    chosen = cold_user_split(tables.ratings, user_share=user_share, seed=setup.seed)
    prepared = setup.prepare(tables, chosen)
    cold = evaluated_users(prepared)
    users = tables.users
    profiles = users.set_index("user_idx").loc[cold, [c for c in DEMOGRAPHICS if c in users]]
    rows = []
    for name in ("popularity", "hybrid"):
        model = build_model(name, prepared, setup.lightfm_params)
        lists = []
        for user, profile in profiles.iterrows():
            features = None
            if name == "hybrid":
                demographics = {key: value for key, value in profile.items() if pd.notna(value)}
                features = new_user_features(prepared.user_features, tables.items, liked_items=np.array([], dtype=np.int64),
                                             demographics=demographics, groups=setup.user_groups)
            lists.append(model.recommend_new_user(np.array([], dtype=np.int64), k, user_features=features)[0])
        metrics = ranking_metrics(np.vstack(lists), prepared.test, k=k, users=cold, n_items=prepared.n_items)
        rows.append({"model": name, **metrics})
    return pd.DataFrame(rows).set_index("model")


def default_split(ratings: pd.DataFrame, kind: str, *, test_share: float, min_ratings: int, seed: int) -> Split:
    params = {"test_share": test_share}
    if kind == "user_temporal":
        params["min_ratings"] = min_ratings
    if kind == "random":
        params["seed"] = seed
    return split(ratings, kind, **params)
