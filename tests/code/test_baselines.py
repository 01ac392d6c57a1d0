"""Baseline recommenders on tiny hand-made matrices with hand-computed scores."""

import numpy as np
import pytest
import scipy.sparse as sp

from models.baselines import EASE, ContentBased, ItemKNN, Popularity, UserKNN

# 4 users x 5 items; item 4 has no interactions.
#        i0 i1 i2 i3 i4
X_DENSE = np.array(
    [
        [1, 1, 0, 0, 0],  # u0
        [1, 1, 1, 0, 0],  # u1
        [0, 1, 1, 0, 0],  # u2
        [0, 0, 0, 1, 0],  # u3
    ],
    dtype=np.float32,
)
X = sp.csr_matrix(X_DENSE)
ALL = np.arange(4)


def test_popularity_counts_users_per_item_for_everybody():
    weighted = X.copy()
    weighted.data *= 3.0  # weights do not change the number of users
    model = Popularity().fit(weighted)
    expected = np.array([2, 3, 2, 1, 0], dtype=np.float32)
    scores = model.scores(ALL)
    assert scores.dtype == np.float32 and scores.shape == (4, 5)
    np.testing.assert_array_equal(scores, np.tile(expected, (4, 1)))
    np.testing.assert_array_equal(model.new_user_scores(np.array([3])), expected)
    items, _ = model.recommend(np.array([0]), 2, exclude=X)
    assert items.tolist() == [[2, 3]]  # 0, 1 are seen; 2 (2 users) before 3 (1 user)


def test_item_knn_cosine_similarities_and_scores():
    model = ItemKNN(k_neighbors=10, shrink=0.0).fit(X)
    # Item columns: i0 = {u0,u1}, i1 = {u0,u1,u2}, i2 = {u1,u2}, i3 = {u3}.
    c01 = 2 / np.sqrt(2 * 3)
    c02 = 1 / np.sqrt(2 * 2)
    c12 = 2 / np.sqrt(3 * 2)
    expected_s = np.array(
        [
            [0, c01, c02, 0, 0],
            [c01, 0, c12, 0, 0],
            [c02, c12, 0, 0, 0],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
        ],
        dtype=np.float32,
    )
    np.testing.assert_allclose(model.similarity.toarray(), expected_s, rtol=1e-6)
    np.testing.assert_allclose(model.scores(ALL), X_DENSE @ expected_s, rtol=1e-6)
    np.testing.assert_allclose(model.new_user_scores(np.array([0, 0])), expected_s[0], rtol=1e-6)


def test_item_knn_shrinkage_and_neighbour_pruning():
    shrunk = ItemKNN(k_neighbors=10, shrink=2.0).fit(X)
    assert shrunk.similarity[0, 1] == pytest.approx(2 / (np.sqrt(6) + 2), rel=1e-6)
    pruned = ItemKNN(k_neighbors=1, shrink=0.0).fit(X)
    dense = pruned.similarity.toarray()
    # Each item keeps only its best neighbour: i0 -> i1 (0.816 > 0.5), i1 -> i0 = i2 tie -> lower index i0.
    assert [np.flatnonzero(row).tolist() for row in dense] == [[1], [0], [1], [], []]


def test_ease_matches_the_closed_form():
    generator = np.random.default_rng(0)
    dense = (generator.random((30, 8)) < 0.4).astype(np.float32)
    dense[:, 6] = 0.0  # an item nobody interacted with
    l2 = 5.0
    model = EASE(l2=l2).fit(sp.csr_matrix(dense))
    gram = dense.T.astype(np.float64) @ dense + l2 * np.eye(8)
    precision = np.linalg.inv(gram)
    expected = -precision / np.diag(precision)[None, :]
    np.fill_diagonal(expected, 0.0)
    weights = model.full_weights()
    np.testing.assert_array_equal(np.diag(weights), 0.0)
    np.testing.assert_allclose(weights, expected, atol=1e-6)
    np.testing.assert_allclose(model.scores(np.arange(30)), dense @ expected, atol=1e-5)
    assert model.scores(np.arange(30)).dtype == np.float32
    np.testing.assert_allclose(model.new_user_scores(np.array([1, 3])), expected[1] + expected[3], atol=1e-6)


def test_ease_refuses_huge_catalogues():
    with pytest.raises(ValueError, match="EASE needs a dense"):
        EASE().fit(sp.csr_matrix((3, 20_001), dtype=np.float32))
    with pytest.raises(ValueError, match="limited to 10 items"):
        EASE(max_items=10).fit(sp.csr_matrix((3, 11), dtype=np.float32))


def test_user_knn_weighted_neighbour_sums():
    model = UserKNN(k_neighbors=1, shrink=0.0).fit(X)
    # u0 = {0,1}, u1 = {0,1,2}, u2 = {1,2}, u3 = {3}.
    s01 = 2 / np.sqrt(2 * 3)
    s02 = 1 / np.sqrt(2 * 2)
    s12 = 2 / np.sqrt(3 * 2)
    expected = np.zeros((4, 5), dtype=np.float32)
    expected[0] = s01 * X_DENSE[1]  # best neighbour of u0 is u1
    expected[1] = s01 * X_DENSE[0]  # u0 and u2 tie -> lower index u0
    expected[2] = s12 * X_DENSE[1]
    # u3 shares nothing with anybody: no neighbours, all zero.
    np.testing.assert_allclose(model.scores(ALL), expected, rtol=1e-6)

    everyone = UserKNN(k_neighbors=10, shrink=0.0).fit(X)
    np.testing.assert_allclose(everyone.scores(np.array([0]))[0], s01 * X_DENSE[1] + s02 * X_DENSE[2], rtol=1e-6)
    # A new user with u0's history: neighbours are all training users, u0 included (similarity 1).
    np.testing.assert_allclose(
        everyone.new_user_scores(np.array([0, 1])), X_DENSE[0] + s01 * X_DENSE[1] + s02 * X_DENSE[2], rtol=1e-6
    )


def test_user_knn_batches_give_the_same_scores(monkeypatch):
    import models.baselines as baselines

    generator = np.random.default_rng(1)
    matrix = sp.csr_matrix((generator.random((50, 20)) < 0.3).astype(np.float32))
    whole = UserKNN(k_neighbors=5).fit(matrix).scores(np.arange(50))
    monkeypatch.setattr(baselines, "_BLOCK", 7)
    np.testing.assert_array_equal(UserKNN(k_neighbors=5).fit(matrix).scores(np.arange(50)), whole)


def test_content_based_profiles_and_cosine_scores():
    # Features: 3 columns (e.g. genres). Item 4 is cold but has metadata.
    features = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float32))
    weighted = X.copy()
    weighted[0, 1] = 3.0  # u0 likes i1 three times as much as i0
    model = ContentBased(features).fit(weighted)
    l1 = features.toarray() / features.toarray().sum(axis=1, keepdims=True)
    unit = l1 / np.linalg.norm(l1, axis=1, keepdims=True)
    profile = (1 * l1[0] + 3 * l1[1]) / 4  # = [0.625, 0.375, 0]
    expected = unit @ (profile / np.linalg.norm(profile))
    np.testing.assert_allclose(model.scores(np.array([0]))[0], expected, rtol=1e-6)
    # The cold item 4 shares i0's features, so it scores like i0 for u0.
    assert model.scores(np.array([0]))[0, 4] == pytest.approx(expected[0])
    # A new user who likes i3 only: i3's feature is unique to it.
    np.testing.assert_allclose(model.new_user_scores(np.array([3])), [0, 0, 0, 1, 0], atol=1e-7)

    # item_features given to fit win over the constructor's; a FeatureMatrix-like object works.
    class Holder:
        matrix = features

    again = ContentBased().fit(weighted, item_features=Holder())
    np.testing.assert_allclose(again.scores(np.array([0])), model.scores(np.array([0])))
    with pytest.raises(ValueError, match="needs item_features"):
        ContentBased().fit(X)


@pytest.mark.parametrize(
    "model",
    [Popularity(), ItemKNN(shrink=0.0), EASE(l2=1.0), UserKNN(shrink=0.0), ContentBased(sp.identity(5, format="csr"))],
    ids=lambda model: model.name,
)
def test_common_contract(model):
    model.fit(X)
    scores = model.scores(np.array([2, 0, 2]))
    assert scores.shape == (3, 5) and scores.dtype == np.float32
    np.testing.assert_array_equal(scores[0], scores[2])
    np.testing.assert_array_equal(model.scores(np.array([0]))[0], scores[1])
    assert model.new_user_scores(np.array([0, 1])).shape == (5,)
    items, _ = model.recommend(ALL, 3, exclude=X)
    for user, row in enumerate(items):
        assert not set(row[row >= 0].tolist()) & set(X[user].indices.tolist())
    vectors = model.item_vectors()
    assert vectors.shape[0] == 5
    similar, _ = model.similar_items(0, 2)
    assert 0 not in similar.tolist()


def test_item_vectors_fall_back_to_a_seeded_svd(monkeypatch):
    import models.baselines as baselines

    generator = np.random.default_rng(2)
    matrix = sp.csr_matrix((generator.random((300, 200)) < 0.1).astype(np.float32))
    monkeypatch.setattr(baselines, "MAX_DENSE_VECTOR_CELLS", 1000)
    monkeypatch.setattr(baselines, "SVD_COMPONENTS", 16)
    first = ItemKNN().fit(matrix).item_vectors()
    second = ItemKNN().fit(matrix).item_vectors()
    assert first.shape == (200, 16)
    np.testing.assert_array_equal(first, second)


def test_unfitted_models_say_so():
    with pytest.raises(RuntimeError, match="not fitted"):
        ItemKNN().scores(np.array([0]))
