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
    ranks, sources and users, scores within the tolerance, and per request the same movies in
    each run of expected scores tied within it (a tie may be broken either way); a run that ends
    the list may be cut at k, so there only the got movies' scores are checked (above)."""
    import pandas as pd

    got, expected = got.reset_index(drop=True), expected.reset_index(drop=True)
    assert len(got) == len(expected)
    for column in ("request", "rank", "source"):
        assert got[column].tolist() == expected[column].tolist(), column
    pd.testing.assert_series_equal(got["user_id"], expected["user_id"], check_dtype=False)
    np.testing.assert_allclose(got["score"].to_numpy(), expected["score"].to_numpy(), rtol=RTOL, atol=ATOL)
    for request, rows in expected.groupby("request").indices.items():
        scores = expected["score"].to_numpy()[rows]
        mine, theirs = got["movie_id"].to_numpy()[rows], expected["movie_id"].to_numpy()[rows]
        assert len(set(mine)) == len(mine), f"request {request} repeats a movie"
        start = 0
        while start < len(rows):
            end = start + 1
            while end < len(rows) and np.isclose(scores[end], scores[end - 1], rtol=RTOL, atol=ATOL):
                end += 1
            if end < len(rows):
                assert set(mine[start:end]) == set(theirs[start:end]), (
                    f"request {request} ranks {start + 1}..{end}: {mine[start:end]} instead of {theirs[start:end]}"
                )
            start = end
