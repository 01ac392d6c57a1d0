"""User features for the hybrid model: identity, demographics, and taste.

Taste is the share of each genre among a user's positive training interactions. It is derived
from liked movies alone, so a brand-new user described by a few liked movies (and, optionally,
demographics) gets a feature row in the same space as everyone else (`new_user_features`).
The demographic vocabularies are fixed or fitted on training users only.

The encoding a new user gets at serving time (age buckets, taste, the row itself) lives in
`inference.model`, the served model's file, and is imported here: training and serving encode a
user with the same code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.items import FeatureMatrix, assemble
from features.tables import GENRES
from inference.model import AGE_LABELS, age_bucket, multi_hot, new_user_row, split_values, taste

USER_GROUPS = ("identity", "age", "gender", "occupation", "taste")
DEFAULT_USER_GROUPS = {"identity": 1.0, "age": 0.5, "gender": 0.5, "occupation": 0.5, "taste": 1.0}


def genre_matrix(items: pd.DataFrame) -> sp.csr_matrix:
    """items x genres multi-hot, columns in `GENRES` order (rows in item_idx order)."""
    ordered = items.sort_values("item_idx")
    matrix, _ = multi_hot(split_values(ordered["genres"]), "genre", list(GENRES))
    return matrix


def user_features(
    users: pd.DataFrame,
    interactions: sp.csr_matrix,
    items: pd.DataFrame,
    *,
    groups: dict[str, float] | None = None,
) -> FeatureMatrix:
    """Build the user feature matrix (rows in user_idx order).

    interactions: users x items positives of the TRAINING split only (taste must not see test).
    """
    groups = DEFAULT_USER_GROUPS if groups is None else groups
    unknown = set(groups) - set(USER_GROUPS)
    if unknown:
        raise ValueError(f"unknown user feature groups {sorted(unknown)}; known: {USER_GROUPS}")
    users = users.sort_values("user_idx").reset_index(drop=True)
    return assemble("user", USER_GROUPS, groups, lambda group: _user_block(group, users, interactions, items))


def _user_block(group: str, users: pd.DataFrame, interactions: sp.csr_matrix, items: pd.DataFrame):
    if group == "identity":
        return sp.identity(len(users), dtype=np.float32, format="csr"), [f"user:{u}" for u in users["user_id"]]
    if group == "taste":
        return taste(interactions, genre_matrix(items)), [f"taste:{genre}" for genre in GENRES]
    if group == "age":
        return multi_hot([age_bucket(age) for age in users["age"]], "age", list(AGE_LABELS))
    values = [[str(value)] if pd.notna(value) else [] for value in users[group]]
    return multi_hot(values, group)


def new_user_features(
    features: FeatureMatrix,
    items: pd.DataFrame,
    *,
    liked_items: np.ndarray,
    demographics: dict[str, object] | None = None,
    groups: dict[str, float] | None = None,
) -> sp.csr_matrix:
    """A 1 x n_features row for a user the model has never seen: no identity column, taste from
    the liked items (item_idx into `items`), demographic columns where the value is in the
    fitted vocabulary (`inference.model.new_user_row`)."""
    liked = np.unique(np.asarray(liked_items, dtype=np.int64))
    genres = items.sort_values("item_idx")["genres"].to_numpy()[liked]
    return new_user_row(
        features.names, features.groups, DEFAULT_USER_GROUPS if groups is None else groups, genres, demographics
    )
