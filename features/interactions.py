"""Canonical ratings -> sparse user x item matrices. Pure functions.

Matrices are always shaped (n_users, n_items) of the whole snapshot, indexed by `user_idx` and
`item_idx`, so that the train and test matrices of any split line up row for row and column for
column. They are float32 CSR with sorted indices and no stored zeros, which is what implicit
models (and scipy's fast paths) expect.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

DAY = pd.Timedelta(days=1)


def positives(ratings: pd.DataFrame, *, threshold: float = 4.0) -> pd.DataFrame:
    """The ratings at or above `threshold`: what counts as "the user liked it" for implicit models."""
    return ratings.loc[ratings["rating"] >= threshold].reset_index(drop=True)


def _csr(ratings: pd.DataFrame, values: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    users = ratings["user_idx"].to_numpy(np.int64)
    items = ratings["item_idx"].to_numpy(np.int64)
    if len(users) and (users.min() < 0 or users.max() >= n_users or items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"user_idx/item_idx out of range for a ({n_users}, {n_items}) matrix")
    matrix = sp.coo_matrix((values.astype(np.float32), (users, items)), shape=(n_users, n_items)).tocsr()
    # tocsr() sums repeated (user, item) pairs; canonical ratings have none, and a sum of two
    # ratings would be meaningless, so a repeat means the input is not canonical.
    if matrix.nnz != len(users):
        raise ValueError(f"{len(users) - matrix.nnz} repeated (user_idx, item_idx) pairs; expected one rating per pair")
    matrix.sort_indices()
    matrix.eliminate_zeros()  # recency weights of very old ratings can underflow to 0 in float32
    return matrix


def interaction_matrix(
    ratings: pd.DataFrame,
    n_users: int,
    n_items: int,
    *,
    threshold: float = 4.0,
    rating_weight: bool = False,
    rating_max: float = 5.0,
    recency_half_life_days: float | None = None,
    reference_time: pd.Timestamp | None = None,
) -> sp.csr_matrix:
    """Implicit feedback: one entry per positive rating (rating >= threshold), 1.0 unless weighted.

    rating_weight: the weight is rating / rating_max (the top of the rating scale), so a 5-star
        positive counts more than a 4-star one.
    recency_half_life_days: the weight is multiplied by 0.5 ** (age_days / half_life), age taken
        from `reference_time` (default: the latest timestamp in `ratings`, all of them, not only
        positives). A rating after the reference time is refused rather than weighted above 1,
        since it usually means test data leaked into a training matrix.
    """
    liked = positives(ratings, threshold=threshold)
    weights = np.ones(len(liked))
    if rating_weight:
        weights = liked["rating"].to_numpy(np.float64) / rating_max
    if recency_half_life_days is not None:
        if recency_half_life_days <= 0:
            raise ValueError(f"recency_half_life_days must be positive, got {recency_half_life_days}")
        reference = ratings["timestamp"].max() if reference_time is None else pd.Timestamp(reference_time)
        age_days = ((reference - liked["timestamp"]) / DAY).to_numpy(np.float64)
        if len(age_days) and age_days.min() < 0:
            raise ValueError(f"ratings after reference_time {reference}; recency weights need ages >= 0")
        weights = weights * 0.5 ** (age_days / recency_half_life_days)
    return _csr(liked, weights, n_users, n_items)


def rating_matrix(ratings: pd.DataFrame, n_users: int, n_items: int) -> sp.csr_matrix:
    """Explicit ratings as a (n_users, n_items) matrix, for rating prediction (MAE / RMSE)."""
    return _csr(ratings, ratings["rating"].to_numpy(np.float32), n_users, n_items)


def recency_ranked(
    ratings: pd.DataFrame, n_users: int, n_items: int, *, threshold: float = 4.0, half_life: float | None = None
) -> sp.csr_matrix:
    """Each user's positives weighted by how recent they are among the user's own positives:
    0.5 ** (rank / half_life), rank 0 for the latest (ties in time: lower item_idx first);
    all 1.0 when `half_life` is None. What the item-item models of a blend read at scoring time:
    under a per-user temporal protocol a user's latest likes say most about the next ones."""
    liked = positives(ratings, threshold=threshold)
    weights = np.ones(len(liked))
    if half_life is not None:
        if half_life <= 0:
            raise ValueError(f"half_life must be positive, got {half_life}")
        order = liked.sort_values(["user_idx", "timestamp", "item_idx"], ascending=[True, False, True], kind="stable")
        rank = order.groupby("user_idx").cumcount().reindex(liked.index).to_numpy(np.float64)
        weights = 0.5 ** (rank / half_life)
    return _csr(liked, weights, n_users, n_items)
