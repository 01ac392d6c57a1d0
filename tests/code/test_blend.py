"""The blend: per-user standardisation, the bundle's scoring recipe, the weight and half-life
searches, recency-weighted inputs and EASE's served (pruned) weights, against hand-computed cases."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from ranking import assert_same_ranking

from features.interactions import recency_ranked
from inference.model import ServingBundle, blended, load_bundle, save_bundle, standardise, top_k
from models.baselines import EASE
from models.blend import tune_half_life, tune_weights, weight_grid

TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}  # float32 arithmetic


def test_standardise_is_the_per_row_z_score_and_leaves_constant_rows_at_zero():
    scores = np.array([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]], dtype=np.float32)
    z = 1.5 / np.sqrt(1.5)  # population std of (1, 2, 3) is sqrt(2/3); (3 - 2) / sqrt(2/3)
    np.testing.assert_allclose(standardise(scores), [[-z, 0.0, z], [0.0, 0.0, 0.0]], **TOLERANCE)
    assert standardise(scores).dtype == np.float32


def test_standardise_compresses_a_sparse_rows_spike_and_keeps_every_rows_order():
    # One movie of 100 scored: mean 0.01, std sqrt(0.01 * 0.99) = 0.099499, z-score 9.94987.
    # Beyond b = sqrt(2 ln 100) + 1 = 4.03485 it becomes b + ln(1 + 9.94987 - b) = 5.96855; the
    # other movies keep (0 - 0.01) / 0.099499 = -0.100504.
    row = np.zeros((1, 100), dtype=np.float32)
    row[0, 7] = 1.0
    z = standardise(row)
    assert z[0, 7] == pytest.approx(5.96855, abs=1e-4)
    np.testing.assert_allclose(np.delete(z[0], 7), -0.100504, atol=1e-5)
    # A heavy tail keeps its order: compressed, never tied (a hard clip would tie these).
    tailed = np.concatenate([np.zeros(96), [10.0, 20.0, 40.0, 80.0]]).astype(np.float32)[None, :]
    top = standardise(tailed)[0, -4:]
    assert np.all(np.diff(top) > 0) and top[-1] < 10


def test_a_recipe_of_one_component_keeps_its_raw_scores_and_several_sum_weighted_z_scores():
    parts = {"a": np.array([[1.0, 2.0, 3.0]]), "b": np.array([[0.0, 0.0, 6.0]])}
    np.testing.assert_array_equal(blended(parts.__getitem__, {"b": 1.0}), [[0.0, 0.0, 6.0]])
    # z(a) = (-1.2247, 0, 1.2247); z(b) = (-0.7071, -0.7071, 1.4142)
    expected = 0.25 * np.array([-1.2247449, 0.0, 1.2247449]) + 0.75 * np.array([-0.7071068, -0.7071068, 1.4142135])
    np.testing.assert_allclose(blended(parts.__getitem__, {"a": 0.25, "b": 0.75}), [expected], **TOLERANCE)


def _bundle(**recipe) -> ServingBundle:
    """2 users x 3 items: factors of dimension 1, and an item-item matrix mapping 0 -> 2, 1 -> 0."""
    trained = sp.csr_matrix(np.array([[5.0, 0.0, 0.0], [0.0, 4.0, 2.0]], dtype=np.float32))
    counts = np.array([1, 1, 0])
    return ServingBundle(
        user_ids=np.array([10, 20]),
        item_ids=np.array([100, 200, 300]),
        user_bias=np.zeros(2),
        user_vectors=np.array([[1.0], [2.0]]),
        item_bias=np.zeros(3),
        item_vectors=np.array([[1.0], [2.0], [3.0]]),
        seen=trained,
        trained=trained,
        popularity=np.argsort(-counts, kind="stable"),
        popularity_counts=counts,
        items=pd.DataFrame({"movie_id": [100, 200, 300], "title": list("abc"), "year": [1, 2, 3], "genres": ["x"] * 3}),
        rating_scale=(1.0, 5.0, 1.0),
        **{"item_item": {"knn": sp.csr_matrix(np.array([[0, 0, 2.0], [1.0, 0, 0], [0, 0, 0]], np.float32))}, **recipe},
    )


def test_the_bundle_scores_by_its_recipe():
    factors = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    # Positives (rating >= 4): user 0 liked item 0 -> knn scores (0, 0, 2); user 1 liked item 1 -> (1, 0, 0).
    knn = np.array([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(_bundle().scores([0, 1]), factors, **TOLERANCE)
    np.testing.assert_allclose(_bundle(blend={"knn": 1.0}).scores([0, 1]), knn, **TOLERANCE)
    mixed = _bundle(blend={"factors": 0.6, "knn": 0.4})
    expected = 0.6 * standardise(factors) + 0.4 * standardise(knn)
    np.testing.assert_allclose(mixed.scores([0, 1]), expected, **TOLERANCE)
    # User 0: z(factors) = (-1.2247, 0, 1.2247), z(knn) = (-0.7071, -0.7071, 1.4142).
    np.testing.assert_allclose(mixed.scores([0])[0], [-1.0177, -0.2828, 1.3005], atol=1e-4)
    items, _ = mixed.recommend(np.array([1]), 3, mixed.seen)
    assert items[0].tolist() == [0, -1, -1]  # items 1 and 2 rated by user 1, never recommended


def test_weighted_positives_are_what_the_item_item_models_read():
    weighted = sp.csr_matrix(np.array([[0.5, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32))
    bundle = _bundle(blend={"knn": 1.0}, positives=weighted)
    np.testing.assert_allclose(bundle.scores([0]), [[0.0, 0.0, 1.0]], **TOLERANCE)


def test_a_new_user_is_scored_by_the_components_that_can_score_them():
    mixed = _bundle(blend={"factors": 0.5, "knn": 0.5})
    # Liked item 0: folded into the factors as item 0's vector (1.0), and knn reads (1, 0, 0).
    expected = 0.5 * standardise(np.array([[1.0, 2.0, 3.0]])) + 0.5 * standardise(np.array([[0.0, 0.0, 2.0]]))
    np.testing.assert_allclose(mixed.new_user_scores(np.array([0]), None), expected[0], **TOLERANCE)
    assert mixed.new_user_scores(np.array([], dtype=np.int64), None) is None  # nothing usable
    items, _, fallback = mixed.recommend_new_user_items(np.array([], dtype=np.int64), None, 2)
    assert fallback and items.tolist() == [0, 1]  # the popularity list


def test_a_recipe_must_name_known_components_with_positive_weights():
    with pytest.raises(ValueError, match="blend must give positive weights"):
        _bundle(blend={"ease": 1.0})
    with pytest.raises(ValueError, match="blend must give positive weights"):
        _bundle(blend={"factors": 1.0, "knn": 0.0})
    with pytest.raises(ValueError, match=r"item_item\['knn'\] has shape"):
        _bundle(item_item={"knn": sp.csr_matrix((2, 2))})


def test_the_recipe_survives_saving(tmp_path):
    bundle = _bundle(blend={"factors": 0.7, "knn": 0.3}, about={"role": "serving"})
    loaded = load_bundle(save_bundle(bundle, tmp_path / "bundle"))
    assert loaded.blend == {"factors": 0.7, "knn": 0.3} and loaded.about == {"role": "serving"}
    np.testing.assert_allclose(loaded.scores([0, 1]), bundle.scores([0, 1]), **TOLERANCE)


def test_weight_grid_covers_the_simplex_once():
    grid = weight_grid(("a", "b", "c"), 0.1)
    assert len(grid) == 66 and grid[0] == {"a": 1.0} and grid[-1] == {"c": 1.0}
    assert all(abs(sum(weights.values()) - 1.0) < 1e-9 and min(weights.values()) > 0 for weights in grid)
    assert len({tuple(sorted(weights.items())) for weights in grid}) == 66


def _prepared(test: np.ndarray, seen: np.ndarray, train: pd.DataFrame | None = None) -> SimpleNamespace:
    test, seen = sp.csr_matrix(test.astype(np.float32)), sp.csr_matrix(seen.astype(np.float32))
    return SimpleNamespace(
        test=test, seen=seen, n_users=test.shape[0], n_items=test.shape[1], split=SimpleNamespace(train=train)
    )


def test_tune_weights_finds_the_component_that_ranks_the_held_out_items_first():
    # Two users, four items; the held-out positives are item 3 (user 0) and item 2 (user 1).
    prepared = _prepared(np.array([[0, 0, 0, 1], [0, 0, 1, 0]]), np.array([[1, 0, 0, 0], [1, 0, 0, 0]]))
    right = np.array([[0.0, 0.1, 0.2, 0.9], [0.0, 0.1, 0.9, 0.2]])
    wrong = np.array([[0.0, 0.9, 0.5, 0.1], [0.0, 0.9, 0.1, 0.5]])
    weights, table = tune_weights({"right": right, "wrong": wrong}, prepared, np.array([0, 1]), k=1, step=0.5)
    assert weights == {"right": 1.0}
    assert table["ndcg@1"].tolist() == [1.0, 1.0, 0.0]  # right alone, the half-half mix, wrong alone
    assert table["weights"].tolist()[0] == {"right": 1.0}  # ties: the earlier vector of the grid


def test_recency_ranked_halves_the_weight_every_half_life_positions_back():
    ratings = pd.DataFrame(
        {
            "user_idx": [0, 0, 0, 0, 1],
            "item_idx": [0, 1, 2, 3, 0],
            "rating": [5.0, 4.0, 2.0, 4.0, 4.0],
            "timestamp": pd.to_datetime([3, 1, 4, 2, 1], unit="D", utc=True),
        }
    )
    # User 0's positives, latest first: item 0 (rank 0), item 3 (rank 1), item 1 (rank 2); item 2 is no positive.
    weights = recency_ranked(ratings, 2, 4, threshold=4.0, half_life=2.0).toarray()
    np.testing.assert_allclose(weights, [[1.0, 0.5, 0.0, 2**-0.5], [1.0, 0.0, 0.0, 0.0]], **TOLERANCE)
    np.testing.assert_array_equal(recency_ranked(ratings, 2, 4, threshold=4.0).toarray(), [[1, 1, 0, 1], [1, 0, 0, 0]])


def test_tune_half_life_prefers_recent_likes_when_they_predict_the_next_one():
    # The user liked item 0 long ago and item 1 lately; the scorer maps 0 -> 2 and 1 -> 3, and
    # the held-out like is item 3. Unweighted, items 2 and 3 tie and the lower index wins.
    train = pd.DataFrame(
        {
            "user_idx": [0, 0],
            "item_idx": [0, 1],
            "rating": [5.0, 5.0],
            "timestamp": pd.to_datetime([1, 9], unit="D", utc=True),
        }
    )
    prepared = _prepared(np.array([[0, 0, 0, 1]]), np.array([[5, 5, 0, 0]]), train)
    scorer = sp.csr_matrix(np.array([[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    assert tune_half_life({"scorer": scorer}, prepared, np.array([0]), 1, 4.0, grid=(None, 1.0)) == 1.0
    assert tune_half_life({"scorer": scorer}, prepared, np.array([0]), 1, 4.0, grid=(None,)) is None


def test_served_ease_keeps_the_largest_weights_and_all_of_them_when_the_budget_allows():
    rng = np.random.default_rng(0)
    interactions = sp.csr_matrix((rng.random((40, 12)) < 0.3).astype(np.float32))
    model = EASE(l2=5.0).fit(interactions)
    np.testing.assert_allclose(model.item_item(entries_per_item=12).toarray(), model.full_weights(), **TOLERANCE)
    pruned = model.item_item(entries_per_item=3)
    active = len(model.active)
    assert pruned.nnz == 3 * active
    kept = np.abs(pruned.data).min()
    dropped = np.abs(model.full_weights())[pruned.toarray() == 0]
    assert dropped.max() <= kept


def test_scoring_never_writes_into_the_bundles_own_arrays():
    bundle = _bundle(blend={"popularity": 1.0})
    before = bundle.popularity_score.copy()
    items, _ = bundle.recommend(np.array([0]), 3, bundle.seen)  # masks user 0's rated item in the scores it ranks
    assert items[0].tolist() == [1, 2, -1]
    np.testing.assert_array_equal(bundle.popularity_score, before)


def test_a_large_batch_of_a_blend_is_ranked_in_parts_as_in_one(monkeypatch):
    import inference.model as model

    rng = np.random.default_rng(3)
    n_users, n_items = 600, 80
    trained = sp.random(n_users, n_items, density=0.1, format="csr", random_state=4, dtype=np.float32) * 5
    counts = np.asarray((trained >= 4).sum(axis=0)).ravel()
    bundle = ServingBundle(
        user_ids=np.arange(n_users) + 1,
        item_ids=np.arange(n_items) + 1000,
        user_bias=rng.normal(size=n_users),
        user_vectors=rng.normal(size=(n_users, 4)),
        item_bias=rng.normal(size=n_items),
        item_vectors=rng.normal(size=(n_items, 4)),
        seen=trained,
        trained=trained,
        popularity=np.argsort(-counts, kind="stable"),
        popularity_counts=counts,
        items=pd.DataFrame({"movie_id": np.arange(n_items) + 1000, "title": "t", "year": 1, "genres": "x"}),
        rating_scale=(1.0, 5.0, 1.0),
        item_item={"knn": sp.random(n_items, n_items, density=0.2, format="csr", random_state=5, dtype=np.float32)},
        blend={"factors": 0.7, "knn": 0.3},
    )
    users = np.arange(n_users)
    scores = bundle.scores(users)
    expected_items, expected_scores = top_k(scores, 10, bundle.seen, users)
    parts = []
    monkeypatch.setattr(model, "_cores", lambda: 2)  # split even on a one-core machine
    monkeypatch.setattr(
        model.ServingBundle, "scores", lambda self, rows: parts.append(len(rows)) or scores[rows].copy()
    )
    items, values = bundle.recommend(users, 10, bundle.seen)
    assert sorted(parts) == [300, 300]  # two parts of the batch, one per core
    assert_same_ranking(items, values, expected_items, expected_scores, scores)
