import numpy as np
import pytest
import scipy.sparse as sp

from models.factorization import BiasedMF, LightFMRecommender


def _interactions(seed=0, users=40, items=30, density=0.2):
    generator = np.random.default_rng(seed)
    dense = (generator.random((users, items)) < density).astype(np.float32)
    return sp.csr_matrix(dense)


def test_scores_equal_lightfm_predict_with_and_without_features():
    interactions = _interactions()
    item_features = sp.hstack([sp.identity(30, format="csr"), sp.csr_matrix(np.eye(30)[:, :5])], format="csr")
    for features in (None, item_features):
        model = LightFMRecommender(no_components=8, epochs=3).fit(interactions, item_features=features)
        users = np.repeat(np.arange(40), 30)
        items = np.tile(np.arange(30), 40)
        expected = model.model.predict(users, items, item_features=features).reshape(40, 30)
        np.testing.assert_allclose(model.scores(np.arange(40)), expected, rtol=1e-4, atol=1e-4)


def test_one_thread_training_is_reproducible_and_the_seed_matters():
    interactions = _interactions()
    first = LightFMRecommender(no_components=8, epochs=3, random_state=1).fit(interactions).scores(np.arange(5))
    again = LightFMRecommender(no_components=8, epochs=3, random_state=1).fit(interactions).scores(np.arange(5))
    other = LightFMRecommender(no_components=8, epochs=3, random_state=2).fit(interactions).scores(np.arange(5))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_on_epoch_can_stop_training_early():
    seen = []
    LightFMRecommender(epochs=10).fit(_interactions(), on_epoch=lambda epoch, model: seen.append(epoch) or epoch == 3)
    assert seen == [1, 2, 3]


def test_recommend_never_returns_seen_items_and_new_users_fold_in():
    interactions = _interactions(density=0.5)
    model = LightFMRecommender(no_components=8, epochs=5).fit(interactions)
    items, _ = model.recommend(np.arange(40), 10, exclude=interactions)
    for user, row in enumerate(items):
        assert not set(row[row >= 0]) & set(interactions[user].indices)
    liked = interactions[0].indices
    fresh, _ = model.recommend_new_user(liked, 5)
    assert not set(fresh) & set(liked)
    np.testing.assert_allclose(
        model.new_user_scores(liked),
        model.item_vectors() @ model.item_vectors()[liked].mean(axis=0) + model.representations()[2],
        rtol=1e-5,
    )


def test_biased_mf_recovers_a_low_rank_rating_matrix():
    generator = np.random.default_rng(0)
    users, items = generator.normal(size=(60, 2)), generator.normal(size=(50, 2))
    truth = 3.5 + 0.3 * generator.normal(size=(60, 1)) + users @ items.T * 0.5
    mask = generator.random(truth.shape) < 0.5
    observed = sp.csr_matrix(np.where(mask, truth, 0.0))
    model = BiasedMF(factors=4, l2=0.1, iterations=30).fit(observed)
    held_users, held_items = np.nonzero(~mask)
    error = model.predict(held_users, held_items) - truth[held_users, held_items]
    assert np.sqrt(np.mean(error**2)) < 0.15
    # A baseline that only knows the mean is far worse: the fit learned the structure.
    assert np.sqrt(np.mean((truth[held_users, held_items] - truth[mask].mean()) ** 2)) > 0.5
    np.testing.assert_allclose(model.scores(np.array([3]))[0, 7], model.predict([3], [7])[0], rtol=1e-5)


def test_unfitted_model_says_so():
    with pytest.raises(RuntimeError, match="fit the model first"):
        LightFMRecommender().scores(np.arange(2))
