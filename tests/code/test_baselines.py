"""Baseline recommenders on tiny hand-made matrices with hand-computed scores."""

import numpy as np
import pytest
import scipy.sparse as sp

from features.items import FeatureMatrix
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


# A toy FeatureMatrix: 4 items, a genre group (3 columns) and a decade group (2 columns). Per-group
# unit rows: i0 = [1 0 0 | 1 0], i1 = [0 1 0 | 0 1], i2 = [0 0 1 | - -] (no decade),
# i3 = [1 1 0]/sqrt(2) | [1 0]. Raw values differ in scale on purpose: each block is normalised.
TOY = FeatureMatrix(
    sp.csr_matrix(np.array([[2, 0, 0, 1, 0], [0, 3, 0, 0, 1], [0, 0, 1, 0, 0], [1, 1, 0, 2, 0]], dtype=np.float32)),
    ["genre:a", "genre:b", "genre:c", "year:1980s", "year:1990s"],
    {"genre": (0, 3), "year": (3, 5)},
)

# u0 likes i0; u1 likes i0, i1; u2 likes i2. Item 3 has no training data at all.
LIKES = sp.csr_matrix(np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]], dtype=np.float32))


def test_content_based_hand_computed_scores():
    # Defaults: genre weighs 2, year (decade) 1; score = 0.7 * taste + 0.3 * prior.
    model = ContentBased(TOY).fit(LIKES)
    s2 = np.sqrt(2.0)
    # Prior: log(1 + likes) = [ln 3, ln 2, ln 2] over ln 3 for the items with data. Item 3: ridge
    # (lambda 1) on the unit rows of i0..i2, which are orthogonal (|a0|^2 = |a1|^2 = 2, |a2|^2 = 1),
    # so w = sum_j a_j r_j / (|a_j|^2 + 1) with r = y - mean(y) = [2, -1, -1] ln(1.5) / 3, and
    # prior_3 = mean(y) + a3.w = ln(12) / 3 + (2/3 + 1 / (3 sqrt 2)) ln(1.5) / 3, over ln 3.
    prior_3 = (np.log(12) / 3 + (2 / 3 + 1 / (3 * s2)) * np.log(1.5) / 3) / np.log(3)
    prior = np.array([1.0, np.log(2) / np.log(3), np.log(2) / np.log(3), prior_3])
    np.testing.assert_allclose(model.prior, prior, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(prior_3, 0.864966, atol=1e-6)
    # Average liked item: (2 a0 + a1 + a2) / 4 = [0.5 0.25 0.25 | 0.5 0.25]; genre blocks weigh 2.
    np.testing.assert_allclose(model.mean_profile, [1.0, 0.5, 0.5, 0.5, 0.25], rtol=1e-5, atol=1e-6)

    # u1: mean of a0, a1 = [.5 .5 0 | .5 .5], centred [0 .25 -.25 | 0 .25], per-group unit:
    # genre [0 1 -1]/sqrt 2, decade [0 1]. Genre cosines [0, 1/sqrt 2, -1/sqrt 2, 1/2], decade
    # [0, 1, 0, 0]; taste = (2 genre + decade) / 3.
    taste_1 = np.array([0.0, (2 / s2 + 1) / 3, -2 / s2 / 3, 1 / 3])
    # u2: a2 minus the average = [-.5 -.25 .75 | -.5 -.25]; genre cosines
    # [-2, -1, 3, -3/sqrt 2] / sqrt 14, decade cosines [-2, -1, 0, -2] / sqrt 5.
    genre_2 = np.array([-2.0, -1.0, 3.0, -3 / s2]) / np.sqrt(14)
    decade_2 = np.array([-2.0, -1.0, 0.0, -2.0]) / np.sqrt(5)
    taste_2 = (2 * genre_2 + decade_2) / 3
    expected = 0.7 * np.vstack([taste_1, taste_2]) + 0.3 * prior
    scores = model.scores(np.array([1, 2]))
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        scores, [[0.3, 0.752596, -0.140704, 0.492823], [-0.158144, -0.039793, 0.563445, -0.213785]], atol=2e-6
    )
    # The item nobody rated is scored from its metadata: finite, not 0; u1 (who liked i0, which
    # shares its genre and decade) ranks it above i2.
    assert np.isfinite(scores).all() and scores[0, 3] > scores[0, 2]

    # A new user who likes i2 is scored like u2; one who likes nothing gets the prior alone.
    np.testing.assert_allclose(model.new_user_scores(np.array([2])), expected[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.new_user_scores(np.array([], dtype=np.int64)), 0.3 * prior, rtol=1e-5, atol=1e-6)


def test_content_based_options_and_inputs():
    s2 = np.sqrt(2.0)
    # Ratings tell that item 3 was rated (below the positive threshold): its prior is log(1 + 0) = 0.
    ratings = sp.csr_matrix(np.array([[5, 0, 0, 2], [4, 4, 0, 0], [0, 0, 4, 0]], dtype=np.float32))
    rated = ContentBased(TOY).fit(LIKES, ratings=ratings)
    assert rated.prior[3] == 0.0
    np.testing.assert_allclose(rated.scores(np.array([1]))[0, 3], 0.7 / 3, rtol=1e-5)
    with pytest.raises(ValueError, match="ratings are"):
        ContentBased(TOY).fit(LIKES, ratings=ratings[:, :3])

    # Equal group weights and a 50/50 blend: u1's taste is (genre + decade) / 2.
    equal = ContentBased(TOY, prior_weight=0.5, group_weights={}).fit(LIKES)
    np.testing.assert_allclose(
        equal.scores(np.array([1]))[0],
        0.5 * np.array([0.0, (1 / s2 + 1) / 2, -1 / s2 / 2, 0.25]) + 0.5 * equal.prior,
        rtol=1e-5,
        atol=1e-6,
    )
    # prior_weight 0: taste alone; 1: the prior alone, the same for everybody.
    taste_only = ContentBased(TOY, prior_weight=0.0).fit(LIKES).scores(np.array([1]))[0]
    np.testing.assert_allclose(taste_only, [0.0, (2 / s2 + 1) / 3, -2 / s2 / 3, 1 / 3], rtol=1e-5, atol=1e-6)
    prior_only = ContentBased(TOY, prior_weight=1.0).fit(LIKES).scores(ALL[:3])
    np.testing.assert_array_equal(prior_only, np.tile(prior_only[0], (3, 1)))

    # A plain matrix is one group. Identity features: u2's centred profile is e2 - (2 e0 + e1 + e2) / 4
    # = [-2, -1, 3, 0] / 4; item 3's row is orthogonal to every rated item's, so its ridge prior is
    # the mean training log-popularity ln(12) / 3.
    plain = ContentBased(sp.csr_matrix(np.eye(4, dtype=np.float32))).fit(LIKES)
    plain_prior = np.array([np.log(3), np.log(2), np.log(2), np.log(12) / 3]) / np.log(3)
    np.testing.assert_allclose(
        plain.scores(np.array([2]))[0],
        0.7 * np.array([-2.0, -1.0, 3.0, 0.0]) / np.sqrt(14) + 0.3 * plain_prior,
        rtol=1e-5,
        atol=1e-6,
    )
    again = ContentBased(sp.identity(4, format="csr")).fit(LIKES, item_features=TOY)
    np.testing.assert_allclose(again.scores(ALL[:3]), ContentBased(TOY).fit(LIKES).scores(ALL[:3]))
    with pytest.raises(ValueError, match="needs item_features"):
        ContentBased().fit(X)
    with pytest.raises(ValueError, match="rows"):
        ContentBased(TOY).fit(X)
    for bad in ({"prior_weight": 1.5}, {"ridge": 0.0}, {"group_weights": {"genre": -1.0}}):
        with pytest.raises(ValueError):
            ContentBased(TOY, **bad)


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
