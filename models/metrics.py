"""Offline evaluation: ranking metrics over the full catalogue, AUC, rating errors, segments.

Recommendations arrive already computed over the full catalogue with each user's training items
excluded (see `inference.model.top_k`); they are (n_users, >=k) item indices padded with -1, row i belonging
to user `users[i]`. Held-out positives are the stored non-zero entries of a users x items `test`
matrix. Users without held-out positives carry no signal and are left out of every mean (and
counted); a user whose list is all -1 stays in and scores 0 on every per-user metric, so a model
that fails to recommend is penalised rather than silently ignored.

Definitions (per user, then averaged over evaluated users; rel_j = 1 if the item at rank j is a
held-out positive, P = number of held-out positives):
- precision@k = hits / k (padding counts as a miss);
- recall@k = hits / P, the standard definition (not hits / min(P, k)), so it cannot reach 1
  when P > k;
- ndcg@k = sum_j rel_j / log2(j + 1) over the ideal DCG of min(P, k) hits at the top;
- map@k = sum_j rel_j * precision@j / min(P, k);
- mrr = 1 / rank of the first hit within k, 0 if none; hit_rate@k = share of users with a hit;
- coverage@k = distinct recommended items over all evaluated users / n_items;
- novelty@k = mean self-information -log2(popularity share) of the recommended items, share =
  popularity / total popularity, with items never seen counted as seen once (finite novelty);
- diversity@k = mean over pairs in the list of 1 - cosine similarity of the items' genre
  vectors (an item without genres is dissimilar to everything); lists of fewer than 2 items
  score 0.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import scipy.sparse as sp

from inference.model import PAD_ITEM


def ranking_metrics(
    recommended: np.ndarray,
    test: sp.csr_matrix,
    *,
    k: int,
    train: sp.csr_matrix | None = None,
    item_popularity: np.ndarray | None = None,
    item_genres: sp.csr_matrix | None = None,
    n_items: int | None = None,
    users: np.ndarray | None = None,
) -> dict:
    """Top-k ranking metrics of `recommended` against `test` (see the module docstring).

    Keys: precision@k, recall@k, ndcg@k, map@k, mrr, hit_rate@k, coverage@k (k substituted,
    e.g. "ndcg@10"), plus novelty@k when `item_popularity` is given and diversity@k when
    `item_genres` is given, and the counts n_users_evaluated, users_without_test_positives.
    Means over zero evaluated users are NaN. Raises ValueError if a recommended item is in the
    user's `train` row (leakage) or a list repeats an item.
    """
    test = sp.csr_matrix(test)
    n_items = test.shape[1] if n_items is None else n_items
    rec, users = _validated_lists(recommended, k, users, n_items)
    if train is not None:
        _check_no_leakage(rec, users, sp.csr_matrix(train))

    n_positives = _row_positives(test, users)
    has_positives = n_positives > 0
    rec, users, n_positives = rec[has_positives], users[has_positives], n_positives[has_positives]
    n_eval = len(users)

    rel = _membership(test, users, rec).astype(np.float64)
    hits = rel.sum(axis=1)
    ideal_hits = np.minimum(n_positives, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal_dcg = np.cumsum(discounts)[ideal_hits - 1]  # every evaluated user has P >= 1
    precision_at_rank = np.cumsum(rel, axis=1) / np.arange(1, k + 1)
    has_hit = hits > 0
    first_hit = rel.argmax(axis=1)

    metrics = {
        f"precision@{k}": _mean(hits / k),
        f"recall@{k}": _mean(hits / n_positives),
        f"ndcg@{k}": _mean(rel @ discounts / ideal_dcg),
        f"map@{k}": _mean((rel * precision_at_rank).sum(axis=1) / ideal_hits),
        "mrr": _mean(np.where(has_hit, 1.0 / (first_hit + 1), 0.0)),
        f"hit_rate@{k}": _mean(has_hit.astype(np.float64)),
        f"coverage@{k}": float(np.unique(rec[rec != PAD_ITEM]).size / n_items) if n_eval else float("nan"),
    }
    if item_popularity is not None:
        metrics[f"novelty@{k}"] = _mean(_novelty(rec, np.asarray(item_popularity, dtype=np.float64)))
    if item_genres is not None:
        metrics[f"diversity@{k}"] = _mean(intra_list_diversity(rec, sp.csr_matrix(item_genres)))
    metrics["n_users_evaluated"] = int(n_eval)
    metrics["users_without_test_positives"] = int((~has_positives).sum())
    return metrics


def auc(
    scores: np.ndarray,
    test: sp.csr_matrix,
    train: sp.csr_matrix | None = None,
    users: np.ndarray | None = None,
    items: np.ndarray | None = None,
) -> float:
    """Mean per-user ROC AUC of held-out positives against the other candidate items.

    `scores` is (n_users, n_items) over the full catalogue, row i for user `users[i]` (default
    arange). Candidates are all items, or only `items` (cold-item AUC), minus the user's `train`
    items; negatives are the candidates that are not held-out positives. Tied scores count 0.5
    (midranks). Users with no positive or no negative candidate are skipped; NaN if none remain.
    """
    scores = np.asarray(scores)
    test = sp.csr_matrix(test)
    if scores.ndim != 2 or scores.shape[1] != test.shape[1]:
        raise ValueError(f"scores must be (n_users, {test.shape[1]}), got {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    users = _user_indices(users, scores.shape[0])
    columns = np.arange(test.shape[1]) if items is None else np.asarray(items, dtype=np.int64)
    candidate = np.ones((len(users), len(columns)), dtype=bool)
    if train is not None:
        candidate &= ~_dense_rows(sp.csr_matrix(train), users, columns)
    positive = _dense_rows(test, users, columns) & candidate

    per_user = []
    for row in range(len(users)):
        row_scores = scores[row, columns]
        cand, pos = candidate[row], positive[row]
        n_pos, n_cand = int(pos.sum()), int(cand.sum())
        if n_pos == 0 or n_pos == n_cand:
            continue
        ordered = np.sort(row_scores[cand])
        pos_scores = row_scores[pos]
        below = np.searchsorted(ordered, pos_scores, side="left")
        not_above = np.searchsorted(ordered, pos_scores, side="right")
        midranks = (below + 1 + not_above) / 2.0  # 1-based average rank among candidates
        u_statistic = midranks.sum() - n_pos * (n_pos + 1) / 2.0
        per_user.append(u_statistic / (n_pos * (n_cand - n_pos)))
    return float(np.mean(per_user)) if per_user else float("nan")


def rating_errors(predicted: np.ndarray, actual: np.ndarray) -> dict:
    """{"mae", "mse", "rmse", "n"} of `predicted` against `actual` (aligned 1-D arrays), in float64."""
    predicted = np.asarray(predicted, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if predicted.shape != actual.shape:
        raise ValueError(f"predicted {predicted.shape} and actual {actual.shape} differ in shape")
    if predicted.size == 0:
        raise ValueError("no ratings to compare")
    errors = predicted - actual
    mse = float(np.mean(errors**2))
    return {"mae": float(np.mean(np.abs(errors))), "mse": mse, "rmse": float(np.sqrt(mse)), "n": int(errors.size)}


def segment_metrics(
    recommended: np.ndarray,
    test: sp.csr_matrix,
    *,
    k: int,
    segments: dict[str, np.ndarray],
    **kwargs,
) -> pd.DataFrame:
    """`ranking_metrics` per user segment, one row per segment (index "segment").

    `segments` maps a name to user indices; `kwargs` are passed on to `ranking_metrics`
    (including `users`, the user of each row of `recommended`). Segment users without a row
    in `recommended` are not evaluated.
    """
    users = _user_indices(kwargs.pop("users", None), np.asarray(recommended).shape[0])
    rows = []
    for name, members in segments.items():
        in_segment = np.isin(users, np.asarray(members))
        metrics = ranking_metrics(recommended[in_segment], test, k=k, users=users[in_segment], **kwargs)
        rows.append({"segment": name, **metrics})
    return pd.DataFrame(rows).set_index("segment")


def activity_segments(
    train: sp.csr_matrix,
    users: np.ndarray,
    edges: tuple[float, ...] = (0, 5, 20, 100, np.inf),
) -> dict[str, np.ndarray]:
    """Split `users` by their number of training interactions into [edges[i], edges[i+1]).

    Names read like "0-4", "5-19", "20-99", "100+"; every bin is present, possibly empty, so
    segment tables have the same rows across models and runs.
    """
    edges = tuple(edges)
    if len(edges) < 2 or any(lo >= hi for lo, hi in itertools.pairwise(edges)):
        raise ValueError(f"edges must be at least two increasing values, got {edges}")
    users = np.asarray(users, dtype=np.int64)
    counts = _row_positives(sp.csr_matrix(train), users)
    segments = {}
    for lo, hi in itertools.pairwise(edges):
        name = f"{int(lo)}+" if np.isinf(hi) else f"{int(lo)}-{int(np.ceil(hi)) - 1}"
        segments[name] = users[(counts >= lo) & (counts < hi)]
    return segments


def _validated_lists(
    recommended: np.ndarray, k: int, users: np.ndarray | None, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first k columns of `recommended` and the user of each row, after sanity checks."""
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    recommended = np.asarray(recommended)
    if recommended.ndim != 2 or recommended.shape[1] < k:
        raise ValueError(f"recommended must be (n_users, >= {k}), got shape {recommended.shape}")
    rec = recommended[:, :k].astype(np.int64)
    if rec.size and (rec.min() < PAD_ITEM or rec.max() >= n_items):
        raise ValueError(f"recommended items must be in [0, {n_items}) or {PAD_ITEM}")
    # A repeated item would be counted as several hits.
    ordered = np.sort(rec, axis=1)
    if np.any((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] != PAD_ITEM)):
        raise ValueError("a recommendation list repeats an item")
    return rec, _user_indices(users, rec.shape[0])


def _user_indices(users: np.ndarray | None, n_rows: int) -> np.ndarray:
    users = np.arange(n_rows) if users is None else np.asarray(users, dtype=np.int64)
    if users.shape != (n_rows,):
        raise ValueError(f"users must have one entry per row ({n_rows}), got shape {users.shape}")
    return users


def _check_no_leakage(rec: np.ndarray, users: np.ndarray, train: sp.csr_matrix) -> None:
    leaked = _membership(train, users, rec)
    if leaked.any():
        row, col = np.argwhere(leaked)[0]
        raise ValueError(
            f"{int(leaked.sum())} recommended items are in the users' training data, "
            f"e.g. user {users[row]} item {rec[row, col]}"
        )


def _row_positives(matrix: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
    """Number of distinct non-zero entries in each of the given rows."""
    return np.diff(_nonzero_rows(matrix, users).indptr)


def _nonzero_rows(matrix: sp.csr_matrix, users: np.ndarray) -> sp.csr_matrix:
    """The given rows with duplicates summed, explicit zeros dropped and indices sorted."""
    rows = matrix[users]  # fancy indexing copies, so the in-place clean-up is safe
    rows.sum_duplicates()
    rows.eliminate_zeros()
    return rows


def _dense_rows(matrix: sp.csr_matrix, users: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Boolean dense block: non-zero entries of `matrix` at rows `users`, columns `columns`."""
    return _nonzero_rows(matrix, users)[:, columns].toarray() != 0


def _membership(matrix: sp.csr_matrix, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Boolean (n, m): is items[i, j] a non-zero entry of row users[i] of `matrix`? -1 is never.

    Looks up (row, item) keys in the sorted keys of the non-zero entries, one searchsorted for
    the whole array instead of one sparse lookup per cell.
    """
    rows = _nonzero_rows(matrix, users)  # sorted indices, so the keys below are ascending
    n_cols = np.int64(matrix.shape[1])
    keys = np.repeat(np.arange(len(users), dtype=np.int64), np.diff(rows.indptr)) * n_cols + rows.indices
    queries = np.arange(len(users), dtype=np.int64)[:, None] * n_cols + items
    if len(keys) == 0:
        return np.zeros(items.shape, dtype=bool)
    position = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return (keys[position] == queries) & (items != PAD_ITEM)


def _novelty(rec: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Mean self-information of each list's items; 0 for an empty list."""
    share = np.maximum(popularity, 1.0) / max(popularity.sum(), 1.0)
    valid = rec != PAD_ITEM
    information = np.where(valid, -np.log2(share[np.where(valid, rec, 0)]), 0.0)
    return information.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)


def intra_list_diversity(rec: np.ndarray, genres: sp.csr_matrix) -> np.ndarray:
    """Mean pairwise cosine distance of genre vectors within each list; 0 below two items.

    The sum of pairwise similarities is (|sum of unit vectors|^2 - sum of |unit vector|^2) / 2,
    which avoids building k x k similarity matrices.
    """
    dense = np.asarray(genres.todense(), dtype=np.float64)
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    unit = np.divide(dense, norms, out=np.zeros_like(dense), where=norms > 0)
    valid = rec != PAD_ITEM
    vectors = unit[np.where(valid, rec, 0)] * valid[:, :, None]
    summed = vectors.sum(axis=1)
    pair_similarity = ((summed**2).sum(axis=1) - (vectors**2).sum(axis=(1, 2))) / 2.0
    n_valid = valid.sum(axis=1)
    n_pairs = n_valid * (n_valid - 1) / 2.0
    return np.where(n_pairs > 0, 1.0 - pair_similarity / np.maximum(n_pairs, 1), 0.0)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")
