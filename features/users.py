"""User features for the hybrid model: identity, demographics, and taste.

Taste is the share of each genre among a user's positive training interactions. It is derived
from liked movies alone, so a brand-new user described by a few liked movies (and, optionally,
demographics) gets a feature row in the same space as everyone else (`new_user_features`).
The demographic vocabularies are fixed or fitted on training users only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.items import FeatureMatrix, assemble, l1_normalise, multi_hot, split_values
from movierec.schema import GENRES

USER_GROUPS = ("identity", "age", "gender", "occupation", "taste")
DEFAULT_USER_GROUPS = {"identity": 1.0, "age": 0.5, "gender": 0.5, "occupation": 0.5, "taste": 1.0}
# MovieLens 1M's age groups; ml-100k's exact ages are bucketed the same way.
AGE_EDGES = (18, 25, 35, 45, 50, 56)
AGE_LABELS = ("under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
DEMOGRAPHICS = ("age", "gender", "occupation")


def age_bucket(age: float | None) -> list[str]:
    if age is None or pd.isna(age):
        return []
    return [AGE_LABELS[int(np.searchsorted(AGE_EDGES, age, side="right"))]]


def genre_matrix(items: pd.DataFrame) -> sp.csr_matrix:
    """items x genres multi-hot, columns in `GENRES` order (rows in item_idx order)."""
    ordered = items.sort_values("item_idx")
    matrix, _ = multi_hot(split_values(ordered["genres"]), "genre", list(GENRES))
    return matrix


def taste(interactions: sp.csr_matrix, genres: sp.csr_matrix) -> sp.csr_matrix:
    """Rows: each user's genre shares among their positives (users x genres, rows sum to 1 or 0)."""
    binary = interactions.copy()
    binary.data[:] = 1.0
    counts = (binary @ genres).astype(np.float32).tocsr()
    return l1_normalise(counts)


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
    the liked items, demographic columns where the value is in the fitted vocabulary."""
    groups = DEFAULT_USER_GROUPS if groups is None else groups
    row = np.zeros(len(features.names), dtype=np.float32)
    column = {name: index for index, name in enumerate(features.names)}
    if "taste" in features.groups and len(liked_items):
        liked = sp.csr_matrix((np.ones(len(liked_items), dtype=np.float32), (np.zeros(len(liked_items)), liked_items)), shape=(1, len(items)))
        shares = taste(liked, genre_matrix(items)).toarray().ravel()
        start, stop = features.groups["taste"]
        row[start:stop] = shares * groups.get("taste", 0.0)
    for group, value in (demographics or {}).items():
        labels = age_bucket(value) if group == "age" else [str(value)]
        for label in labels:
            index = column.get(f"{group}:{label}")
            if index is not None:
                row[index] = groups.get(group, 0.0)
    return l1_normalise(sp.csr_matrix(row))
