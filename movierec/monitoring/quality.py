"""Quality of what was served, from impressions and the feedback that followed them. Pure:
frames in, numbers out; the ranking metrics are `models.metrics`' (one home for NDCG).

Online quality. Feedback answers an impression when it names the impression's id (and comes
from its user, when the impression knows one, after it was shown), or when it names no
impression and the impression's user sends it within `attribution` after the impression was
shown (arrival time at the API, not the client's timestamp). An impression is evaluated when at least one positive
event (a rating at or above the positive threshold, a thumbs-up) answers it; its relevant
movies are every movie those events liked, shown or not. Per evaluated impression:
hit rate@k = 1 if a relevant movie is among the first k shown, NDCG@k as offline with the
relevant movies as the held-out positives; both averaged over evaluated impressions.
Click-through = share of impressions with a click answering them on a movie they showed (None
when the window holds no click).

Served lists (every impression, model and fallback alike): catalogue coverage (distinct movies
shown / catalogue size), mean popularity of the movies shown (their training positives; the
lift divides it by the catalogue's mean, 1 = no popularity bias) and intra-list genre diversity
(`models.metrics.intra_list_diversity`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from inference.model import PAD_ITEM
from models.metrics import intra_list_diversity, ranking_metrics


def positive_events(events: pd.DataFrame, positive_threshold: float) -> pd.DataFrame:
    """The events that say a user liked a movie: ratings at or above the threshold, thumbs up."""
    liked = ((events["kind"] == "rating") & (events["value"] >= positive_threshold)) | (
        (events["kind"] == "thumb") & (events["value"] > 0)
    )
    return events[liked]


def answers(impressions: pd.DataFrame, events: pd.DataFrame, attribution: pd.Timedelta) -> pd.DataFrame:
    """(impression row position, movie_id) pairs: the events that answer each impression."""
    columns = ["row", "movie_id"]
    shown = impressions.assign(row=np.arange(len(impressions)))
    named = events["impression_id"].notna()
    by_id = shown[["row", "impression_id", "user_id", "shown_at"]].merge(
        events.loc[named, ["impression_id", "user_id", "movie_id", "received_at"]],
        on="impression_id",
        suffixes=("", "_answering"),
    )
    # An impression of a new user (no id) may be answered by whoever names it.
    same_user = (by_id["user_id"] == by_id["user_id_answering"]).fillna(True).astype(bool)
    by_id = by_id[same_user & (by_id["received_at"] >= by_id["shown_at"])]
    known = shown[shown["user_id"].notna()].astype({"user_id": "int64"})
    by_user = known[["row", "user_id", "shown_at"]].merge(
        events.loc[~named, ["user_id", "movie_id", "received_at"]], on="user_id"
    )
    delay = by_user["received_at"] - by_user["shown_at"]
    by_user = by_user[(delay >= pd.Timedelta(0)) & (delay <= attribution)]
    pairs = pd.concat([by_id[columns], by_user[columns]], ignore_index=True)
    return pairs.astype({"row": "int64", "movie_id": "int64"}).drop_duplicates()


def online_quality(
    impressions: pd.DataFrame,
    events: pd.DataFrame,
    *,
    k: int,
    positive_threshold: float,
    attribution: pd.Timedelta,
) -> dict[str, float | None]:
    """Hit rate@k, NDCG@k and click-through of the impressions (see the module docstring)."""
    relevant = answers(impressions, positive_events(events, positive_threshold), attribution)
    quality: dict[str, float | None] = {"impressions_evaluated": 0, f"hit_rate@{k}": None, f"ndcg@{k}": None}
    if not relevant.empty:
        rows = np.unique(relevant["row"].to_numpy())
        lists = [impressions["movie_ids"].iat[row][:k] for row in rows]
        movies = pd.Index(pd.unique(np.concatenate([np.concatenate(lists), relevant["movie_id"].to_numpy()])))
        recommended = np.full((len(rows), k), PAD_ITEM, dtype=np.int64)
        for position, shown in enumerate(lists):
            recommended[position, : len(shown)] = movies.get_indexer(shown)
        test = sp.csr_matrix(
            (
                np.ones(len(relevant), dtype=np.float32),
                (np.searchsorted(rows, relevant["row"].to_numpy()), movies.get_indexer(relevant["movie_id"])),
            ),
            shape=(len(rows), len(movies)),
        )
        metrics = ranking_metrics(recommended, test, k=k, n_items=len(movies))
        quality.update(
            {
                "impressions_evaluated": metrics["n_users_evaluated"],
                f"hit_rate@{k}": metrics[f"hit_rate@{k}"],
                f"ndcg@{k}": metrics[f"ndcg@{k}"],
            }
        )
    clicks = events[events["kind"] == "click"]
    quality["clicks"] = len(clicks)
    quality["click_through"] = None
    if len(clicks) and len(impressions):
        clicked = answers(impressions, clicks, attribution)
        on_shown = [movie in impressions["movie_ids"].iat[row] for row, movie in clicked.itertuples(index=False)]
        quality["click_through"] = clicked.loc[on_shown, "row"].nunique() / len(impressions)
    return quality


def served_lists(
    impressions: pd.DataFrame,
    *,
    k: int,
    catalogue: np.ndarray,
    popularity: np.ndarray,
    genres: sp.csr_matrix,
) -> dict[str, float | None]:
    """Coverage, popularity bias and diversity of every list shown (first k movies). `catalogue`:
    the served model's movie ids; `popularity` and `genres` rows in the same order."""
    if impressions.empty:
        return {"coverage": None, "mean_popularity": None, "popularity_lift": None, "diversity": None}
    index = pd.Index(catalogue)
    shown = np.full((len(impressions), k), PAD_ITEM, dtype=np.int64)
    for position, movies in enumerate(impressions["movie_ids"]):
        shown[position, : len(movies[:k])] = index.get_indexer(movies[:k])  # unknown movies: -1, as padding
    items = shown[shown != PAD_ITEM]
    counts = np.asarray(popularity, dtype=np.float64)
    mean_popularity = float(counts[items].mean()) if items.size else None
    return {
        "coverage": float(np.unique(items).size / len(catalogue)),
        "mean_popularity": mean_popularity,
        "popularity_lift": mean_popularity / counts.mean() if mean_popularity is not None and counts.mean() else None,
        "diversity": float(intra_list_diversity(shown, genres).mean()),
    }
