"""From a fitted LightFM model to the bundle the registered model serves (`inference.model`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.interactions import rating_matrix
from features.prepare import Prepared
from features.users import DEFAULT_USER_GROUPS
from inference.model import ITEM_COLUMNS, ServingBundle
from models.factorization import BiasedMF, LightFMRecommender


def serving_bundle(
    model: LightFMRecommender,
    prepared: Prepared,
    users: pd.DataFrame,
    items: pd.DataFrame,
    user_groups: dict[str, float] | None,
    *,
    rating_scale: tuple[float, float, float] | None = None,
    positive_threshold: float = 4.0,
    blend: dict[str, float] | None = None,
    item_item: dict[str, sp.spmatrix] | None = None,
    about: dict | None = None,
    positives: sp.spmatrix | None = None,
    ratings: BiasedMF | None = None,
) -> ServingBundle:
    """Bundle a fitted `LightFMRecommender` (and item-item models) with the split they were
    trained on.

    `users` / `items` are the canonical tables (all user_idx / item_idx of the snapshot);
    `user_groups` the user feature group weights given to `prepare` (None: the defaults);
    `rating_scale` (min, max, step) and `positive_threshold` those of the data it learned from;
    `blend` the scoring recipe over "factors" (`model`), "popularity" and the `item_item`
    matrices (None: `model` alone), `positives` what those read per user (None: the binary
    positives of `prepared.seen`), `ratings` a fitted rating predictor (on `prepared.seen`),
    `about` a description kept with the bundle.
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
            raise ValueError(
                f"the model has {model.model.user_embeddings.shape[0]} user features, "
                f"prepared.user_features {len(fitted.names)}"
            )
        features = {
            "user_feature_embeddings": np.array(model.model.user_embeddings, dtype=np.float32),
            "user_feature_biases": np.array(model.model.user_biases, dtype=np.float32),
            "user_feature_names": list(fitted.names),
            "user_feature_groups": dict(fitted.groups),
            "user_groups": dict(DEFAULT_USER_GROUPS if user_groups is None else user_groups),
        }
    return ServingBundle(
        user_ids=users["user_id"].to_numpy(np.int64),
        item_ids=items["movie_id"].to_numpy(np.int64),
        user_bias=np.array(user_bias, dtype=np.float32),
        user_vectors=np.array(user_vectors, dtype=np.float32),
        item_bias=np.array(item_bias, dtype=np.float32),
        item_vectors=np.array(item_vectors, dtype=np.float32),
        seen=_all_ratings(prepared),
        trained=prepared.seen.copy(),
        # Ties in popularity: lower item_idx first, the rule of inference.model.top_k.
        popularity=np.argsort(-counts, kind="stable"),
        popularity_counts=counts,
        items=items[list(ITEM_COLUMNS)].reset_index(drop=True),
        rating_scale=rating_scale,
        positive_threshold=positive_threshold,
        blend=blend,
        item_item=dict(item_item or {}),
        about=dict(about or {}),
        positives=positives,
        **features,
        **(_rating_predictor(ratings) if ratings is not None else {}),
    )


def _rating_predictor(model: BiasedMF) -> dict:
    return {
        "rating_mean": float(model.mu),
        "rating_user_bias": model.user_bias,
        "rating_item_bias": model.item_bias,
        "rating_user_factors": model.user_factors,
        "rating_item_factors": model.item_factors,
    }


def _all_ratings(prepared: Prepared) -> sp.csr_matrix:
    """users x items, every rating of the split (training and held-out), valued by the rating."""
    both = pd.concat([prepared.split.train, prepared.split.test], ignore_index=True)
    return rating_matrix(both, prepared.n_users, prepared.n_items)
