"""Measuring models: every family on a prepared split (`evaluate`, `compare`), and a served
bundle on a holdout given in original ids (`holdout_metrics`, the promotion gate's measure).

Both rank the full catalogue with `inference.model.top_k` (through `Recommender.recommend` or
the bundle's `recommend`) and score the lists with `models.metrics`. A model is anything with
`recommend(users, k, exclude)` and `scores(users)`: every `models.base.Recommender`, and a
`inference.model.ServingBundle`, so the pipeline measures the hybrid through the very bundle it
registers.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.prepare import Prepared
from features.users import genre_matrix
from inference.model import PAD_ITEM, ServingBundle
from models.factorization import BiasedMF
from models.families import MODEL_NAMES, build_model
from models.metrics import activity_segments, auc, ranking_metrics, rating_errors, segment_metrics


def evaluate(model, prepared: Prepared, *, k: int = 10, users: np.ndarray | None = None) -> dict:
    """Ranking metrics over the full catalogue, each test user's training items excluded, plus
    AUC, NDCG@k per training-activity segment and, for the rating predictor, MAE/RMSE. `users`:
    the user_idx to average over (default: every user with a held-out positive)."""
    users = evaluated_users(prepared) if users is None else users
    recommended, _ = model.recommend(users, k, exclude=prepared.seen)
    popularity = np.asarray(prepared.train.sum(axis=0)).ravel()
    common = {
        "train": prepared.seen,
        "item_popularity": popularity,
        "item_genres": prepared.genres,
        "n_items": prepared.n_items,
    }
    metrics = ranking_metrics(recommended, prepared.test, k=k, users=users, **common)
    metrics["auc"] = batched_auc(model, prepared, users)
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


def ndcg(recommended: np.ndarray, prepared: Prepared, users: np.ndarray, k: int) -> float:
    """NDCG@k of the top lists `recommended` (rows: `users`) against `prepared.test`, without the
    report's other metrics: the objective of tuning and selection, computed many times."""
    return ranking_metrics(recommended, prepared.test, k=k, users=users, n_items=prepared.n_items)[f"ndcg@{k}"]


def evaluated_users(prepared: Prepared) -> np.ndarray:
    """Users with at least one held-out positive: the users every metric is averaged over."""
    return np.flatnonzero(np.diff(prepared.test.indptr) > 0)


def batched_auc(
    model, prepared: Prepared, users: np.ndarray, items: np.ndarray | None = None, batch: int = 1024
) -> float:
    """Mean per-user AUC (among `items` if given), scoring users in batches so memory stays at
    batch x n_items. Every user passed has positives, so batch means weight by batch size."""
    total = 0.0
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        total += auc(model.scores(chunk), prepared.test, prepared.seen, users=chunk, items=items) * len(chunk)
    return total / len(users) if len(users) else float("nan")


def compare(
    prepared: Prepared, names: tuple[str, ...] = MODEL_NAMES, *, k: int = 10, lightfm_params: dict | None = None
) -> pd.DataFrame:
    """One row per model: its metrics and training seconds."""
    rows = []
    for name in names:
        started = time.perf_counter()
        model = build_model(name, prepared, lightfm_params)
        seconds = time.perf_counter() - started
        rows.append({"model": name, **evaluate(model, prepared, k=k), "train_seconds": seconds})
    return pd.DataFrame(rows).set_index("model")


def holdout_metrics(
    bundle: ServingBundle, train: pd.DataFrame, test: pd.DataFrame, *, k: int, threshold: float
) -> dict:
    """Ranking metrics of `bundle` as served, on a holdout given in ORIGINAL ids.

    `train` / `test` have user_id, movie_id, rating. Evaluated users: the test users with at least
    one positive (rating >= threshold). Each gets the bundle's top-k: a user the bundle knows gets
    the model's list with the items it was `trained` on AND the user's `train` pairs excluded; an
    unknown user gets the popularity list with their `train` pairs excluded. Both exclusions are
    one combined matrix in the bundle's item space (train movies the bundle does not know cannot
    be recommended anyway), so the selection is exact. Test positives on movies the bundle does
    not know count in every denominator (recall, ideal DCG) but can never be hit: an old champion
    and a new challenger are measured identically on the same current holdout.

    Returns the keys of `models.metrics.ranking_metrics` (ndcg@k, recall@k, ..., novelty@k from
    the bundle's training popularity, diversity@k from the genres, n_users_evaluated) plus
    `fallback_users` (evaluated users served by popularity).
    """
    positives = test.loc[test["rating"] >= threshold, ["user_id", "movie_id"]].drop_duplicates()
    users = np.unique(positives["user_id"].to_numpy(np.int64))
    n = len(users)
    row_of = pd.Index(users)

    # Test positives: known movies in their item_idx column, unknown ones in extra columns.
    test_rows = row_of.get_indexer(positives["user_id"].to_numpy(np.int64))
    test_items = bundle.item_index(positives["movie_id"].to_numpy(np.int64))
    unknown = test_items < 0
    if unknown.any():
        extra = pd.factorize(positives["movie_id"].to_numpy(np.int64)[unknown])[0]
        test_items[unknown] = bundle.n_items + extra
    n_columns = int(max(bundle.n_items, test_items.max() + 1 if len(test_items) else 0))
    test_matrix = sp.csr_matrix((np.ones(len(test_rows), np.float32), (test_rows, test_items)), shape=(n, n_columns))

    # Exclusions: the items each known user's model was trained on plus every given train pair.
    index = bundle.user_index(users)
    known = index >= 0
    seen_rows = bundle.trained[index[known]].tocoo()
    train_rows = row_of.get_indexer(train["user_id"].to_numpy(np.int64))
    train_items = bundle.item_index(train["movie_id"].to_numpy(np.int64))
    keep = (train_rows >= 0) & (train_items >= 0)
    exclude = sp.csr_matrix(
        (
            np.ones(seen_rows.nnz + int(keep.sum()), np.float32),
            (
                np.concatenate([np.flatnonzero(known)[seen_rows.row], train_rows[keep]]),
                np.concatenate([seen_rows.col, train_items[keep]]),
            ),
        ),
        shape=(n, bundle.n_items),
    )
    exclude.sum_duplicates()

    rows = np.arange(n)
    recommended = np.full((n, k), PAD_ITEM, dtype=np.int64)
    if known.any():
        recommended[known] = bundle.recommend(index[known], k, exclude, rows[known])[0]
    if (~known).any():
        recommended[~known] = bundle.popular(int((~known).sum()), k, exclude, rows[~known])[0]

    genres = genre_matrix(bundle.items.assign(item_idx=np.arange(bundle.n_items)))
    metrics = ranking_metrics(
        recommended,
        test_matrix,
        k=k,
        users=rows,
        train=exclude,
        n_items=bundle.n_items,
        item_popularity=bundle.popularity_counts.astype(np.float64),
        item_genres=genres,
    )
    metrics["fallback_users"] = int((~known).sum())
    return metrics
