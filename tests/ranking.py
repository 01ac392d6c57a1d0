"""Comparing rankings computed through different BLAS shapes (batch sizes, one row vs many):
float32 products may round differently, so scores match within a float32 tolerance and items
match wherever the scores are not tied within that tolerance."""

from __future__ import annotations

import numpy as np

RTOL, ATOL = 1e-5, 1e-5


def assert_same_ranking(
    items: np.ndarray,
    scores: np.ndarray,
    expected_items: np.ndarray,
    expected_scores: np.ndarray,
    full_scores: np.ndarray,
) -> None:
    """`items` / `scores` (n, k) against the expected lists; `full_scores` (n, n_items) are the
    scores every item of each row should have. Position j may hold another item than expected
    only if both score the same within the tolerance (a tie the rounding may break either way)."""
    items, expected_items = np.asarray(items), np.asarray(expected_items)
    finite = np.isfinite(expected_scores)
    np.testing.assert_array_equal(np.isfinite(scores), finite)
    np.testing.assert_allclose(np.asarray(scores)[finite], np.asarray(expected_scores)[finite], rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(items[~finite], expected_items[~finite])
    for row, column in np.argwhere((items != expected_items) & finite):
        mine, theirs = full_scores[row, items[row, column]], full_scores[row, expected_items[row, column]]
        assert np.isclose(mine, theirs, rtol=RTOL, atol=ATOL), (
            f"row {row} rank {column + 1}: item {items[row, column]} ({mine}) instead of {expected_items[row, column]} ({theirs})"
        )


def assert_same_predictions(got, expected) -> None:
    """Two outputs of the pyfunc's `predict` (one row per recommendation): the same requests,
    ranks, sources and users, scores within the tolerance, and the same movies wherever the
    expected scores of a request are not tied within it."""
    import pandas as pd

    got, expected = got.reset_index(drop=True), expected.reset_index(drop=True)
    assert len(got) == len(expected)
    for column in ("request", "rank", "source"):
        assert got[column].tolist() == expected[column].tolist(), column
    pd.testing.assert_series_equal(got["user_id"], expected["user_id"], check_dtype=False)
    np.testing.assert_allclose(got["score"].to_numpy(), expected["score"].to_numpy(), rtol=RTOL, atol=ATOL)
    for row in np.flatnonzero(got["movie_id"].to_numpy() != expected["movie_id"].to_numpy()):
        same_request = expected["request"] == expected["request"].iloc[row]
        others = expected.loc[same_request, "score"].drop(index=row).to_numpy()
        assert np.isclose(others, expected["score"].iloc[row], rtol=RTOL, atol=ATOL).any(), (
            f"row {row}: movie {got['movie_id'].iloc[row]} instead of {expected['movie_id'].iloc[row]}, not a tie"
        )
