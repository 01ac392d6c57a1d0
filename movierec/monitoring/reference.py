"""What the champion was trained on, summarised for monitoring: computed from the snapshot when a
version is registered and stored with it (run artifact `monitoring/reference.json`, version tag
`monitoring.reference`), so monitoring compares fresh data against it without the training data.
Pure: tables in, a JSON-ready dict out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from movierec.monitoring.drift import genre_mix, rating_distribution

REFERENCE_ARTIFACT = "monitoring/reference.json"
REFERENCE_TAG = "monitoring.reference"


def reference_statistics(
    ratings: pd.DataFrame,
    items: pd.DataFrame,
    scale_values: Iterable[float],
    positive_threshold: float,
    *,
    holdout: Mapping[str, float] | None = None,
    k: int = 10,
) -> dict:
    """Summary of `ratings` (user_id, movie_id, rating, timestamp in UTC seconds or datetimes)
    over catalogue `items` (movie_id, genres "|"-joined): the rating-value counts on the scale,
    ratings per day (median over the days with ratings, and over the last 30 days of the data),
    the genre mix of positives, the size of the data and its time span, and the held-out NDCG@k
    and hit rate@k the model had when registered (`holdout`: its metrics, keys "ndcg@k" ...)."""
    holdout = holdout or {}
    stamps = _datetimes(ratings["timestamp"])
    days = stamps.dt.floor("D")
    per_day = days.value_counts()
    last = stamps.max()
    recent = per_day[per_day.index > last.floor("D") - pd.Timedelta(days=30)]
    positives = ratings.loc[ratings["rating"] >= positive_threshold, "movie_id"]
    return {
        "ratings": len(ratings),
        "users": int(ratings["user_id"].nunique()),
        "movies": int(ratings["movie_id"].nunique()),
        "catalogue": len(items),
        "first_rating": stamps.min().isoformat() if len(stamps) else None,
        "last_rating": last.isoformat() if len(stamps) else None,
        "rating_counts": rating_distribution(ratings["rating"], scale_values),
        "mean_rating": float(ratings["rating"].mean()) if len(ratings) else None,
        "ratings_per_day": {
            "median": float(np.median(per_day.to_numpy())) if len(per_day) else 0.0,
            "last_30_days": float(recent.sum() / 30.0),
        },
        "positive_genre_counts": genre_mix(positives, items.set_index("movie_id")["genres"]),
        "positive_threshold": float(positive_threshold),
        "k": k,
        **{f"holdout_{name}@{k}": _number(holdout.get(f"{name}@{k}")) for name in ("ndcg", "hit_rate")},
    }


def _number(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _datetimes(values: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.tz_convert("UTC") if values.dt.tz is not None else values.dt.tz_localize("UTC")
    return pd.to_datetime(values.astype("int64"), unit="s", utc=True)
