"""inference.model.top_k, the one selection kernel: exclusion, ordering, tie-breaking, padding,
the single-row path, and batched factor scoring against a full sort."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from ranking import assert_same_ranking

from inference.model import ServingBundle, top_k


def reference_top_k(scores, k, exclude=None, user_rows=None):
    """Full sort per row: eligible items by score descending, then item index ascending."""
    n_rows, n_items = scores.shape
    rows = np.arange(n_rows) if user_rows is None else user_rows
    seen = np.zeros((n_rows, n_items), dtype=bool) if exclude is None else exclude.toarray()[rows] != 0
    items = np.full((n_rows, k), -1, dtype=np.int32)
    values = np.full((n_rows, k), -np.inf, dtype=np.float32)
    for row in range(n_rows):
        eligible = [j for j in range(n_items) if not seen[row, j] and scores[row, j] > -np.inf]
        ranked = sorted(eligible, key=lambda j: (-scores[row, j], j))[:k]
        items[row, : len(ranked)] = ranked
        values[row, : len(ranked)] = scores[row, ranked]
    return items, values


def test_orders_by_score_then_lower_index_and_excludes():
    scores = np.array([[0.1, 0.9, 0.5, 0.9, 0.7]])
    exclude = sp.csr_matrix(np.array([[0, 0, 0, 1, 0]]))
    items, values = top_k(scores, 3, exclude)
    # Item 3 (0.9) is excluded; the rest by score: 1 (0.9), 4 (0.7), 2 (0.5).
    np.testing.assert_array_equal(items, [[1, 4, 2]])
    np.testing.assert_allclose(values, [[0.9, 0.7, 0.5]], rtol=1e-6)
    assert items.dtype == np.int32 and values.dtype == np.float32


def test_ties_at_the_boundary_go_to_lower_indices():
    # Eight items tie at 1.0; k=3 must pick items 0, 1, 2 whatever argpartition does internally.
    scores = np.array([[1.0] * 8 + [2.0], [1.0] * 9])
    items, _ = top_k(scores, 4)
    np.testing.assert_array_equal(items, [[8, 0, 1, 2], [0, 1, 2, 3]])


def test_pads_when_fewer_than_k_eligible():
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    exclude = sp.csr_matrix(np.array([[1, 0, 1], [1, 1, 1]]))
    items, values = top_k(scores, 5, exclude)
    np.testing.assert_array_equal(items, [[1, -1, -1, -1, -1], [-1] * 5])
    assert values[0, 0] == 2.0 and np.all(np.isneginf(values[0, 1:])) and np.all(np.isneginf(values[1]))


def test_user_rows_select_the_exclusion_rows_and_input_is_untouched():
    scores = np.array([[5.0, 4.0, 3.0]])
    original = scores.copy()
    exclude = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]]))
    items, _ = top_k(scores, 2, exclude, user_rows=np.array([1]))
    np.testing.assert_array_equal(items, [[0, 2]])
    np.testing.assert_array_equal(scores, original)


def test_nan_and_minus_inf_scores_are_never_returned():
    items, _ = top_k(np.array([[np.nan, 1.0, -np.inf, 0.5]]), 4)
    np.testing.assert_array_equal(items, [[1, 3, -1, -1]])


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        top_k(np.zeros((2, 3)), 0)
    with pytest.raises(ValueError):
        top_k(np.zeros((2, 3)), 2, sp.csr_matrix((2, 4)))


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_rows=st.integers(1, 6),
    n_items=st.integers(1, 30),
    k=st.integers(1, 35),
    density=st.floats(0.0, 1.0),
    levels=st.sampled_from([2, 5, 1000]),
)
def test_matches_full_sort_and_never_returns_excluded(seed, n_rows, n_items, k, density, levels):
    rng = np.random.default_rng(seed)
    # Few distinct levels make ties common, including at the k-th position.
    scores = rng.integers(0, levels, size=(n_rows, n_items)).astype(np.float64)
    n_users = n_rows + 3
    exclude = sp.csr_matrix(rng.random((n_users, n_items)) < density)
    user_rows = rng.choice(n_users, size=n_rows, replace=False)

    items, values = top_k(scores, k, exclude, user_rows)
    expected_items, expected_values = reference_top_k(scores, k, exclude, user_rows)

    np.testing.assert_array_equal(items, expected_items)
    np.testing.assert_array_equal(values, expected_values)
    seen = exclude.toarray()[user_rows]
    for row in range(n_rows):
        returned = items[row][items[row] >= 0]
        assert not seen[row, returned].any()
        assert len(set(returned.tolist())) == len(returned)


def _factor_bundle(user_factors, item_factors, user_bias, item_bias, seen=None) -> ServingBundle:
    n_users, n_items = len(user_factors), len(item_factors)
    counts = np.zeros(n_items, dtype=np.int64)
    return ServingBundle(
        user_ids=np.arange(1, n_users + 1),
        item_ids=np.arange(1, n_items + 1),
        user_bias=user_bias,
        user_vectors=user_factors,
        item_bias=item_bias,
        item_vectors=item_factors,
        seen=sp.csr_matrix((n_users, n_items)) if seen is None else seen,
        popularity=np.arange(n_items),
        popularity_counts=counts,
        items=pd.DataFrame({"movie_id": np.arange(1, n_items + 1), "title": "t", "year": 2000, "genres": "Drama"}),
    )


@pytest.mark.parametrize("batch_size", [1, 7, 2048])
def test_batched_factor_scoring_equals_brute_force_with_biases(batch_size, monkeypatch):
    rng = np.random.default_rng(3)
    n_users, n_items, n_factors, k = 40, 60, 8, 10
    user_factors = rng.standard_normal((n_users, n_factors)).astype(np.float32)
    item_factors = rng.standard_normal((n_items, n_factors)).astype(np.float32)
    user_bias = rng.standard_normal(n_users).astype(np.float32)
    item_bias = rng.standard_normal(n_items).astype(np.float32)
    exclude = sp.csr_matrix(rng.random((n_users, n_items)) < 0.3)
    users = rng.permutation(n_users)[:25]
    monkeypatch.setattr("inference.model.BATCH_SIZE", batch_size)

    items, values = _factor_bundle(user_factors, item_factors, user_bias, item_bias).recommend(users, k, exclude)

    full = user_factors[users] @ item_factors.T + user_bias[users][:, None] + item_bias[None, :]
    expected_items, expected_values = reference_top_k(full, k, exclude, users)
    assert_same_ranking(items, values, expected_items, expected_values, full)


def test_batched_scoring_without_exclusion():
    user_factors = np.array([[1.0, 0.0], [0.0, 1.0]])
    item_factors = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    bundle = _factor_bundle(user_factors, item_factors, np.zeros(2), np.zeros(3))
    items, _ = bundle.recommend(np.arange(2), 2)
    np.testing.assert_array_equal(items, [[0, 2], [1, 2]])


@pytest.mark.parametrize("seed", range(30))
def test_the_single_row_path_selects_what_the_batch_path_selects(seed):
    """`top_k` takes a cheaper path for one row (the API's per-request case): with many ties,
    excluded items and any k, every row alone gives what the same row gives in a batch."""
    rng = np.random.default_rng(seed)
    n, rows = int(rng.integers(1, 60)), 3
    scores = rng.integers(0, 6, (rows, n)).astype(np.float32)  # many ties
    scores[rng.random((rows, n)) < 0.2] = -np.inf
    scores[rng.random((rows, n)) < 0.05] = np.nan
    exclude = sp.csr_matrix(rng.random((rows, n)) < 0.2)
    k = int(rng.integers(1, 80))
    items, values = top_k(scores, k, exclude)
    for row in range(rows):
        alone, alone_values = top_k(scores[row : row + 1], k, exclude, np.array([row]))
        np.testing.assert_array_equal(alone[0], items[row])
        np.testing.assert_array_equal(alone_values[0], values[row])


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_items=st.integers(1, 40_000),
    k=st.integers(1, 120),
    levels=st.sampled_from([1, 3, 50, 10**9]),
    excluded=st.floats(0.0, 1.0),
)
def test_a_single_long_row_matches_a_full_sort(seed, n_items, k, levels, excluded):
    """The single-row path finds its candidates from a strided sample of long rows: exact with
    heavy ties, most items excluded, or a sample of nothing but -inf."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, size=(1, n_items)).astype(np.float32)
    scores[rng.random((1, n_items)) < excluded] = -np.inf
    items, values = top_k(scores, k)
    eligible = np.flatnonzero(scores[0] > -np.inf)
    ranked = eligible[np.lexsort((eligible, -scores[0, eligible]))][:k]
    expected = np.full(k, -1)
    expected[: len(ranked)] = ranked
    np.testing.assert_array_equal(items[0], expected)
    np.testing.assert_array_equal(values[0][: len(ranked)], scores[0, ranked])


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_rows=st.integers(2, 8),
    n_items=st.integers(1, 20_000),
    k=st.integers(1, 120),
    levels=st.sampled_from([1, 3, 50, 10**9]),
    blanked=st.floats(0.0, 1.0),
    density=st.floats(0.0, 0.2),
)
def test_many_long_rows_match_a_full_sort(seed, n_rows, n_items, k, levels, blanked, density):
    """The batch path takes its candidates from the k best of strided item groups: exact with
    heavy ties (a group tying the k-th best maximum), -inf and NaN (blanked cells), exclusions,
    and catalogues too small to group."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, size=(n_rows, n_items)).astype(np.float32)
    blank = rng.random((n_rows, n_items)) < blanked
    scores[blank] = np.where(rng.random(int(blank.sum())) < 0.5, -np.inf, np.nan)
    exclude = sp.random(n_rows, n_items, density=density, format="csr", random_state=seed % 2**31)
    items, values = top_k(scores, k, exclude)
    masked = np.where(np.isnan(scores) | (exclude.toarray() != 0), -np.inf, scores)
    for row in range(n_rows):
        eligible = np.flatnonzero(masked[row] > -np.inf)
        ranked = eligible[np.lexsort((eligible, -masked[row, eligible]))][:k]
        expected = np.full(k, -1)
        expected[: len(ranked)] = ranked
        np.testing.assert_array_equal(items[row], expected)
        np.testing.assert_array_equal(values[row][: len(ranked)], masked[row, ranked])
