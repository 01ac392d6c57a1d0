"""Distribution drift between a reference (the champion's training data) and what came since:
the Population Stability Index and the Jensen-Shannon divergence of two distributions over the
same bins, and the distributions monitoring compares. Pure numpy/pandas, no I/O.

PSI = sum_i (a_i - e_i) ln(a_i / e_i) over bins with reference shares e and current shares a,
each floored at `FLOOR` so an empty bin counts as a rare one instead of an infinite term. The
usual reading: below 0.1 stable, 0.1-0.2 a moderate shift, above 0.2 a significant one.
JS = (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2, in bits: 0 for equal distributions, 1
for disjoint ones; symmetric and finite without flooring.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

FLOOR = 1e-4


def shares(counts: Iterable[float]) -> np.ndarray:
    """Counts as shares summing to 1 (all zeros stay zeros)."""
    values = np.asarray(list(counts), dtype=np.float64)
    if (values < 0).any():
        raise ValueError("counts must be non-negative")
    total = values.sum()
    return values / total if total > 0 else values


def psi(reference: Iterable[float], current: Iterable[float], floor: float = FLOOR) -> float:
    """Population Stability Index of `current` against `reference` (counts or shares per bin)."""
    expected, actual = _pair(reference, current)
    expected, actual = np.maximum(expected, floor), np.maximum(actual, floor)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def jensen_shannon(reference: Iterable[float], current: Iterable[float]) -> float:
    """Jensen-Shannon divergence in bits between two distributions (counts or shares per bin)."""
    p, q = _pair(reference, current)
    m = (p + q) / 2
    return float((_kl_bits(p, m) + _kl_bits(q, m)) / 2)


def _kl_bits(p: np.ndarray, q: np.ndarray) -> float:
    present = p > 0
    return float(np.sum(p[present] * np.log2(p[present] / q[present])))


def _pair(reference: Iterable[float], current: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    expected, actual = shares(reference), shares(current)
    if expected.shape != actual.shape:
        raise ValueError(f"the distributions have {len(expected)} and {len(actual)} bins")
    if not expected.sum() or not actual.sum():
        raise ValueError("a distribution without any count cannot be compared")
    return expected, actual


def rating_distribution(ratings: pd.Series, scale_values: Iterable[float]) -> dict[str, int]:
    """How many ratings fall on each value of the scale (keys: the values as text, e.g. "4.5")."""
    values = [round(float(value), 4) for value in scale_values]
    counts = ratings.round(4).value_counts()
    return {f"{value:g}": int(counts.get(value, 0)) for value in values}


def aligned(reference: Mapping[str, float], current: Mapping[str, float]) -> tuple[list[float], list[float]]:
    """Two keyed distributions over the union of their keys (a key one lacks counts 0 there)."""
    keys = sorted(set(reference) | set(current))
    return [float(reference.get(key, 0)) for key in keys], [float(current.get(key, 0)) for key in keys]


def data_drift(
    reference: Mapping,
    events: pd.DataFrame,
    ratings: pd.Series,
    positives: pd.Series,
    *,
    days: float,
    known_users: Iterable[int],
    known_movies: Iterable[int],
    genres: pd.Series,
    scale_values: Iterable[float],
) -> tuple[dict[str, float | None], dict[str, dict]]:
    """How the data of a window differs from the champion's training data (`reference`, see
    `movierec.monitoring.reference`): `events` (user_id, movie_id) every event of the window,
    `ratings` the explicit rating values, `positives` the movie ids liked (ratings at or above the
    positive threshold, thumbs up), `days` the window's length, `genres` "|"-joined genres by
    movie id. Returns the measures (None where the window has nothing to measure) and the two
    sides' distributions (rating values, genres of positives) for plots."""
    rating_counts = rating_distribution(ratings, scale_values)
    reference_ratings, current_ratings = aligned(reference["rating_counts"], rating_counts)
    genre_counts = genre_mix(positives, genres)
    reference_genres, current_genres = aligned(reference["positive_genre_counts"], genre_counts)
    per_day = len(ratings) / days if days > 0 else None
    reference_per_day = reference["ratings_per_day"]["last_30_days"]
    measures = {
        "events": len(events),
        "unknown_user_share": _share_outside(events["user_id"], known_users),
        "unknown_movie_share": _share_outside(events["movie_id"], known_movies),
        "rating_events": len(ratings),
        "mean_rating": float(ratings.mean()) if len(ratings) else None,
        "rating_psi": psi(reference_ratings, current_ratings) if sum(current_ratings) else None,
        "rating_js": jensen_shannon(reference_ratings, current_ratings) if sum(current_ratings) else None,
        "ratings_per_day": per_day,
        "ratings_per_day_ratio": per_day / reference_per_day if per_day is not None and reference_per_day else None,
        "positive_events": len(positives),
        "genre_psi": psi(reference_genres, current_genres) if sum(current_genres) else None,
        "genre_js": jensen_shannon(reference_genres, current_genres) if sum(current_genres) else None,
    }
    distributions = {
        "rating_counts": {"reference": dict(reference["rating_counts"]), "current": rating_counts},
        "positive_genre_counts": {"reference": dict(reference["positive_genre_counts"]), "current": genre_counts},
    }
    return measures, distributions


def genre_mix(movie_ids: pd.Series, genres: pd.Series) -> dict[str, int]:
    """How many of `movie_ids` carry each genre (`genres`: "|"-joined genres by movie id; a movie
    with several counts once for each)."""
    found = genres.reindex(pd.Index(movie_ids.to_numpy())).dropna().astype(str).str.split("|").explode()
    counts = found[found != ""].value_counts()
    return {str(genre): int(count) for genre, count in counts.sort_index().items()}


def _share_outside(values: pd.Series, known: Iterable[int]) -> float | None:
    return float((~values.isin(pd.Index(known))).mean()) if len(values) else None
