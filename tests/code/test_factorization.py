import copy

import numpy as np
import pytest
import scipy.sparse as sp
from lightfm import LightFM

from models.factorization import BiasedMF, LightFMRecommender, carried_over, feature_rows


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


def test_a_carried_over_model_keeps_each_named_feature_and_starts_new_ones_as_lightfm_does():
    features = sp.hstack([sp.identity(30, format="csr"), sp.csr_matrix(np.eye(30)[:, :3])], format="csr")
    fitted = LightFMRecommender(no_components=4, epochs=2).fit(_interactions(), item_features=features).model
    identity = [f"item:{item}" for item in range(30)]
    rows = feature_rows([*identity, "a", "b", "c"], [*identity, "c", "x", "a"])
    assert rows.tolist() == [*range(30), 32, -1, 30]

    start = carried_over(fitted, rows, np.arange(40), random_state=5)
    fresh = LightFM(no_components=4, random_state=np.random.RandomState(5))
    fresh._initialize(4, 33, 40)
    states = ("embeddings", "embedding_gradients", "embedding_momentum", "biases", "bias_gradients", "bias_momentum")
    for state in states:
        new, old, first = (getattr(model, f"item_{state}") for model in (start, fitted, fresh))
        np.testing.assert_array_equal(new[:30], old[:30])
        np.testing.assert_array_equal(new[[30, 32]], old[[32, 30]])  # "c" and "a" moved
        np.testing.assert_array_equal(new[31], first[31])  # "x" is new: LightFM's start
        np.testing.assert_array_equal(getattr(start, f"user_{state}"), getattr(fitted, f"user_{state}"))
    assert start.get_params()["learning_rate"] == fitted.get_params()["learning_rate"]


def test_a_fit_from_a_start_trains_on_a_copy_and_needs_the_same_parameters():
    interactions = _interactions()
    fitted = LightFMRecommender(no_components=4, epochs=2).fit(interactions).model
    start = carried_over(fitted, np.arange(30), np.arange(40), random_state=5)
    before = start.item_embeddings.copy()
    continued = LightFMRecommender(no_components=4, epochs=2).fit(interactions, start=start)
    np.testing.assert_array_equal(start.item_embeddings, before)
    # Two epochs of LightFM's own fit_partial from the start (one thread: the same arithmetic).
    expected = copy.deepcopy(start)
    for _ in range(2):
        expected.fit_partial(interactions.tocoo(), epochs=1)
    np.testing.assert_array_equal(continued.model.item_embeddings, expected.item_embeddings)
    np.testing.assert_array_equal(continued.model.user_bias_gradients, expected.user_bias_gradients)
    assert not np.allclose(continued.model.item_embeddings, before)
    with pytest.raises(ValueError, match="differs in learning_rate, no_components"):
        LightFMRecommender(no_components=8, learning_rate=0.1).fit(interactions, start=start)
    with pytest.raises(ValueError, match="not fitted"):
        carried_over(LightFM(), np.arange(30), np.arange(40), random_state=5)


def _low_rank(seed=0, users=60, items=50, observed=0.5):
    generator = np.random.default_rng(seed)
    user_vectors, item_vectors = generator.normal(size=(users, 2)), generator.normal(size=(items, 2))
    truth = 3.5 + 0.3 * generator.normal(size=(users, 1)) + user_vectors @ item_vectors.T * 0.5
    mask = generator.random(truth.shape) < observed
    return truth, mask, sp.csr_matrix(np.where(mask, truth, 0.0))


def test_biased_mf_recovers_a_low_rank_rating_matrix():
    truth, mask, observed = _low_rank()
    model = BiasedMF(factors=4, l2=0.1, bias_l2=0.1, iterations=30, clip=None).fit(observed)
    held_users, held_items = np.nonzero(~mask)
    error = model.predict(held_users, held_items) - truth[held_users, held_items]
    assert np.sqrt(np.mean(error**2)) < 0.15
    # A baseline that only knows the mean is far worse: the fit learned the structure.
    assert np.sqrt(np.mean((truth[held_users, held_items] - truth[mask].mean()) ** 2)) > 0.5
    np.testing.assert_allclose(model.scores(np.array([3]))[0, 7], model.predict([3], [7])[0], rtol=1e-5, atol=1e-6)


def _ridge(design, target, penalty):
    return np.linalg.solve(design.T @ design + np.diag(penalty), design.T @ target)


@pytest.mark.parametrize("weighted", [False, True])
def test_each_als_half_step_is_the_exact_ridge_solution(weighted):
    # Rows with fewer ratings than unknowns (the dual solve), with more (the primal), and none.
    generator = np.random.default_rng(5)
    dense = np.where(
        generator.random((30, 40)) < np.linspace(0.02, 0.6, 30)[:, None], generator.integers(1, 6, (30, 40)), 0
    )
    dense[4] = 0
    ratings = sp.csr_matrix(dense.astype(np.float64))
    model = BiasedMF(factors=6, l2=0.7, bias_l2=0.3, iterations=3, weighted=weighted, clip=None).fit(ratings)
    # The last half-step solved every item given the users: each item's [q_i, b_i] is its own ridge.
    augmented = np.hstack([model.user_factors, np.ones((30, 1))])
    for item in range(40):
        raters = np.flatnonzero(dense[:, item])
        if not len(raters):
            assert not model.item_factors[item].any() and model.item_bias[item] == 0
            continue
        scale = len(raters) if weighted else 1
        expected = _ridge(
            augmented[raters],
            dense[raters, item] - model.mu - model.user_bias[raters],
            np.r_[np.full(6, 0.7 * scale), 0.3],
        )
        np.testing.assert_allclose(model.item_factors[item], expected[:-1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model.item_bias[item], expected[-1], rtol=1e-5, atol=1e-6)
    assert np.count_nonzero(dense, axis=0).min() < 7 < np.count_nonzero(dense, axis=0).max()


def test_biased_mf_falls_back_to_mu_plus_the_known_bias():
    observed = _low_rank()[2].tolil()
    observed[5, :] = 0  # user 5 and item 9 have no training ratings
    observed[:, 9] = 0
    observed = sp.csr_matrix(observed)
    observed.eliminate_zeros()
    model = BiasedMF(factors=3, l2=1.0, bias_l2=1.0, iterations=5, clip=(1.0, 5.0)).fit(observed)
    assert not model.user_factors[5].any() and model.user_bias[5] == 0 and not model.item_factors[9].any()
    predicted = model.predict([5, 5, 2, 100, 2, -1], [3, 9, 9, 3, 70, 9])
    expected = np.clip(
        [
            model.mu + model.item_bias[3],  # unknown user: mu + b_i
            model.mu,  # neither known
            model.mu + model.user_bias[2],  # unknown item: mu + b_u
            model.mu + model.item_bias[3],  # user index outside the fitted matrix
            model.mu + model.user_bias[2],  # item index outside it
            model.mu,  # negative indices never wrap around
        ],
        1.0,
        5.0,
    )
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-6)


def test_biased_mf_scores_stay_unclipped_and_the_interface_works():
    truth, _, observed = _low_rank(seed=2)
    model = BiasedMF(factors=4, l2=0.1, bias_l2=0.1, iterations=10, clip=(3.0, 4.0)).fit(observed)
    scores = model.scores(np.arange(60))
    users, items = np.nonzero(np.ones_like(truth))
    assert scores.dtype == np.float32 and scores.max() > 4.0 and scores.min() < 3.0
    np.testing.assert_allclose(np.clip(scores.ravel(), 3.0, 4.0), model.predict(users, items), rtol=1e-5, atol=1e-5)
    assert model.item_vectors().shape == (50, 4)
    liked = observed[0].indices[:5]
    fresh, _ = model.recommend_new_user(liked, 5)
    assert len(fresh) == 5 and not set(fresh) & set(liked)
    items_of_user, _ = model.recommend(np.arange(3), 5, exclude=observed)
    assert not set(items_of_user[0]) & set(observed[0].indices)
    assert BiasedMF(**model.params()).params() == model.params()


def test_biased_mf_stops_when_on_iteration_says_so_and_rejects_bad_parameters():
    _, _, observed = _low_rank()
    seen = []
    BiasedMF(iterations=10).fit(
        observed, on_iteration=lambda iteration, model: seen.append(iteration) or iteration == 3
    )
    assert seen == [1, 2, 3]
    for bad in ({"l2": 0.0}, {"bias_l2": -1.0}, {"iterations": 0}, {"factors": -1}):
        with pytest.raises(ValueError):
            BiasedMF(**bad)
    with pytest.raises(RuntimeError, match="fit the model first"):
        BiasedMF().predict([0], [0])


def test_unfitted_model_says_so():
    with pytest.raises(RuntimeError, match="fit the model first"):
        LightFMRecommender().scores(np.arange(2))
