"""The served model: everything the registered MLflow model runs, in one self-contained file.

This file imports numpy, pandas and scipy only (pyarrow through pandas' Parquet reader, mlflow
only inside `pyfunc_model`) and nothing of the project. `movierec.tracking.served_model` logs it
verbatim, plus the one line `mlflow.models.set_model(pyfunc_model())`, as the model's code
(MLflow models-from-code): loading the registered model needs mlflow and its dependencies and
nothing else, executes nothing but this file, and unpickles nothing.

It is also the one home of scoring in the project. Every ranking goes through `top_k`: offline
evaluation of every model family, the promotion gate, the batch export, the API, `mlflow models
serve`. Every factor model scores with `factor_scores`, and a new user's feature row is
`new_user_row`, the encoding `features.users` trains the hybrid with.

A `ServingBundle` is a fitted model reduced to arrays: a factor model's user and item
representations (biases included; they also define similar movies and "because you liked"),
optional item-item weight matrices and the blend recipe that combines them, id maps, each known
user's rated movies, the popularity fallback, the movies' display data and, for the hybrid, the
user-feature embeddings that place a new user. Its scoring
API, index level (the training snapshot's user_idx / item_idx, like any `models.base.Recommender`):
`scores`, `recommend` (the API scores its micro-batches of known users with it), `popular`,
`recommend_new_user_items`, `similar_items`, `because`; id level (ORIGINAL user / movie ids):
`recommend_users`, `recommend_new_user`, `similar_movies`, `predict` (the pyfunc's requests),
`predict_ratings` (the rating predictor, when the bundle has one).

Selection is deterministic: equal scores are ordered by lower item index, including at the k-th
boundary; -inf (excluded items) and NaN are never returned; lists with fewer than k eligible
items are padded with item -1 (movie id -1) and score -inf, and `predict` leaves padding out.

Scores. A bundle scores with a recipe, `blend`: component name -> weight. Components are
"factors" (`user . item + user_bias + item_bias`, the factor model's representations),
"popularity" (the normalised popularity below) and each item-item model in `item_item` (EASE,
item kNN: a user's row of positives times an items x items weight matrix). A recipe of one
component scores with that component's raw scores (for a LightFM model, LightFM's own scores,
float32, unbounded); a recipe of several sums each component's per-user z-scores (`standardise`:
minus the row's mean over the catalogue, over its standard deviation, compressed above where a
dense score's best items lie) times its weight, so no component's scale dominates the others.
Popularity-fallback scores are the normalised popularity: an item's number of training positives
over that of the most popular item, in [0, 1]. Model and fallback scales are not comparable;
`source` says which one a row uses.

Movies nobody has rated (in the ratings the bundle learned) are unknown to the collaborative
components; when the bundle carries the content model (`ContentScorer`), it ranks them instead
and `ServingBundle.place_unrated` puts them on the recipe's scale, for known and new users alike.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

PAD_ITEM = -1
PAD_MOVIE = -1
ITEM_COLUMNS = ("movie_id", "title", "year", "genres")
OUTPUT_COLUMNS = ("request", "user_id", "movie_id", "rank", "score", "source")
MODEL, POPULARITY = "model", "popularity"
NEW_USER_POLICIES = ("model", "popularity", "segments")
# Components of a scoring recipe besides the item-item models (see the module docstring).
FACTORS = "factors"
# Users scored per matrix product: memory stays at BATCH_SIZE x n_items floats.
BATCH_SIZE = 2048
# Rated movies against which unrated ones are placed on a recipe's scale (`place_unrated`).
PLACEMENT_REFERENCE_ITEMS = 2048

# ---------------------------------------------------------------------- top-k selection


def top_k(
    scores: np.ndarray,
    k: int,
    exclude: sp.spmatrix | None = None,
    user_rows: np.ndarray | None = None,
    *,
    in_place: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The k best items per row of `scores` (n_rows x n_items), best first.

    `exclude` is a users x items sparse matrix whose stored entries are items to leave out (a
    user's training or rated movies); row i of `scores` is checked against row `user_rows[i]`
    of `exclude` (default: row i). NaN scores count as ineligible. `in_place=True` lets the
    masking write into `scores` (a fresh product the caller owns); otherwise a private copy is
    masked. Returns (items int32 (n, k), scores float32 (n, k)).
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (users x items), got shape {scores.shape}")
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    if in_place and scores.dtype.kind == "f":
        work = scores
    else:
        work = np.array(scores, dtype=np.result_type(scores.dtype, np.float32), copy=True)
    _mask_excluded(work, exclude, user_rows)
    if work.shape[0] == 1:
        return _select_one(work[0], k)
    return _select_rows(work, k)


def _select_rows(work: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`_select_block` of a batch, its rows shared between the cores: numpy's partitions and
    reductions release the GIL, so the selection runs on every core as the product before it did."""
    return _in_row_parts(work.shape[0], _selection_pool(), lambda rows: _select_block(work[rows], k))


def _in_row_parts(
    n_rows: int, pool: ThreadPoolExecutor, rank: Callable[[slice], tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """`rank(rows)`, (items, values) of a slice of a batch's rows, for all `n_rows` rows: in the
    calling thread when the batch is small, else one contiguous part per core run in `pool`,
    stacked back in row order."""
    threads = min(_cores(), n_rows // SELECT_ROWS_PER_THREAD)
    if threads < 2:
        return rank(slice(0, n_rows))
    parts = [slice(rows[0], rows[-1] + 1) for rows in np.array_split(np.arange(n_rows), threads)]
    ranked = list(pool.map(rank, parts))
    return np.vstack([items for items, _ in ranked]), np.vstack([values for _, values in ranked])


# Fewer rows than this per thread are selected in the calling thread alone.
SELECT_ROWS_PER_THREAD = 128


@cache
def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@cache
def _selection_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_cores(), thread_name_prefix="top-k")


@cache
def _scoring_pool() -> ThreadPoolExecutor:
    """Threads that score and rank parts of a batch (`ServingBundle._ranked`); apart from the
    selection's pool, which each of them uses in turn."""
    return ThreadPoolExecutor(max_workers=_cores(), thread_name_prefix="scoring")


def _select_block(work: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every row's top k (score descending, then item index ascending); NaN is never chosen.

    What must cost little next to the product that made the scores is the work per score: one
    pass over each row, not a partition of it. Items are dealt into G strided groups (group j:
    items j, j + G, j + 2G, ...), one pass takes each group's maximum, and a partition of those
    G maxima finds the k best groups. Those hold the row's top k: the k-th best group maximum is
    no higher than the row's k-th best score (the maxima are k distinct items), so every item
    at or above that score sits in a group whose maximum is too. The exact order is found among
    those k groups' items (and the few items past the last whole group). A row where another
    group ties the k-th best maximum, or with NaN, is selected over the whole row instead
    (`_exact_rows`)."""
    n_rows, n_items = work.shape
    kk = min(k, n_items)
    items = np.full((n_rows, k), PAD_ITEM, dtype=np.int32)
    values = np.full((n_rows, k), -np.inf, dtype=np.float32)
    if n_rows == 0 or kk == 0:
        return items, values
    # About 2 sqrt(k n) groups balances the partition of the maxima against the candidates' count.
    per_group = n_items // max(2 * int(np.sqrt(kk * n_items)), 1)
    if per_group < 4:  # a small catalogue: the groups would save little
        items[:, :kk], values[:, :kk] = _exact_rows(work, kk)
        return items, values
    n_groups = n_items // per_group
    whole = n_groups * per_group
    maxima = work[:, :whole].reshape(n_rows, per_group, n_groups).max(axis=1)
    best = np.argpartition(maxima, n_groups - kk, axis=1)[:, n_groups - kk :]
    threshold = np.take_along_axis(maxima, best, axis=1).min(axis=1)
    exact = (np.count_nonzero(maxima >= threshold[:, None], axis=1) > kk) | np.isnan(maxima).any(axis=1)
    candidates = (best[:, :, None] + n_groups * np.arange(per_group)).reshape(n_rows, kk * per_group)
    if whole < n_items:
        tail = np.broadcast_to(np.arange(whole, n_items), (n_rows, n_items - whole))
        candidates = np.hstack([candidates, tail])
    chosen, chosen_scores = _exact_rows(np.take_along_axis(work, candidates, axis=1), kk, candidates)
    items[:, :kk], values[:, :kk] = chosen, chosen_scores
    if exact.any():
        rows = np.flatnonzero(exact)
        items[rows, :kk], values[rows, :kk] = _exact_rows(work[rows], kk)
    return items, values


def _exact_rows(work: np.ndarray, kk: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The top kk (<= n_items) of every row by a partition of the whole row, ties broken by the
    lower label (`labels`: each cell's item index, default its column): (items, scores), with
    -inf and NaN cells returned as item -1 and score -inf."""
    n_rows, n_items = work.shape
    if labels is None:
        labels = np.broadcast_to(np.arange(n_items), (n_rows, n_items))
    nan = np.isnan(work)
    if nan.any():
        work = np.where(nan, -np.inf, work)
    if kk < n_items:
        # Partitioning for the largest kk directly avoids negating the whole score matrix.
        candidates = np.argpartition(work, n_items - kk, axis=1)[:, n_items - kk :]
        candidates = _lowest_label_at_boundary(work, candidates, kk, labels)
    else:
        candidates = np.broadcast_to(np.arange(n_items), (n_rows, n_items))
    candidate_scores = np.take_along_axis(work, candidates, axis=1)
    candidate_labels = np.take_along_axis(labels, candidates, axis=1)
    # lexsort sorts by the last key first: score descending, then label ascending.
    order = np.lexsort((candidate_labels, -candidate_scores), axis=1)
    chosen = np.take_along_axis(candidate_labels, order, axis=1)
    chosen_scores = np.take_along_axis(candidate_scores, order, axis=1).astype(np.float32, copy=False)
    return np.where(chosen_scores > -np.inf, chosen, PAD_ITEM), chosen_scores


def _select_one(row: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`_select_rows` for a single row, cheaper: every item at or above the k-th score (boundary
    ties included, `_at_or_above_kth`), then the same order (score desc, index asc)."""
    n_items = row.shape[0]
    kk = min(k, n_items)
    items = np.full((1, k), PAD_ITEM, dtype=np.int32)
    values = np.full((1, k), -np.inf, dtype=np.float32)
    if kk == 0:
        return items, values
    nan = np.isnan(row)
    if nan.any():
        row = np.where(nan, -np.inf, row)
    candidates = _at_or_above_kth(row, kk) if kk < n_items else np.arange(n_items)
    chosen = candidates[np.lexsort((candidates, -row[candidates]))[:kk]]
    chosen_scores = row[chosen]
    items[0, :kk] = np.where(chosen_scores > -np.inf, chosen, PAD_ITEM)
    values[0, :kk] = chosen_scores
    return items, values


def _at_or_above_kth(row: np.ndarray, kk: int) -> np.ndarray:
    """Indices of every item whose score is at least the kk-th best of `row`.

    A strided sample's kk-th best score is no higher than the row's, so every item at or above
    it is a candidate; the exact threshold is then found among those few candidates rather than
    by partitioning the whole catalogue (about 3x faster for k = 10 over 10k items). Exact in
    every case: many ties or excluded items only make the candidate set larger."""
    n_items = row.shape[0]
    stride = n_items // max(32 * kk, 1024)
    candidates = np.arange(n_items)
    if stride > 1:
        sample = row[::stride]
        bound = np.partition(sample, len(sample) - kk)[len(sample) - kk]
        candidates = np.flatnonzero(row >= bound)
    scores = row[candidates]
    threshold = np.partition(scores, len(scores) - kk)[len(scores) - kk]
    return candidates[scores >= threshold]


def _mask_excluded(work: np.ndarray, exclude: sp.spmatrix | None, rows: np.ndarray | None) -> None:
    """Set the excluded (row, item) cells of `work` to -inf."""
    if exclude is None:
        return
    n_rows, n_items = work.shape
    if not (sp.issparse(exclude) and exclude.format == "csr"):
        exclude = sp.csr_matrix(exclude)
    if exclude.shape[1] != n_items:
        raise ValueError(f"exclude has {exclude.shape[1]} items, scores have {n_items}")
    rows = np.arange(n_rows) if rows is None else np.asarray(rows, dtype=np.int64)
    if rows.shape != (n_rows,):
        raise ValueError(f"user_rows must have one entry per score row ({n_rows}), got shape {rows.shape}")
    if n_rows == 1:  # the API's per-request case: one slice, no gathering
        row = int(rows[0])
        work[0, exclude.indices[exclude.indptr[row] : exclude.indptr[row + 1]]] = -np.inf
        return
    positions, items = stored_entries(exclude, rows)
    work[positions, items] = -np.inf


def stored_entries(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position in `rows`, column) of every stored entry of the given CSR rows, gathered from
    `indptr` directly: the same as `matrix[rows]` without building a new sparse matrix."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = matrix.indptr[rows]
    counts = matrix.indptr[rows + 1] - starts
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    positions = np.repeat(np.arange(len(rows)), counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return positions, matrix.indices[np.repeat(starts, counts) + offsets]


def _lowest_label_at_boundary(work: np.ndarray, candidates: np.ndarray, kk: int, labels: np.ndarray) -> np.ndarray:
    """Re-pick the candidates of rows where argpartition chose arbitrarily among boundary ties.

    argpartition keeps every cell strictly above the k-th score but picks an unspecified subset
    of those equal to it; the tie-break rule needs the lowest labels (item indices) among them.
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
        equal = np.flatnonzero(scores == threshold[row])
        equal = equal[np.argsort(labels[row, equal], kind="stable")[: kk - above.size]]
        candidates[row] = np.concatenate([above, equal])
    return candidates


# ---------------------------------------------------------------------- factor scores and cosine


def item_side(item_vectors: np.ndarray, item_bias: np.ndarray) -> np.ndarray:
    """(n_items, d + 2) float32 rows [item vector, 1, item bias]: the item side of `factor_scores`,
    built once per model (with the user side [user vector, user bias, 1], the biases ride on the
    product instead of two more passes over the scores)."""
    side = np.empty((len(item_vectors), item_vectors.shape[1] + 2), dtype=np.float32)
    side[:, :-2], side[:, -2], side[:, -1] = item_vectors, 1.0, item_bias
    return side


def factor_scores(user_vectors: np.ndarray, user_bias: np.ndarray, items: np.ndarray, users: np.ndarray) -> np.ndarray:
    """(len(users), n_items) float32 `user . item + user_bias + item_bias`, one product with the
    item side `items` (`item_side`)."""
    users = np.asarray(users)
    side = np.empty((len(users), items.shape[1]), dtype=np.float32)
    side[:, :-2], side[:, -2], side[:, -1] = user_vectors[users], user_bias[users], 1.0
    return side @ items.T


def _spread(scores: np.ndarray) -> np.ndarray:
    """(n, 1) float64 standard deviation of each row (1 where a row is constant)."""
    spread = scores.std(axis=1, keepdims=True, dtype=np.float64)
    spread[spread == 0] = 1.0
    return spread


def standardise(scores: np.ndarray) -> np.ndarray:
    """Each row minus its mean, over its standard deviation (a constant row becomes zeros), what
    lies above b = sqrt(2 ln n_items) + 1 compressed to b + ln(1 + z - b), in float32: the
    per-user normalisation under which a blend's components are summed.

    sqrt(2 ln n) is about where the best of n normally spread scores lies (4.7 for 59k movies);
    with one standard deviation of margin, a dense component's top items stay below b, while a
    sparse or heavy-tailed one's are pulled toward it. Unbounded, item kNN (zero for 93% of movies
    at 5M ratings) gave its few scored movies z-scores of 20-32 against the factors' 4-5, so at
    weight 0.1 it still filled the top 10, how far depending on the sparsity of the sample the
    weights were chosen on. The compression is strictly increasing, so each component keeps its
    own order (a hard clip would tie its top movies: EASE alone fell from NDCG@10 0.215 to 0.102
    on the 1M validation split)."""
    scores = np.asarray(scores, dtype=np.float32)
    mean = scores.mean(axis=1, keepdims=True, dtype=np.float64)
    # Float32 passes with float64 sums only: float64 temporaries of the whole (users x items)
    # matrix cost 4x as much, and this runs on every blended request and exported user.
    centred = scores - mean.astype(np.float32)
    spread = np.sqrt(np.einsum("ij,ij->i", centred, centred, dtype=np.float64) / max(scores.shape[1], 1))
    spread[spread == 0] = 1.0
    centred /= spread.astype(np.float32)[:, None]
    bound = np.float32(np.sqrt(2.0 * np.log(max(scores.shape[1], 2))) + 1.0)
    flat = centred.reshape(-1)
    # Only the upper tail: the top of a ranking is what one component must not take over.
    tail = np.flatnonzero(flat > bound)  # few: the compression touches only them
    flat[tail] = bound + np.log1p(flat[tail] - bound)
    return centred


def blended(
    component_scores: Callable[[str], np.ndarray],
    weights: Mapping[str, float],
    normalise: Callable[[np.ndarray], np.ndarray] = standardise,
) -> np.ndarray:
    """A scoring recipe applied: `component_scores(name)` gives each component's (n, n_items)
    scores. One component: its raw scores. Several: the weighted sum of their `standardise`d
    scores, float32 (`normalise`: for a caller whose scores are standardised already)."""
    if len(weights) == 1:
        # Callers may write into the result (`top_k(..., in_place=True)`): a fresh product is
        # returned as it is, a view of the bundle's own arrays (popularity) as a copy.
        scores = np.asarray(component_scores(next(iter(weights))), dtype=np.float32)
        return scores if scores.flags.owndata else scores.copy()
    total = None
    for name, weight in weights.items():
        # A new array (never the caller's: `normalise` may return what it was given).
        part = np.multiply(normalise(component_scores(name)), np.float32(weight), dtype=np.float32)
        if total is None:
            total = part
        else:
            total += part
    return total


@dataclass(eq=False)
class ContentScorer:
    """The content-based model's scores (`models.baselines.ContentBased`, whose docstring says
    why), reduced to arrays; the one home of that formula, for the model and for the bundle that
    ranks movies nobody has rated with it.

    score(u, i) = (1 - prior_weight) * sum_g w_g cos(p_ug, f_ig) / sum_g w_g + prior_weight * prior(i)

    `item_rows` (items x features) holds each item's feature group blocks, each L2-normalised and
    times its group's weight w_g (`span_weights`, groups at column ranges `spans`); a user's
    profile p_u is the weighted mean of their liked items' rows (the weights of `liked_rows`)
    minus `mean_profile` (the average liked item), L2-normalised per group; `prior` is each
    item's popularity prior in [0, ~1]. A user who liked nothing gets the prior alone."""

    item_rows: sp.csr_matrix
    mean_profile: np.ndarray
    spans: list[tuple[int, int]]
    span_weights: np.ndarray
    prior: np.ndarray
    prior_weight: float

    def __post_init__(self) -> None:
        self.item_rows = sp.csr_matrix(self.item_rows, dtype=np.float32)
        self.mean_profile = np.asarray(self.mean_profile, dtype=np.float32)
        self.spans = [(int(start), int(stop)) for start, stop in self.spans]
        self.span_weights = np.asarray(self.span_weights, dtype=np.float32)
        self.prior = np.asarray(self.prior, dtype=np.float32)
        self.prior_weight = float(self.prior_weight)
        n_items, n_features = self.item_rows.shape
        if self.mean_profile.shape != (n_features,) or self.prior.shape != (n_items,):
            raise ValueError(
                f"content scorer: mean_profile {self.mean_profile.shape} / prior {self.prior.shape} do not "
                f"match item rows {self.item_rows.shape}"
            )
        if len(self.spans) != len(self.span_weights) or any(
            not 0 <= start <= stop <= n_features for start, stop in self.spans
        ):
            raise ValueError(f"content scorer: spans {self.spans} do not fit {n_features} feature columns")

    def profiles(self, liked_rows: sp.spmatrix) -> np.ndarray:
        """(n, n_features) float32: each row's centred, per-group unit taste profile (zeros for a
        row with no liked item)."""
        liked_rows = sp.csr_matrix(liked_rows, dtype=np.float32)
        weight = np.asarray(liked_rows.sum(axis=1), dtype=np.float64).ravel()
        has_profile = weight != 0
        weight[~has_profile] = 1.0
        profiles = np.asarray((liked_rows @ self.item_rows).toarray(), dtype=np.float32)
        profiles /= weight[:, None].astype(np.float32)
        profiles[has_profile] -= self.mean_profile
        for start, stop in self.spans:
            block = profiles[:, start:stop]
            norms = np.linalg.norm(block, axis=1, keepdims=True)
            norms[norms == 0] = 1.0
            block /= norms
        return profiles

    def scores(self, liked_rows: sp.spmatrix) -> np.ndarray:
        """(n, n_items) float32 scores of the users whose liked items are `liked_rows` (users x items)."""
        return self.scores_of_rows(liked_rows, self.item_rows, self.prior)

    def scores_of_rows(self, liked_rows: sp.spmatrix, rows: sp.csr_matrix, prior: np.ndarray) -> np.ndarray:
        """`scores` against some items only: their rows of `item_rows` and their prior (a caller's
        cached slice)."""
        profiles = self.profiles(liked_rows)
        # Item blocks carry their group's weight, profile blocks are unit: sum of w_g cos_g / sum of w_g.
        taste = np.asarray(rows @ profiles.T, dtype=np.float32).T / np.float32(self.span_weights.sum() or 1.0)
        scores = np.float32(1.0 - self.prior_weight) * taste + np.float32(self.prior_weight) * prior[None, :]
        return np.ascontiguousarray(scores, dtype=np.float32)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero): cosine becomes a dot product."""
    vectors = np.asarray(vectors)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.result_type(vectors.dtype, np.float32), copy=False)


def cosine_top_k(unit: np.ndarray, item: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of `unit` (unit vectors) most cosine-similar to row `item`, itself excluded."""
    similarity = (unit @ unit[item])[None, :]
    similarity[0, item] = -np.inf
    items, values = top_k(similarity, k, in_place=True)
    return items[0], values[0]


# ---------------------------------------------------------------------- feature encoding

# MovieLens 1M's age groups; ml-100k's exact ages are bucketed the same way.
AGE_EDGES = (18, 25, 35, 45, 50, 56)
AGE_LABELS = ("under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
DEMOGRAPHICS = ("age", "gender", "occupation")


def age_bucket(age: float | None) -> list[str]:
    if age is None or pd.isna(age):
        return []
    return [AGE_LABELS[int(np.searchsorted(AGE_EDGES, age, side="right"))]]


def split_values(values: Iterable[object], separator: str = "|") -> list[list[str]]:
    """Each "|"-joined string as its stripped, non-empty parts; anything else as no values."""
    return [
        [part.strip() for part in value.split(separator) if part.strip()] if isinstance(value, str) else []
        for value in values
    ]


def multi_hot(
    lists: list[list[str]], prefix: str, vocabulary: list[str] | None = None
) -> tuple[sp.csr_matrix, list[str]]:
    """Multi-hot encoding; the vocabulary is sorted for determinism (or given, when fitted)."""
    if vocabulary is None:
        vocabulary = sorted({value for values in lists for value in values})
    column = {value: index for index, value in enumerate(vocabulary)}
    rows, cols = [], []
    for row, values in enumerate(lists):
        for value in dict.fromkeys(values):
            if value in column:
                rows.append(row)
                cols.append(column[value])
    data = np.ones(len(rows), dtype=np.float32)
    matrix = sp.csr_matrix((data, (rows, cols)), shape=(len(lists), len(vocabulary)), dtype=np.float32)
    return matrix, [f"{prefix}:{value}" for value in vocabulary]


def l1_normalise(matrix: sp.spmatrix) -> sp.csr_matrix:
    """Rows scaled to sum of absolute values 1 (zero rows stay zero), float32, sorted indices."""
    sums = np.asarray(abs(matrix).sum(axis=1)).ravel()
    sums[sums == 0] = 1.0
    normalised = sp.diags((1.0 / sums).astype(np.float32)) @ matrix
    normalised = normalised.tocsr()
    normalised.sort_indices()
    normalised.eliminate_zeros()
    return normalised.astype(np.float32)


def taste(interactions: sp.spmatrix, genres: sp.spmatrix) -> sp.csr_matrix:
    """Rows: each user's genre shares among their positives (users x genres, rows sum to 1 or 0)."""
    binary = sp.csr_matrix(interactions, copy=True)
    binary.data[:] = 1.0
    counts = (binary @ genres).astype(np.float32).tocsr()
    return l1_normalise(counts)


def segment_key(demographics: Mapping[str, object], columns: Iterable[str]) -> str | None:
    """The demographic segment of a user, e.g. "age=25-34|gender=F" for columns (age, gender);
    None when a column is missing. Ages are bucketed like the user features."""
    parts = []
    for column in columns:
        value = demographics.get(column)
        if value is None or (np.isscalar(value) and pd.isna(value)):
            return None
        label = age_bucket(value) if column == "age" else [str(value)]
        if not label:
            return None
        parts.append(f"{column}={label[0]}")
    return "|".join(parts)


def new_user_row(
    names: list[str],
    spans: Mapping[str, tuple[int, int]],
    weights: Mapping[str, float],
    liked_genres: Iterable[object],
    demographics: Mapping[str, object] | None = None,
) -> sp.csr_matrix:
    """The 1 x len(names) user-feature row of a user the model never saw: no identity column;
    the taste block from the genres of the liked movies (one "|"-joined string per distinct
    liked movie), in the vocabulary the fitted block names (`taste:<genre>`), times the taste
    weight; each demographic value in the fitted vocabulary (`<group>:<label>`, ages bucketed)
    at its group's weight; then L1-normalised like every training row."""
    row = np.zeros(len(names), dtype=np.float32)
    liked_genres = list(liked_genres)
    if "taste" in spans and liked_genres:
        start, stop = spans["taste"]
        vocabulary = [name.split(":", 1)[1] for name in names[start:stop]]
        genres, _ = multi_hot(split_values(liked_genres), "taste", vocabulary)
        liked = sp.csr_matrix(np.ones((1, len(liked_genres)), dtype=np.float32))
        row[start:stop] = taste(liked, genres).toarray().ravel() * weights.get("taste", 0.0)
    for group, value in (demographics or {}).items():
        if group not in spans:  # a group the model was not trained with
            continue
        # Only the group's own columns are searched: the identity block holds every user.
        start, stop = spans[group]
        columns = names[start:stop]
        for label in age_bucket(value) if group == "age" else [str(value)]:
            if f"{group}:{label}" in columns:
                row[start + columns.index(f"{group}:{label}")] = weights.get(group, 0.0)
    return l1_normalise(sp.csr_matrix(row))


# ---------------------------------------------------------------------- the bundle


@dataclass(eq=False)
class ServingBundle:
    """A fitted factor model reduced to what serving needs (see the module docstring).

    Arrays are indexed by the training snapshot's user_idx / item_idx.
    """

    FORMAT = 5  # the bundle format this code writes and reads (see `save_bundle`)

    user_ids: np.ndarray  # int64 (n_users,): user_id of each user_idx
    item_ids: np.ndarray  # int64 (n_items,): movie_id of each item_idx
    user_bias: np.ndarray  # float32 (n_users,)
    user_vectors: np.ndarray  # float32 (n_users, d)
    item_bias: np.ndarray  # float32 (n_items,)
    item_vectors: np.ndarray  # float32 (n_items, d)
    # users x items, every rating the snapshot holds (training and held-out parts), valued by
    # the rating: what a user has rated is never recommended to them.
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
    # (min, max, step) of the dataset's rating scale, and the rating from which one counts as a
    # positive: what the API accepts as feedback and reads as "liked".
    rating_scale: tuple[float, float, float] | None = None
    positive_threshold: float = 4.0
    # The scoring recipe (component -> weight, see the module docstring; None: the factors alone)
    # and the item-item models it names, each n_items x n_items: scores = positives row @ matrix.
    blend: dict[str, float] | None = None
    item_item: dict[str, sp.csr_matrix] = field(default_factory=dict)
    # What the bundle is, for people: e.g. {"role": "serving", "candidate": "blend", "ratings": n}.
    about: dict = field(default_factory=dict)
    # users x items, each user's positives as the item-item models read them (1.0, or weighted by
    # recency); None: the positives (ratings >= the threshold) of `trained`, as 1.0.
    positives: sp.csr_matrix | None = None
    # The rating predictor (explicit ratings): mean + user bias + item bias + user . item, clipped
    # to `rating_scale`; trained on the same ratings as the rest (None: the bundle has none).
    rating_mean: float | None = None
    rating_user_bias: np.ndarray | None = None  # float32 (n_users,)
    rating_item_bias: np.ndarray | None = None  # float32 (n_items,)
    rating_user_factors: np.ndarray | None = None  # float32 (n_users, f)
    rating_item_factors: np.ndarray | None = None  # float32 (n_items, f)
    # New users known by demographics only (no liked movie): "model" (the factors place them),
    # "popularity" (the popularity list) or "segments" (the popularity among the training users of
    # their demographic segment, `segment_columns`; an unknown segment gets the popularity list).
    new_user_policy: str = "model"
    segment_columns: list[str] = field(default_factory=list)
    segment_keys: list[str] = field(default_factory=list)  # `segment_key` of each segment_counts row
    segment_counts: np.ndarray | None = None  # int64 (n_segments, n_items): positives per segment
    # The content-based model fitted on the same ratings: it ranks the movies `trained` holds no
    # rating of (`unrated`), which the collaborative components know nothing about (see
    # `place_unrated`). None: every component's own scores stand for them.
    content: ContentScorer | None = None
    # How much the content model decides for them, in [0, 1] (chosen on validation).
    unrated_content_weight: float = 1.0

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
        if self.rating_scale is not None:
            low, high, step = (float(value) for value in self.rating_scale)
            if not (low < high and step > 0):
                raise ValueError(
                    f"rating_scale must be (min, max, step) with min < max and step > 0, got {self.rating_scale}"
                )
            self.rating_scale = (low, high, step)
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
            raise ValueError(
                f"user vectors ({self.user_vectors.shape[1]}) and item vectors "
                f"({self.item_vectors.shape[1]}) differ in dimension"
            )
        if self.user_feature_embeddings is not None:
            self.user_feature_embeddings = np.asarray(self.user_feature_embeddings, dtype=np.float32)
            self.user_feature_biases = np.asarray(self.user_feature_biases, dtype=np.float32)
            n_features = len(self.user_feature_names)
            if self.user_feature_embeddings.shape != (n_features, self.item_vectors.shape[1]) or (
                self.user_feature_biases.shape != (n_features,)
            ):
                raise ValueError(
                    f"user feature embeddings {self.user_feature_embeddings.shape} / biases "
                    f"{self.user_feature_biases.shape} do not match {n_features} feature names"
                )
            if self.user_groups is None:
                raise ValueError("user feature embeddings need the group weights they were built with (user_groups)")
        self._users = pd.Index(self.user_ids)
        self._movies = pd.Index(self.item_ids)
        if not self._users.is_unique or not self._movies.is_unique:
            raise ValueError("user_ids and item_ids must be unique")
        if not np.array_equal(self.popularity, np.argsort(-self.popularity_counts, kind="stable")):
            raise ValueError("popularity must order item_idx by popularity_counts, ties by lower item_idx")
        top = self.popularity_counts.max() if n_items else 0
        # Normalised popularity, the fallback's score: positives over the most popular item's.
        self.popularity_score = (self.popularity_counts / top if top else np.zeros(n_items)).astype(np.float32)
        self.item_item = {name: sp.csr_matrix(matrix, dtype=np.float32) for name, matrix in self.item_item.items()}
        for name, matrix in self.item_item.items():
            if matrix.shape != (n_items, n_items):
                raise ValueError(
                    f"ServingBundle.item_item[{name!r}] has shape {matrix.shape}, expected {(n_items,) * 2}"
                )
        self.blend = {FACTORS: 1.0} if self.blend is None else {name: float(w) for name, w in self.blend.items()}
        known = {FACTORS, POPULARITY, *self.item_item}
        unknown = sorted(set(self.blend) - known)
        if unknown or not self.blend or min(self.blend.values()) <= 0:
            raise ValueError(f"blend must give positive weights to components among {sorted(known)}, got {self.blend}")
        if self.positives is None:
            positives = self.trained.copy()
            positives.data = (positives.data >= self.positive_threshold).astype(np.float32)
            positives.eliminate_zeros()
            self.positives = positives
        self.positives = sp.csr_matrix(self.positives, dtype=np.float32)
        if self.rating_mean is not None:
            self._check_rating_predictor(n_users, n_items)
        if self.new_user_policy not in NEW_USER_POLICIES:
            raise ValueError(f"new_user_policy must be one of {NEW_USER_POLICIES}, got {self.new_user_policy!r}")
        self.segment_counts = np.zeros((0, n_items), np.int64) if self.segment_counts is None else self.segment_counts
        self.segment_counts = np.asarray(self.segment_counts, dtype=np.int64)
        if self.segment_counts.shape != (len(self.segment_keys), n_items):
            raise ValueError(
                f"ServingBundle.segment_counts has shape {self.segment_counts.shape}, "
                f"expected {(len(self.segment_keys), n_items)}"
            )
        if self.new_user_policy == "segments" and not self.segment_columns:
            raise ValueError("the segments policy needs segment_columns")
        self._segments = {key: row for row, key in enumerate(self.segment_keys)}
        if self.positives.shape != (n_users, n_items):
            raise ValueError(f"ServingBundle.positives has shape {self.positives.shape}, expected {(n_users, n_items)}")
        self.unrated = np.flatnonzero(self.trained.getnnz(axis=0) == 0)
        self.unrated_content_weight = float(self.unrated_content_weight)
        if not 0.0 <= self.unrated_content_weight <= 1.0:
            raise ValueError(f"unrated_content_weight must be in [0, 1], got {self.unrated_content_weight}")
        if self.content is not None:
            if self.content.item_rows.shape[0] != n_items:
                raise ValueError(
                    f"ServingBundle.content scores {self.content.item_rows.shape[0]} items, expected {n_items}"
                )
            rated = np.setdiff1d(np.arange(n_items), self.unrated)
            # The rated items whose scores set the scale unrated ones are placed on: evenly spaced
            # by index, enough for a stable mean and deviation, few enough to stay cheap per request.
            take = np.unique(np.linspace(0, len(rated) - 1, min(len(rated), PLACEMENT_REFERENCE_ITEMS)).round())
            self._reference = rated[take.astype(np.int64)] if len(rated) else rated
            placed = np.concatenate([self.unrated, self._reference])
            self._placed_rows = self.content.item_rows[placed]
            self._placed_prior = self.content.prior[placed]

    def _check_rating_predictor(self, n_users: int, n_items: int) -> None:
        self.rating_mean = float(self.rating_mean)
        for name, rows in (
            ("rating_user_bias", n_users),
            ("rating_item_bias", n_items),
            ("rating_user_factors", n_users),
            ("rating_item_factors", n_items),
        ):
            value = getattr(self, name)
            if value is None or np.asarray(value).shape[0] != rows:
                raise ValueError(f"ServingBundle.{name} must have {rows} rows for the rating predictor")
            setattr(self, name, np.asarray(value, dtype=np.float32))
        if self.rating_user_factors.shape[1] != self.rating_item_factors.shape[1]:
            raise ValueError("the rating predictor's user and item factors differ in dimension")
        if self.rating_scale is None:
            raise ValueError("a rating predictor needs the rating scale to clip to")

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

    def movie_ids(self, items: np.ndarray) -> np.ndarray:
        """Original movie id of each item_idx; padding (-1) stays -1."""
        items = np.asarray(items, dtype=np.int64)
        return np.where(items == PAD_ITEM, PAD_MOVIE, self.item_ids[np.where(items == PAD_ITEM, 0, items)])

    @cached_property
    def item_side(self) -> np.ndarray:
        """The item vectors and biases as `factor_scores` multiplies them."""
        return item_side(self.item_vectors, self.item_bias)

    @cached_property
    def unit_item_vectors(self) -> np.ndarray:
        """Item vectors scaled to unit length (zero vectors stay zero): cosine is a dot product."""
        return unit_rows(self.item_vectors).astype(np.float32, copy=False)

    # ------------------------------------------------------------------ scoring, by index

    def scores(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) float32 scores of user_idx `users` by the bundle's recipe."""
        users = np.asarray(users, dtype=np.int64)
        scores = blended(lambda name: self.component_scores(name, users), self.blend)
        if not self.places_unrated:  # the liked rows' gather costs as much as a third of the product
            return scores
        return self.place_unrated(scores, self.positives[users])

    @property
    def places_unrated(self) -> bool:
        """Whether `place_unrated` changes anything: a content model, unrated movies, rated ones
        to place them against and a weight."""
        return bool(
            self.content is not None and len(self.unrated) and len(self._reference) and self.unrated_content_weight
        )

    def place_unrated(self, scores: np.ndarray, liked_rows: sp.spmatrix) -> np.ndarray:
        """`scores` (n, n_items, written in place) with the unrated movies' columns replaced by
        the content model's opinion of them (with weight `unrated_content_weight`), on the scale
        of the recipe's scores.

        For each user (their liked items' row in `liked_rows`), an unrated movie's content score
        becomes a z-score against the content scores of the reference (rated) movies, and the
        recipe's own score of it a z-score against the recipe's scores of the same movies. Its
        new score is the recipe's mean over the reference movies plus the weighted mean of the
        two z-scores (content weight w, recipe 1 - w) times the recipe's standard deviation over
        them: with w = 1, a movie the content model ranks as high as the recipe's top 1% of rated
        movies lands among them, and among unrated movies the order is the content model's;
        w = 0 leaves the recipe's scores as they are. Nothing changes without a content model
        or unrated movies."""
        if not self.places_unrated:
            return scores
        liked = sp.csr_matrix(liked_rows, dtype=np.float32, copy=True)
        liked.data[:] = 1.0  # the content model's profiles weigh every liked movie alike
        content = self.content.scores_of_rows(liked, self._placed_rows, self._placed_prior)
        unrated, reference = content[:, : len(self.unrated)], content[:, len(self.unrated) :]
        z = (unrated - reference.mean(axis=1, keepdims=True)) / _spread(reference)
        recipe = scores[:, self._reference]
        mean, spread = recipe.mean(axis=1, keepdims=True, dtype=np.float64), _spread(recipe)
        own = (scores[:, self.unrated] - mean) / spread
        weight = self.unrated_content_weight
        scores[:, self.unrated] = mean + ((1.0 - weight) * own + weight * z) * spread
        return scores

    def component_scores(self, name: str, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) raw scores of one component ("factors", "popularity" or an
        item-item model's name, whether or not the recipe uses it) for user_idx `users`."""
        users = np.asarray(users, dtype=np.int64)
        if name == FACTORS:
            return factor_scores(self.user_vectors, self.user_bias, self.item_side, users)
        if name == POPULARITY:
            return np.broadcast_to(self.popularity_score, (len(users), self.n_items))
        return np.asarray((self.positives[users] @ self.item_item[name]).toarray(), dtype=np.float32)

    def recommend(
        self,
        users: np.ndarray,
        k: int,
        exclude: sp.spmatrix | None = None,
        exclude_rows: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The model's top-k item_idx of user_idx `users`, one product per `BATCH_SIZE` users.

        Row `exclude_rows[i]` (default: `users[i]`) of `exclude` is left out of user i's list;
        no exclusion without `exclude`, as `models.base.Recommender.recommend`.
        Returns (items int32 (n, k), scores float32 (n, k)).
        """
        users = np.asarray(users, dtype=np.int64)
        rows = users if exclude_rows is None else np.asarray(exclude_rows, dtype=np.int64)
        items = np.full((len(users), k), PAD_ITEM, dtype=np.int32)
        values = np.full((len(users), k), -np.inf, dtype=np.float32)
        for start in range(0, len(users), BATCH_SIZE):
            chunk = slice(start, start + BATCH_SIZE)
            items[chunk], values[chunk] = self._ranked(users[chunk], k, exclude, rows[chunk])
        return items, values

    def _ranked(
        self, users: np.ndarray, k: int, exclude: sp.spmatrix | None, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`top_k` of `scores(users)`. A blend's z-scores are passes of numpy over the whole
        (users x items) matrix, one core each where a factor product uses every core: a batch
        large enough is split between the cores, each part scored and ranked in its own thread
        (1.6x the users per second for a 25M blend on 2 cores)."""

        def rank(part: slice) -> tuple[np.ndarray, np.ndarray]:
            return top_k(self.scores(users[part]), k, exclude, rows[part], in_place=True)

        if len(self.blend) < 2:
            return rank(slice(None))
        return _in_row_parts(len(users), _scoring_pool(), rank)

    def popular(
        self, n: int, k: int, exclude: sp.spmatrix | None = None, exclude_rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The popularity top-k for n lists, list i without row `exclude_rows[i]` of `exclude`;
        without exclusions every list is the same."""
        if exclude is None:
            items, values = top_k(self.popularity_score[None, :], k)
            return np.repeat(items, n, axis=0), np.repeat(values, n, axis=0)
        rows = np.asarray(exclude_rows, dtype=np.int64)
        items = np.full((n, k), PAD_ITEM, dtype=np.int32)
        values = np.full((n, k), -np.inf, dtype=np.float32)
        for start in range(0, n, BATCH_SIZE):
            chunk = slice(start, min(start + BATCH_SIZE, n))
            batch = np.broadcast_to(self.popularity_score, (chunk.stop - chunk.start, self.n_items))
            items[chunk], values[chunk] = top_k(batch, k, exclude, rows[chunk])
        return items, values

    def new_user_row(self, liked_items: np.ndarray, demographics: Mapping[str, object] | None = None) -> sp.csr_matrix:
        """The 1 x n_user_features row `new_user_row` builds for a new user who liked item_idx
        `liked_items` and gave `demographics` (other keys and missing values are ignored)."""
        if not self.has_user_features:
            raise ValueError("this model was trained without user features")
        liked = np.unique(np.asarray(liked_items, dtype=np.int64))
        return new_user_row(
            self.user_feature_names,
            self.user_feature_groups,
            self.user_groups,
            self.items["genres"].to_numpy()[liked],
            _clean_demographics(demographics),
        )

    def new_user_representation(
        self, liked_items: np.ndarray, demographics: Mapping[str, object] | None = None
    ) -> tuple[np.ndarray, float] | None:
        """(vector, bias) of a new user from known liked item_idx and demographics, or None when
        nothing usable is given. The rule of `recommend_new_user`."""
        liked_items = np.asarray(liked_items, dtype=np.int64)
        if self.has_user_features:
            row = self.new_user_row(liked_items, demographics)
            if row.nnz:
                vector = np.asarray(row @ self.user_feature_embeddings).ravel()
                return vector, float(np.asarray(row @ self.user_feature_biases).ravel()[0])
        if len(liked_items):
            return self.item_vectors[liked_items].mean(axis=0), 0.0
        return None

    def recommend_new_user_items(
        self, liked_items: np.ndarray, demographics: Mapping[str, object] | None, k: int
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """Top-k item_idx for a user the model never saw, who liked item_idx `liked_items`
        (never recommended back); the rule of `recommend_new_user`.
        Returns (items int32 (k,), scores float32 (k,), fallback)."""
        liked = np.unique(np.asarray(liked_items, dtype=np.int64))
        exclude = sp.csr_matrix(
            (np.ones(len(liked), np.float32), (np.zeros(len(liked), np.int64), liked)), shape=(1, self.n_items)
        )
        if not len(liked) and self.new_user_policy != "model":
            scores = self.segment_scores(demographics) if self.new_user_policy == "segments" else None
            if scores is None:
                items, values = self.popular(1, k, exclude, np.zeros(1, np.int64))
                return items[0], values[0], True
            items, values = top_k(scores[None, :], k, exclude, in_place=True)
            return items[0], values[0], False
        scores = self.new_user_scores(liked, demographics)
        if scores is None:
            items, values = self.popular(1, k, exclude, np.zeros(1, np.int64))
            return items[0], values[0], True
        items, values = top_k(scores[None, :], k, exclude, in_place=True)
        return items[0], values[0], False

    def segment_scores(self, demographics: Mapping[str, object] | None) -> np.ndarray | None:
        """(n_items,) popularity within the user's demographic segment: positives among its
        training users, ties broken by overall popularity (half a positive at most); None when
        the user's segment is unknown or incomplete."""
        key = segment_key(_clean_demographics(demographics), self.segment_columns)
        row = self._segments.get(key) if key is not None else None
        if row is None:
            return None
        return (self.segment_counts[row] + 0.5 * self.popularity_score).astype(np.float32)

    def new_user_scores(self, liked_items: np.ndarray, demographics: Mapping[str, object] | None) -> np.ndarray | None:
        """(n_items,) scores of a new user by the recipe's components that can score them: the
        factors when `new_user_representation` places the user, item-item models when some items
        are liked (popularity only beside one of those). When none of the recipe's model
        components can, the factors alone if they place the user; None when nothing does."""
        liked = np.unique(np.asarray(liked_items, dtype=np.int64))
        representation = self.new_user_representation(liked, demographics)
        row = sp.csr_matrix(
            (np.ones(len(liked), np.float32), (np.zeros(len(liked), np.int64), liked)), shape=(1, self.n_items)
        )

        def component_scores(name: str) -> np.ndarray:
            if name == FACTORS:
                vector, bias = representation
                return (self.item_vectors @ vector + self.item_bias + np.float32(bias)).astype(np.float32)[None, :]
            if name == POPULARITY:
                return self.popularity_score[None, :]
            return np.asarray((row @ self.item_item[name]).toarray(), dtype=np.float32)

        usable = {
            name: weight
            for name, weight in self.blend.items()
            if (name == FACTORS and representation is not None) or (name in self.item_item and len(liked))
        }
        if usable and POPULARITY in self.blend:
            usable[POPULARITY] = self.blend[POPULARITY]
        if not usable:
            if representation is None:
                return None
            usable = {FACTORS: 1.0}
        return self.place_unrated(blended(component_scores, usable), row)[0]

    def similar_items(self, item: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k item_idx whose item vectors are most cosine-similar to `item`'s, itself excluded."""
        return cosine_top_k(self.unit_item_vectors, item, k)

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

    def because_user(self, user: int, recommended: np.ndarray) -> np.ndarray:
        """`because` for a known user_idx: among the movies they rated highest."""
        start, end = self.seen.indptr[user], self.seen.indptr[user + 1]
        if end == start:
            return np.full(np.shape(recommended), -1, dtype=np.int64)
        ratings = self.seen.data[start:end]
        return self.because(self.seen.indices[start:end][ratings == ratings.max()], recommended)

    # ------------------------------------------------------------------ scoring, by original id

    def recommend_users(self, user_ids: Iterable[int], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k movies for each original user id, in one batched product per `BATCH_SIZE` users.

        Known users: the model's scores, every movie they rated (`seen`) excluded. Unknown users:
        the popularity list (normalised popularity as score) and `fallback` True.
        Returns (movie_ids int64 (n, k), scores float32 (n, k), fallback bool (n,)).
        """
        index = self.user_index(user_ids)
        known = index >= 0
        movie_ids = np.full((len(index), k), PAD_MOVIE, dtype=np.int64)
        scores = np.full((len(index), k), -np.inf, dtype=np.float32)
        if known.any():
            users = index[known]
            items, values = self.recommend(users, k, self.seen)
            movie_ids[known], scores[known] = self.movie_ids(items), values
        if (~known).any():
            items, values = self.popular(int((~known).sum()), k)
            movie_ids[~known], scores[~known] = self.movie_ids(items), values
        return movie_ids, scores, ~known

    def recommend_new_user(
        self, liked_movie_ids: Iterable[int] | None, demographics: Mapping[str, object] | None, k: int
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """Top-k movies for a user the model never saw. Liked movies are never recommended back;
        movie ids the bundle does not know are ignored.

        The user's place in the factor model (`new_user_representation`), in order:
        1. hybrid model (user features): build the user's feature row with `new_user_row`
           (taste from the liked movies' genres, demographic columns for values in the fitted
           vocabulary; no identity column) and use its representation,
           `row @ user_feature_embeddings` and `row @ user_feature_biases` (exactly LightFM's
           `get_user_representations(row)`);
        2. if there is no usable feature (pure MF, or an empty row) but some liked movies are
           known: fold the user in as the mean of those movies' item vectors, user bias 0.
        The scores are then the recipe's over the components that can score the user
        (`new_user_scores`: the factors if placed, item-item models if some movies are liked);
        with nothing usable, the popularity list, `fallback` True.
        Returns (movie_ids int64 (k,), scores float32 (k,), fallback).
        """
        liked = self.item_index(_int_array(liked_movie_ids))
        items, values, fallback = self.recommend_new_user_items(liked[liked >= 0], demographics, k)
        return self.movie_ids(items), values, fallback

    def similar_movies(self, movie_id: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k movies whose item vectors have the highest cosine similarity with `movie_id`'s,
        the movie itself excluded. Returns (movie_ids int64 (k,), cosines float32 (k,))."""
        index = int(self.item_index([movie_id])[0])
        if index < 0:
            raise KeyError(f"movie_id {movie_id} is not in the model's catalogue ({self.n_items} movies)")
        items, values = self.similar_items(index, k)
        return self.movie_ids(items), values

    # ------------------------------------------------------------------ predicted ratings

    @property
    def has_rating_predictor(self) -> bool:
        return self.rating_mean is not None

    def rating_predictions(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings of (user_idx, item_idx) pairs, -1 meaning unknown on either side:
        mean + user bias + item bias + user . item for known pairs; with an unknown user, mean +
        item bias; with an unknown movie, mean + user bias; neither known, the mean. Clipped to
        the rating scale, float32."""
        if not self.has_rating_predictor:
            raise ValueError("this model has no rating predictor")
        users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
        known_user, known_item = users >= 0, items >= 0
        user, item = np.where(known_user, users, 0), np.where(known_item, items, 0)
        predicted = np.full(users.shape, self.rating_mean, dtype=np.float64)
        predicted += np.where(known_user, self.rating_user_bias[user], 0.0)
        predicted += np.where(known_item, self.rating_item_bias[item], 0.0)
        both = known_user & known_item
        predicted[both] += np.einsum(
            "ij,ij->i", self.rating_user_factors[user[both]], self.rating_item_factors[item[both]]
        )
        low, high, _ = self.rating_scale
        return np.clip(predicted, low, high).astype(np.float32)

    def predict_ratings(self, user_ids: Iterable[int], movie_ids: Iterable[int]) -> pd.DataFrame:
        """Predicted ratings of (original user id, movie id) pairs: columns predicted_rating (on
        the dataset's scale, clipped) and basis, what the prediction could use: "user and movie",
        "movie only" (a user the model does not know), "user only" (an unknown movie) or "mean"."""
        users, items = self.user_index(user_ids), self.item_index(movie_ids)
        if len(users) != len(items):
            raise ValueError(f"{len(users)} user ids but {len(items)} movie ids")
        basis = np.select(
            [(users >= 0) & (items >= 0), items >= 0, users >= 0], ["user and movie", "movie only", "user only"], "mean"
        )
        return pd.DataFrame({"predicted_rating": self.rating_predictions(users, items), "basis": basis})

    # ------------------------------------------------------------------ requests

    def predict(self, requests: pd.DataFrame | Mapping | list, default_k: int = 10) -> pd.DataFrame:
        """Recommendations for a frame of requests, one output row per recommended movie.

        Request columns (all optional): `user_id` (nullable int), `k` (nullable int, default
        `default_k`), `liked_movie_ids` (list of ints or None), `age`, `gender`, `occupation`.
        A row whose user_id is known gets the model's list (liked movies and demographics are
        not used: the model knows the user); all such rows are scored in one batched call. Any
        other row is a new user: `recommend_new_user` with its liked movies and demographics,
        which is the popularity list when there is nothing usable.

        Output columns: request (int64, the row position in `requests`), user_id (Int64, NA
        when missing), movie_id (int64), rank (int64, 1-based), score (float64), source ("model"
        or "popularity"); ordered by request then rank; padding is left out.
        """
        frame = as_request_frame(requests)
        n = len(frame)
        missing = pd.array([pd.NA] * n, dtype="Int64")
        user_ids = _nullable_ints(frame["user_id"], "user_id") if "user_id" in frame else missing
        ks = _nullable_ints(frame["k"], "k") if "k" in frame else missing
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
            items, scores = self.recommend(index[known], kmax, self.seen)
            movie_ids = self.movie_ids(items)
            for row, request in enumerate(known):
                lists[request] = (movie_ids[row, : ks[request]], scores[row, : ks[request]], MODEL)
        for request in np.flatnonzero(index < 0):
            liked = frame["liked_movie_ids"].iloc[request] if "liked_movie_ids" in frame else None
            demographics = {c: frame[c].iloc[request] for c in DEMOGRAPHICS if c in frame}
            movie_ids, scores, fallback = self.recommend_new_user(liked, demographics, int(ks[request]))
            lists[request] = (movie_ids, scores, POPULARITY if fallback else MODEL)
        return _output_frame(lists, user_ids)


# ---------------------------------------------------------------------- requests and responses


def as_request_frame(requests: pd.DataFrame | Mapping | list) -> pd.DataFrame:
    """A DataFrame of requests from a frame, one request dict, or a list of request dicts."""
    if isinstance(requests, pd.DataFrame):
        return requests.reset_index(drop=True)
    if isinstance(requests, Mapping):
        return pd.DataFrame([dict(requests)])
    if isinstance(requests, list):
        if not requests:
            return pd.DataFrame(columns=["user_id", "k", "liked_movie_ids", *DEMOGRAPHICS])
        return pd.DataFrame([dict(request) for request in requests])
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


# ---------------------------------------------------------------------- on disk

ARRAYS = (
    "user_ids",
    "item_ids",
    "user_bias",
    "user_vectors",
    "item_bias",
    "item_vectors",
    "popularity",
    "popularity_counts",
)
FEATURE_ARRAYS = ("user_feature_embeddings", "user_feature_biases")
RATING_ARRAYS = ("rating_user_bias", "rating_item_bias", "rating_user_factors", "rating_item_factors")
CONTENT_ARRAYS = ("mean_profile", "span_weights", "prior")


def save_bundle(bundle: ServingBundle, folder: Path | str) -> Path:
    """Write `bundle` into `folder` (created if needed) as plain files, nothing pickled:

    arrays.npz    ids, representations, popularity, user feature embeddings/biases (hybrid),
                  the rating predictor's biases and factors
    seen.npz      users x items, every rating of the snapshot (never recommended)
    trained.npz   users x items, the ratings the model was trained on (holdout evaluation)
    positives.npz users x items, the positives as the item-item models read them
    item_item-<name>.npz   each item-item model's items x items weights
    content-items.npz      the content model's item feature rows (its other arrays are in
                  arrays.npz as content_*, its spans and prior weight in bundle.json)
    items.parquet display metadata in item_idx order
    bundle.json   format, rating scale, positive threshold, user feature names, group column
                  ranges and weights, the blend recipe, the item-item model names, `about`
    """
    if bundle.rating_scale is None:
        raise ValueError("a bundle needs its rating_scale to be saved (the API validates feedback with it)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {name: getattr(bundle, name) for name in ARRAYS}
    if bundle.user_feature_embeddings is not None:
        arrays.update({name: getattr(bundle, name) for name in FEATURE_ARRAYS})
    if bundle.has_rating_predictor:
        arrays.update({name: getattr(bundle, name) for name in RATING_ARRAYS})
    arrays["segment_counts"] = bundle.segment_counts
    if bundle.content is not None:
        arrays.update({f"content_{name}": getattr(bundle.content, name) for name in CONTENT_ARRAYS})
        sp.save_npz(folder / "content-items.npz", bundle.content.item_rows.tocsr(), compressed=True)
    np.savez(folder / "arrays.npz", **arrays)
    sp.save_npz(folder / "seen.npz", bundle.seen.tocsr(), compressed=True)
    sp.save_npz(folder / "trained.npz", bundle.trained.tocsr(), compressed=True)
    sp.save_npz(folder / "positives.npz", bundle.positives.tocsr(), compressed=True)
    bundle.items.to_parquet(folder / "items.parquet", index=False)
    for name, matrix in bundle.item_item.items():
        sp.save_npz(folder / f"item_item-{name}.npz", matrix.tocsr(), compressed=False)
    low, high, step = bundle.rating_scale
    meta = {
        "format": ServingBundle.FORMAT,
        "rating_scale": {"min": low, "max": high, "step": step},
        "positive_threshold": float(bundle.positive_threshold),
        "user_feature_names": list(bundle.user_feature_names),
        "user_feature_groups": {group: list(span) for group, span in bundle.user_feature_groups.items()},
        "user_groups": bundle.user_groups,
        "blend": bundle.blend,
        "item_item": sorted(bundle.item_item),
        "about": bundle.about,
        "rating_mean": bundle.rating_mean,
        "new_user_policy": bundle.new_user_policy,
        "segment_columns": list(bundle.segment_columns),
        "segment_keys": list(bundle.segment_keys),
        "content": None
        if bundle.content is None
        else {"spans": [list(span) for span in bundle.content.spans], "prior_weight": bundle.content.prior_weight},
        "unrated_content_weight": bundle.unrated_content_weight,
    }
    (folder / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def bundle_format(folder: Path | str) -> int | None:
    """The format number a bundle folder declares (None: not a bundle)."""
    path = Path(folder) / "bundle.json"
    return json.loads(path.read_text()).get("format") if path.is_file() else None


def _read(path: Path, reader: Callable[[Path], object]):
    """`reader(path)`; a file that cannot be read (missing, truncated, altered) is an OSError
    naming it."""
    try:
        return reader(path)
    except Exception as error:
        raise OSError(f"{path} cannot be read: {type(error).__name__}: {error}") from error


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def load_bundle(folder: Path | str) -> ServingBundle:
    folder = Path(folder)
    found = bundle_format(folder)
    if found != ServingBundle.FORMAT:
        raise ValueError(f"{folder} holds bundle format {found}; this code reads format {ServingBundle.FORMAT}")
    meta = _read(folder / "bundle.json", lambda path: json.loads(path.read_text()))
    arrays = _read(folder / "arrays.npz", _arrays)
    matrix = lambda name: _read(folder / name, lambda path: sp.load_npz(path).tocsr())  # noqa: E731
    scale = meta["rating_scale"]
    content = None
    if meta["content"] is not None:
        content = ContentScorer(
            item_rows=matrix("content-items.npz"),
            **{name: arrays[f"content_{name}"] for name in CONTENT_ARRAYS},
            spans=[tuple(span) for span in meta["content"]["spans"]],
            prior_weight=meta["content"]["prior_weight"],
        )
    return ServingBundle(
        **{name: arrays[name] for name in ARRAYS},
        seen=matrix("seen.npz"),
        trained=matrix("trained.npz"),
        positives=matrix("positives.npz"),
        items=_read(folder / "items.parquet", pd.read_parquet),
        **{name: arrays.get(name) for name in FEATURE_ARRAYS},
        **{name: arrays.get(name) for name in RATING_ARRAYS},
        rating_mean=meta["rating_mean"],
        new_user_policy=meta["new_user_policy"],
        segment_columns=list(meta["segment_columns"]),
        segment_keys=list(meta["segment_keys"]),
        segment_counts=arrays["segment_counts"],
        user_feature_names=list(meta["user_feature_names"]),
        user_feature_groups={group: tuple(span) for group, span in meta["user_feature_groups"].items()},
        user_groups=meta["user_groups"],
        rating_scale=(scale["min"], scale["max"], scale["step"]),
        positive_threshold=meta["positive_threshold"],
        blend=meta["blend"],
        item_item={name: matrix(f"item_item-{name}.npz") for name in meta["item_item"]},
        about=meta["about"],
        content=content,
        unrated_content_weight=meta["unrated_content_weight"],
    )


# ---------------------------------------------------------------------- the MLflow entry point


def pyfunc_model():
    """The MLflow `PythonModel` over a saved bundle (artifact "bundle"): what the logged model's
    script hands to `mlflow.models.set_model`. mlflow is imported here only, so the rest of this
    file needs nothing but numpy, pandas and scipy."""
    import mlflow.pyfunc

    class MovieRecModel(mlflow.pyfunc.PythonModel):
        """`bundle` is the loaded `ServingBundle` (artifact "bundle": what is served, trained on
        every rating), for a server that calls its scoring API directly
        (`loaded.unwrap_python_model().bundle`). `evaluation_bundle()` loads its twin (artifact
        "evaluation_bundle": the same configuration trained on the holdout's training part
        only), which the promotion gate measures; serving never loads it."""

        def __init__(self) -> None:
            self.bundle: ServingBundle | None = None
            self.artifacts: dict[str, str] = {}

        def load_context(self, context) -> None:
            self.artifacts = dict(context.artifacts)
            self.bundle = load_bundle(self.artifacts["bundle"])

        def evaluation_bundle(self) -> ServingBundle:
            if "evaluation_bundle" not in self.artifacts:
                raise ValueError("this model has no evaluation bundle")
            return load_bundle(self.artifacts["evaluation_bundle"])

        # A DataFrame hint is one MLflow infers no schema from: the logged signature applies.
        def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
            """`ServingBundle.predict` on a DataFrame of requests (also a dict or a list of dicts)."""
            if self.bundle is None:
                raise RuntimeError("the model's context is not loaded")
            return self.bundle.predict(as_request_frame(model_input))

    return MovieRecModel()
