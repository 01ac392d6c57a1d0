"""Drift measures against hand-computed cases (and Jensen-Shannon against scipy's)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from movierec.monitoring.drift import aligned, jensen_shannon, psi, rating_distribution


def test_psi_and_jensen_shannon_by_hand():
    # Reference 50/50, current 90/10.
    expected_psi = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)  # 0.878890...
    assert psi([5, 5], [90, 10]) == pytest.approx(expected_psi, rel=1e-9)
    m = (0.7, 0.3)
    kl_p = 0.5 * math.log2(0.5 / m[0]) + 0.5 * math.log2(0.5 / m[1])
    kl_q = 0.9 * math.log2(0.9 / m[0]) + 0.1 * math.log2(0.1 / m[1])
    assert jensen_shannon([5, 5], [90, 10]) == pytest.approx((kl_p + kl_q) / 2, rel=1e-9)  # 0.146793...
    assert jensen_shannon([90, 10], [5, 5]) == pytest.approx(jensen_shannon([5, 5], [90, 10]))
    assert psi([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0) and jensen_shannon([1, 2], [1, 2]) == pytest.approx(0.0)
    assert jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint: one bit
    # An empty bin is floored at 1e-4, not infinite: (0.5 - 1e-4) ln(0.5 / 1e-4) + (1e-4 - 0.5) ln(1e-4 / 0.5) ...
    floored = (0.5 - 1e-4) * math.log(0.5 / 1e-4) + (0.5 - 1.0) * math.log(0.5 / 1.0)
    assert psi([0, 1], [1, 1]) == pytest.approx(floored, rel=1e-9)


def test_jensen_shannon_agrees_with_scipy():
    # scipy's jensenshannon is the distance: the square root of the divergence.
    from scipy.spatial.distance import jensenshannon

    rng = np.random.default_rng(0)
    for _ in range(20):
        reference, current = rng.integers(0, 50, 12), rng.integers(0, 50, 12)
        current[rng.integers(0, 12)] = 0  # empty bins on one side
        assert jensen_shannon(reference, current) == pytest.approx(jensenshannon(reference, current, base=2) ** 2)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="2 and 3 bins"):
        psi([1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="without any count"):
        jensen_shannon([0, 0], [1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        psi([-1, 2], [1, 1])


def test_rating_distribution_and_alignment():
    ratings = pd.Series([4.0, 4.0, 3.5, 5.0, 0.5])
    counts = rating_distribution(ratings, [0.5 * step for step in range(1, 11)])
    assert counts["4"] == 2 and counts["3.5"] == 1 and counts["1"] == 0 and sum(counts.values()) == 5
    assert aligned({"Drama": 3, "Comedy": 1}, {"Drama": 1, "Horror": 2}) == ([1.0, 3.0, 0.0], [0.0, 1.0, 2.0])


def test_reference_statistics_by_hand():
    from movierec.monitoring.reference import reference_statistics

    day = 86_400
    ratings = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 2, 3],
            "movie_id": [10, 20, 10, 30, 20],
            "rating": [5.0, 3.0, 4.0, 4.5, 1.0],
            "timestamp": [0, 0, day, day, 40 * day],  # two ratings on day 0 and on day 1, one on day 40
        }
    )
    items = pd.DataFrame({"movie_id": [10, 20, 30, 40], "genres": ["Drama|Comedy", "Horror", "Drama", ""]})
    stats = reference_statistics(
        ratings, items, [1, 2, 3, 4, 5, 4.5], 4.0, holdout={"ndcg@10": 0.2, "hit_rate@10": 0.5}
    )
    assert (stats["ratings"], stats["users"], stats["movies"], stats["catalogue"]) == (5, 3, 3, 4)
    assert stats["rating_counts"] == {"1": 1, "2": 0, "3": 1, "4": 1, "5": 1, "4.5": 1}
    # Positives (>= 4): movie 10 twice (Drama|Comedy), movie 30 (Drama).
    assert stats["positive_genre_counts"] == {"Comedy": 2, "Drama": 3}
    # Days with ratings: 2, 2, 1 -> median 2; the last 30 days (days 11..40) hold 1 rating.
    assert stats["ratings_per_day"] == {"median": 2.0, "last_30_days": 1 / 30}
    assert stats["first_rating"] == "1970-01-01T00:00:00+00:00" and stats["last_rating"].startswith("1970-02-10")
    assert (
        stats["holdout_ndcg@10"] == 0.2
        and stats["holdout_hit_rate@10"] == 0.5
        and stats["mean_rating"] == pytest.approx(17.5 / 5)
    )
