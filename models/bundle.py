"""From a fitted LightFM model to the bundle the registered model serves (`inference.model`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.interactions import rating_matrix
from features.prepare import Prepared
from features.users import DEFAULT_USER_GROUPS
from inference.model import ITEM_COLUMNS, ContentScorer, ServingBundle, segment_key
from models.factorization import BiasedMF, LightFMRecommender

# A demographic segment's own popularity list needs this many training users; smaller ones get
# the overall popularity list.
MIN_SEGMENT_USERS = 5


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
    new_user_policy: str = "model",
    segment_columns: tuple[str, ...] = (),
    content: ContentScorer | None = None,
    unrated_content_weight: float = 1.0,
) -> ServingBundle:
    """Bundle a fitted `LightFMRecommender` (and item-item models) with the split they were
    trained on.

    `users` / `items` are the canonical tables (all user_idx / item_idx of the snapshot);
    `user_groups` the user feature group weights given to `prepare` (None: the defaults);
    `rating_scale` (min, max, step) and `positive_threshold` those of the data it learned from;
    `blend` the scoring recipe over "factors" (`model`), "popularity" and the `item_item`
    matrices (None: `model` alone), `positives` what those read per user (None: the binary
    positives of `prepared.seen`), `ratings` a fitted rating predictor (on `prepared.seen`),
    `about` a description kept with the bundle; `content` the content model fitted on the same
    data, which ranks the movies `prepared.seen` has no rating of with `unrated_content_weight`
    (`ServingBundle.place_unrated`); `new_user_policy` and `segment_columns` how a
    new user known by demographics only is answered (segment popularity counts the positives of
    `prepared.train` per segment of `users`, segments of at least `MIN_SEGMENT_USERS` users).
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
        new_user_policy=new_user_policy,
        content=content,
        unrated_content_weight=unrated_content_weight,
        **_segments(prepared.train, users, segment_columns),
    )


def _segments(train: sp.csr_matrix, users: pd.DataFrame, columns: tuple[str, ...]) -> dict:
    """Positives per demographic segment (`inference.model.segment_key`) of the training users,
    for segments of at least MIN_SEGMENT_USERS users with positives."""
    if not columns:
        return {}
    active = np.flatnonzero(np.diff(train.indptr) > 0)
    profiles = users.set_index("user_idx").reindex(active)
    keys = pd.Series([segment_key(profile, columns) for profile in profiles.to_dict(orient="records")], index=active)
    keys = keys.dropna()
    sizes = keys.value_counts()
    kept = sorted(sizes.index[sizes >= MIN_SEGMENT_USERS])
    counts = np.zeros((len(kept), train.shape[1]), dtype=np.int64)
    binary = train.copy()
    binary.data[:] = 1.0
    for row, key in enumerate(kept):
        counts[row] = np.asarray(binary[keys.index[keys == key].to_numpy()].sum(axis=0)).ravel().astype(np.int64)
    return {"segment_columns": list(columns), "segment_keys": kept, "segment_counts": counts}


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
