"""Top-k selection of items from score matrices, with already-seen items excluded.

Every model ranks the full catalogue and must never recommend an item the user interacted with in
training, so exclusion lives here rather than in each model. Selection is deterministic: equal
scores are ordered by lower item index, including at the k-th boundary, so two runs (and two
machines) produce identical recommendation lists. Items scoring -inf (excluded ones included) are
never returned; rows with fewer than k eligible items are padded with item -1 and score -inf.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

PAD_ITEM = -1


def top_k(
    scores: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    user_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k best items per row of `scores`, best first.

    `scores` is (n_batch_users, n_items). `exclude` is a users x items matrix whose stored
    entries are items to leave out (the training interactions); row i of `scores` is checked
    against row `user_rows[i]` of `exclude` (default: row i). NaN scores count as ineligible.
    Returns (items int32 (n, k), scores float32 (n, k)).
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (users x items), got shape {scores.shape}")
    # A private float copy: masking must not write into the caller's array.
    work = np.array(scores, dtype=np.result_type(scores.dtype, np.float32), copy=True)
    return _select_top_k(work, k, exclude, user_rows)


def batched_top_k(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None,
    users: np.ndarray | None,
    *,
    user_bias: np.ndarray | None = None,
    item_bias: np.ndarray | None = None,
    batch_size: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items for `users` (default: all) of a factor model, in batches of users.

    Scores are `user_factors[u] @ item_factors.T + user_bias[u] + item_bias`, one matrix
    product per batch so that memory stays at batch_size x n_items. `exclude` rows are indexed
    by user index (the same indices as `users`). Returns (items int32, scores float32), one row
    per entry of `users`.
    """
    user_factors = np.asarray(user_factors)
    item_factors = np.asarray(item_factors)
    if user_factors.ndim != 2 or item_factors.ndim != 2 or user_factors.shape[1] != item_factors.shape[1]:
        raise ValueError(
            f"factor shapes do not match: users {user_factors.shape}, items {item_factors.shape}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    users = np.arange(user_factors.shape[0]) if users is None else np.asarray(users, dtype=np.int64)
    n_items = item_factors.shape[0]
    if item_bias is not None and np.shape(item_bias) != (n_items,):
        raise ValueError(f"item_bias must have shape ({n_items},), got {np.shape(item_bias)}")

    items_out = np.empty((len(users), k), dtype=np.int32)
    scores_out = np.empty((len(users), k), dtype=np.float32)
    item_factors_t = item_factors.T
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        # The product is a fresh array, so the selection can mask it in place without a copy.
        batch_scores = user_factors[batch] @ item_factors_t
        if batch_scores.dtype.kind != "f":
            batch_scores = batch_scores.astype(np.float64)
        if user_bias is not None:
            batch_scores += np.asarray(user_bias)[batch][:, None]
        if item_bias is not None:
            batch_scores += np.asarray(item_bias)[None, :]
        chunk = slice(start, start + len(batch))
        items_out[chunk], scores_out[chunk] = _select_top_k(batch_scores, k, exclude, batch)
    return items_out, scores_out


def _select_top_k(
    work: np.ndarray, k: int, exclude: sp.csr_matrix | None, user_rows: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """top_k on a float array the caller owns; `work` is overwritten by the masking."""
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    n_rows, n_items = work.shape
    _mask_excluded(work, exclude, user_rows)
    nan = np.isnan(work)
    if nan.any():
        work[nan] = -np.inf

    kk = min(k, n_items)
    items = np.full((n_rows, k), PAD_ITEM, dtype=np.int32)
    values = np.full((n_rows, k), -np.inf, dtype=np.float32)
    if n_rows == 0 or kk == 0:
        return items, values

    if kk < n_items:
        # Partitioning for the largest kk directly avoids negating the whole score matrix.
        candidates = np.argpartition(work, n_items - kk, axis=1)[:, n_items - kk :]
        candidates = _lowest_index_at_boundary(work, candidates, kk)
    else:
        candidates = np.broadcast_to(np.arange(n_items), (n_rows, n_items))
    candidate_scores = np.take_along_axis(work, candidates, axis=1)
    # lexsort sorts by the last key first: score descending, then item index ascending.
    order = np.lexsort((candidates, -candidate_scores), axis=1)
    chosen = np.take_along_axis(candidates, order, axis=1)
    chosen_scores = np.take_along_axis(candidate_scores, order, axis=1)

    eligible = chosen_scores > -np.inf
    items[:, :kk] = np.where(eligible, chosen, PAD_ITEM)
    values[:, :kk] = chosen_scores
    return items, values


def _mask_excluded(work: np.ndarray, exclude: sp.csr_matrix | None, user_rows: np.ndarray | None) -> None:
    """Set the excluded (row, item) cells of `work` to -inf."""
    if exclude is None:
        return
    n_rows, n_items = work.shape
    exclude = sp.csr_matrix(exclude)
    if exclude.shape[1] != n_items:
        raise ValueError(f"exclude has {exclude.shape[1]} items, scores have {n_items}")
    rows = np.arange(n_rows) if user_rows is None else np.asarray(user_rows, dtype=np.int64)
    if rows.shape != (n_rows,):
        raise ValueError(f"user_rows must have one entry per score row ({n_rows}), got shape {rows.shape}")
    selected = exclude[rows]
    counts = np.diff(selected.indptr)
    work[np.repeat(np.arange(n_rows), counts), selected.indices] = -np.inf


def _lowest_index_at_boundary(work: np.ndarray, candidates: np.ndarray, kk: int) -> np.ndarray:
    """Re-pick the candidates of rows where argpartition chose arbitrarily among boundary ties.

    argpartition keeps every item strictly above the k-th score but picks an unspecified subset
    of those equal to it; the tie-break rule needs the lowest item indices among them.
    """
    threshold = np.take_along_axis(work, candidates, axis=1).min(axis=1)
    at_least = (work >= threshold[:, None]).sum(axis=1)
    tied_rows = np.flatnonzero(at_least > kk)
    if tied_rows.size == 0:
        return candidates
    candidates = candidates.copy()
    for row in tied_rows:
        # Factor-model scores rarely tie at the boundary; heavily tied scores (popularity
        # counts) cost one extra pass over the row each, still linear in the catalogue.
        scores = work[row]
        above = np.flatnonzero(scores > threshold[row])
        equal = np.flatnonzero(scores == threshold[row])[: kk - above.size]
        candidates[row] = np.concatenate([above, equal])
    return candidates
