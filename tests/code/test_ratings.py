import numpy as np
import pytest
import scipy.sparse as sp

from models.factorization import BiasedMF
from models.metrics import rating_errors
from models.ratings import BiasBaseline, tune_biased_mf

RTOL, ATOL = 1e-5, 1e-6


def _low_rank_ratings(seed=0, users=150, items=120, rank=3, observed=0.3, noise=0.3):
    """A seeded rating matrix: 3.5 + user and item biases + a rank-`rank` interaction + noise,
    clipped to 1..5; a random `observed` share is training data, the rest held out."""
    generator = np.random.default_rng(seed)
    user_bias = generator.normal(0, 0.4, (users, 1))
    item_bias = generator.normal(0, 0.4, (1, items))
    interaction = generator.normal(0, 1, (users, rank)) @ generator.normal(0, 1, (rank, items)) / np.sqrt(rank)
    truth = np.clip(3.5 + user_bias + item_bias + 0.8 * interaction, 1, 5)
    noisy = np.clip(truth + generator.normal(0, noise, truth.shape), 1, 5)
    mask = generator.random(truth.shape) < observed
    train = sp.csr_matrix(np.where(mask, noisy, 0.0))
    held_users, held_items = np.nonzero(~mask)
    return train, held_users, held_items, noisy[held_users, held_items]


def test_rating_errors_by_hand():
    errors = rating_errors(np.array([3.0, 4.0, 5.0, 2.5]), np.array([4.0, 4.0, 3.0, 2.0]))
    # errors -1, 0, 2, 0.5: |e| sums to 3.5, e^2 to 1 + 0 + 4 + 0.25 = 5.25
    assert errors["n"] == 4
    np.testing.assert_allclose(errors["mae"], 3.5 / 4, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(errors["mse"], 5.25 / 4, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(errors["rmse"], np.sqrt(5.25 / 4), rtol=RTOL, atol=ATOL)


def test_rating_errors_rejects_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="differ in shape"):
        rating_errors(np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="no ratings"):
        rating_errors(np.array([]), np.array([]))


def test_bias_baseline_one_alternating_step_by_hand():
    # user 0 rated item 0 = 5 and item 1 = 3; user 1 rated item 0 = 4; user 2 rated nothing.
    ratings = sp.csr_matrix(np.array([[5.0, 3.0], [4.0, 0.0], [0.0, 0.0]]))
    model = BiasBaseline(user_l2=1.0, item_l2=1.0, iterations=1, clip=None).fit(ratings)
    # mu = 4; items first: b_i0 = (1 + 0) / (1 + 2) = 1/3, b_i1 = -1 / (1 + 1) = -1/2;
    # then users: b_u0 = ((1 - 1/3) + (-1 + 1/2)) / (1 + 2) = 1/18, b_u1 = (0 - 1/3) / (1 + 1) = -1/6.
    np.testing.assert_allclose(model.mu, 4.0, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(model.item_bias, [1 / 3, -1 / 2], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(model.user_bias, [1 / 18, -1 / 6, 0.0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        model.predict([0, 1, 1], [1, 1, 0]), [4 + 1 / 18 - 1 / 2, 4 - 1 / 6 - 1 / 2, 4 - 1 / 6 + 1 / 3], rtol=RTOL
    )
    # Unknown: user 2 has no ratings, user 7 and item 9 are outside the matrix: mu + the known bias.
    np.testing.assert_allclose(model.predict([2, 7, 0, 7], [0, 1, 9, 9]), [4 + 1 / 3, 3.5, 4 + 1 / 18, 4.0], rtol=RTOL)


def test_bias_baseline_converges_to_the_regularised_least_squares_biases():
    train, *_ = _low_rank_ratings(seed=1, users=40, items=30)
    model = BiasBaseline(user_l2=2.0, item_l2=5.0, iterations=200, clip=None).fit(train)
    coo = train.tocoo()
    residual = coo.data - model.mu - model.user_bias[coo.row] - model.item_bias[coo.col]
    # The gradient of the objective in every bias is zero: sum of residuals = l2 * bias.
    np.testing.assert_allclose(np.bincount(coo.row, residual, 40), 2.0 * model.user_bias, atol=1e-6)
    np.testing.assert_allclose(np.bincount(coo.col, residual, 30), 5.0 * model.item_bias, atol=1e-6)


def test_bias_baseline_matches_surprise_baseline_only():
    surprise = pytest.importorskip("surprise")
    import pandas as pd

    train, held_users, held_items, _ = _low_rank_ratings(seed=2, users=50, items=40)
    ours = BiasBaseline(clip=(1.0, 5.0)).fit(train)
    coo = train.tocoo()
    frame = pd.DataFrame({"user": coo.row, "item": coo.col, "rating": coo.data})
    trainset = surprise.Dataset.load_from_df(frame, surprise.Reader(rating_scale=(1, 5))).build_full_trainset()
    theirs = surprise.BaselineOnly(verbose=False).fit(trainset)
    expected = [theirs.predict(int(u), int(i)).est for u, i in zip(held_users[:300], held_items[:300], strict=True)]
    np.testing.assert_allclose(ours.predict(held_users[:300], held_items[:300]), expected, rtol=RTOL, atol=ATOL)


def test_biased_mf_beats_the_bias_baseline_and_the_mean_on_low_rank_ratings():
    train, users, items, actual = _low_rank_ratings()
    mean = rating_errors(np.full(len(actual), train.data.mean()), actual)["rmse"]
    baseline = rating_errors(BiasBaseline(user_l2=3, item_l2=3).fit(train).predict(users, items), actual)["rmse"]
    model = BiasedMF(factors=4, l2=1.0, bias_l2=3.0, iterations=20).fit(train)
    factored = rating_errors(model.predict(users, items), actual)["rmse"]
    assert baseline < 0.9 * mean
    # The interaction carries most of the variance left after biases: the factors must find it.
    assert factored < 0.75 * baseline, (factored, baseline, mean)


def test_tuner_prefers_a_sound_setting_to_a_deliberately_bad_one():
    train, users, items, actual = _low_rank_ratings(seed=3)
    # Validation: a seeded fifth of the training ratings, carved out of train (never the held-out pairs).
    coo = train.tocoo()
    carve = np.random.default_rng(0).random(coo.nnz) < 0.2
    fit_part = sp.csr_matrix((coo.data[~carve], (coo.row[~carve], coo.col[~carve])), shape=train.shape)
    validation = (coo.row[carve], coo.col[carve], coo.data[carve])
    # 16 factors with l2 = 0.01 overfit badly, l2 = 200 shrinks every factor to zero (biases only);
    # 4 factors with l2 = 1 match the rank-3 data.
    grid = {"factors": (16, 4), "l2": (0.01, 200.0, 1.0), "bias_l2": (1.0, 3.0)}
    tuning = tune_biased_mf(fit_part, validation, **grid)
    assert (tuning.params["factors"], tuning.params["l2"]) == (4, 1.0)
    assert tuning.params["bias_l2"] in (1.0, 3.0) and 1 <= tuning.params["iterations"] <= 25
    by_setting = {(trial["factors"], trial["l2"]): trial["rmse"] for trial in tuning.trials}
    assert len(by_setting) == 6 and tuning.rmse == min(by_setting.values())
    assert tuning.rmse < 0.6 * by_setting[(16, 0.01)] and tuning.rmse < 0.6 * by_setting[(16, 200.0)]
    # Refitted on all training data, the chosen setting also predicts the held-out pairs better.
    tuned = BiasedMF(**tuning.params).fit(train)
    bad = BiasedMF(**{**tuning.params, "factors": 16, "l2": 0.01}).fit(train)
    tuned_rmse = rating_errors(tuned.predict(users, items), actual)["rmse"]
    assert tuned_rmse < rating_errors(bad.predict(users, items), actual)["rmse"]
    # Deterministic: the same inputs give the same choice.
    again = tune_biased_mf(fit_part, validation, **grid)
    assert again.params == tuning.params


def test_predictions_are_clipped_to_the_scale_when_asked():
    train, users, items, _ = _low_rank_ratings(seed=4, noise=0.0)
    raw = BiasedMF(factors=4, l2=0.5, bias_l2=0.5, clip=None).fit(train).predict(users, items)
    assert raw.max() > 4.5 and raw.min() < 1.5  # the unclipped model strays towards (and past) the ends
    clipped = BiasedMF(factors=4, l2=0.5, bias_l2=0.5, clip=(1.5, 4.5)).fit(train).predict(users, items)
    assert clipped.min() >= 1.5 and clipped.max() <= 4.5
    np.testing.assert_allclose(clipped, np.clip(raw, 1.5, 4.5), rtol=RTOL, atol=ATOL)
    observed = BiasedMF(factors=4, l2=0.5, bias_l2=0.5).fit(train)  # default: the training ratings' range
    assert observed.rating_range == (float(train.data.min()), float(train.data.max()))
    np.testing.assert_allclose(observed.predict(users, items), np.clip(raw, *observed.rating_range), rtol=RTOL)
    baseline = BiasBaseline(user_l2=0.0, item_l2=0.0, clip=(3.0, 4.0)).fit(train).predict(users, items)
    assert baseline.min() >= 3.0 and baseline.max() <= 4.0
    with pytest.raises(ValueError, match="clip"):
        BiasedMF(clip="scale")
