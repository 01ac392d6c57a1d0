"""models.topk: exclusion, ordering, tie-breaking, padding, and batching against a full sort."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from models.topk import batched_top_k, top_k


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


@pytest.mark.parametrize("batch_size", [1, 7, 2048])
def test_batched_equals_brute_force_with_biases(batch_size):
    rng = np.random.default_rng(3)
    n_users, n_items, n_factors, k = 40, 60, 8, 10
    user_factors = rng.standard_normal((n_users, n_factors)).astype(np.float32)
    item_factors = rng.standard_normal((n_items, n_factors)).astype(np.float32)
    user_bias = rng.standard_normal(n_users).astype(np.float32)
    item_bias = rng.standard_normal(n_items).astype(np.float32)
    exclude = sp.csr_matrix(rng.random((n_users, n_items)) < 0.3)
    users = rng.permutation(n_users)[:25]

    items, values = batched_top_k(
        user_factors, item_factors, k, exclude, users,
        user_bias=user_bias, item_bias=item_bias, batch_size=batch_size,
    )

    full = user_factors[users] @ item_factors.T + user_bias[users][:, None] + item_bias[None, :]
    expected_items, expected_values = reference_top_k(full, k, exclude, users)
    np.testing.assert_array_equal(items, expected_items)
    np.testing.assert_allclose(values, expected_values, rtol=1e-5)


def test_batched_defaults_to_all_users_without_exclusion():
    user_factors = np.array([[1.0, 0.0], [0.0, 1.0]])
    item_factors = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    items, _ = batched_top_k(user_factors, item_factors, 2, None, None)
    np.testing.assert_array_equal(items, [[0, 2], [1, 2]])
