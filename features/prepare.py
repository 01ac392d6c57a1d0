"""A split turned into model inputs: interaction matrices and feature matrices, everything fitted
on the split's training part only (vocabularies, IDF, taste). Pure: frames in, matrices out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.interactions import interaction_matrix, rating_matrix
from features.items import FeatureMatrix, item_features, train_tags
from features.splits import Split
from features.users import genre_matrix, user_features

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
    weights = item_groups or {group: 1.0 for group in METADATA_GROUPS}
    metadata_groups = {group: weight for group, weight in weights.items() if group in METADATA_GROUPS}
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
