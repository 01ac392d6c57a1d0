"""Behaviour of the LightFM models on generated data with planted genre tastes."""

from __future__ import annotations

import numpy as np
import pytest

from features.prepare import prepare
from features.splits import cold_item_split, every_rating, user_temporal_split
from features.users import new_user_features
from models.evaluation import evaluate
from models.families import build_model
from models.tune import TrialSetup
from movierec.data.preprocess import canonicalize
from movierec.data.synthetic import generate
from movierec.settings import get_settings
from movierec.training import candidates

PARAMS = {"no_components": 32, "epochs": 15, "learning_rate": 0.05, "random_state": 3}


@pytest.fixture(scope="module")
def tables():
    return canonicalize(generate(30_000, seed=11), None)[0]


@pytest.fixture(scope="module")
def prepared(tables):
    chosen = user_temporal_split(tables.ratings)
    return prepare(
        tables.users,
        tables.items,
        tables.tags,
        chosen=chosen,
        item_groups={"identity": 1.0, "genre": 1.0, "text": 0.5},
        user_groups={"identity": 1.0, "taste": 1.0},
    )


@pytest.fixture(scope="module")
def hybrid(prepared):
    return build_model("hybrid", prepared, PARAMS)


def _genre_share(tables, items, genre):
    genres = tables.items.set_index("item_idx").loc[items, "genres"]
    return genres.str.contains(genre).mean()


def test_factor_models_beat_popularity_on_held_out_data(prepared, hybrid):
    popularity = evaluate(build_model("popularity", prepared), prepared)["ndcg@10"]
    assert evaluate(hybrid, prepared)["ndcg@10"] > popularity * 1.1
    assert evaluate(build_model("mf", prepared, PARAMS), prepared)["ndcg@10"] > popularity * 1.1


def _held_out_auc(model, prepared) -> float:
    """Mean over test users of the share of (held-out positive, unseen negative) pairs ordered right."""
    scores = model.scores(np.arange(prepared.n_users))
    shares = []
    for user in np.unique(prepared.test.tocoo().row):
        positives = prepared.test[user].indices
        negatives = np.setdiff1d(np.arange(prepared.n_items), np.r_[positives, prepared.seen[user].indices])
        shares.append((scores[user, positives][:, None] > scores[user, negatives][None, :]).mean())
    return float(np.mean(shares))


def test_the_served_hybrid_continued_from_its_twin_learns_the_held_out_ratings(
    tables, prepared, hybrid, home, monkeypatch
):
    everything = prepare(
        tables.users,
        tables.items,
        tables.tags,
        chosen=every_rating(tables.ratings),
        item_groups={"identity": 1.0, "genre": 1.0, "text": 0.5},
        user_groups={"identity": 1.0, "taste": 1.0},
    )
    setup = TrialSetup(PARAMS, {}, {})
    start = candidates.factor_start(hybrid, prepared)
    assert get_settings().training.continue_epochs is None  # the default: a fit from scratch
    assert candidates.fit_hybrid(get_settings(), everything, setup, start).epochs == PARAMS["epochs"]

    monkeypatch.setenv("MOVIEREC_TRAINING__CONTINUE_EPOCHS", "3")
    continued = candidates.fit_hybrid(get_settings(), everything, setup, start)
    assert continued.epochs == 3
    # The newest ratings (the twin's test part) are learned: their order against unseen movies
    # improves (0.919 -> 0.945 here; a fit from scratch on everything for 15 epochs: 0.959), and
    # the twin's epochs count: 3 epochs from scratch reach less.
    auc = _held_out_auc(continued, prepared)
    assert auc > _held_out_auc(hybrid, prepared) + 0.015
    assert auc > _held_out_auc(build_model("hybrid", everything, {**PARAMS, "epochs": 3}), prepared) + 0.005  # 0.928

    # The mf candidate continues from its own twin alike.
    twin_mf = build_model("mf", prepared, candidates.mf_params(get_settings(), PARAMS["epochs"]))
    start = candidates.factor_start(twin_mf, prepared)
    mf = candidates.fit_candidate(
        get_settings(), "mf", everything, continued, hybrid_seconds=0.0, mf_start=start
    ).factors
    assert mf.epochs == 3 and mf.item_features is None
    assert _held_out_auc(mf, prepared) > _held_out_auc(twin_mf, prepared) + 0.015


def test_a_new_user_who_likes_only_horror_gets_mostly_horror(tables, prepared, hybrid):
    horror = tables.items[tables.items["genres"] == "Horror"]["item_idx"].to_numpy()
    popular_horror = horror[np.argsort(-np.asarray(prepared.train[:, horror].sum(axis=0)).ravel())][:8]
    row = new_user_features(
        prepared.user_features, tables.items, liked_items=popular_horror, groups={"identity": 1.0, "taste": 1.0}
    )
    items, _ = hybrid.recommend_new_user(popular_horror, 10, user_features=row)
    assert not set(items) & set(popular_horror)
    baseline = _genre_share(tables, np.arange(len(tables.items)), "Horror")
    assert _genre_share(tables, items, "Horror") >= 0.6 > baseline


def test_identical_histories_give_identical_lists(prepared, hybrid):
    liked = prepared.train[0].indices
    first, _ = hybrid.recommend_new_user(liked, 10)
    again, _ = hybrid.recommend_new_user(liked.copy(), 10)
    np.testing.assert_array_equal(first, again)


def test_a_cold_item_is_recommended_to_users_of_its_genre(tables):
    chosen = cold_item_split(tables.ratings, item_share=0.1, seed=5)
    prepared = prepare(
        tables.users,
        tables.items,
        tables.tags,
        chosen=chosen,
        item_groups={"identity": 1.0, "genre": 1.0},
        user_groups={"identity": 1.0, "taste": 1.0},
    )
    model = build_model("hybrid", prepared, PARAMS)
    genres = tables.items.set_index("item_idx")["genres"]
    cold_horror = [item for item in chosen.cold_items if genres[item] == "Horror"]
    assert cold_horror, "the generated data should hold a cold Horror-only movie"
    taste = prepared.user_features.matrix[:, prepared.user_features.names.index("taste:Horror")].toarray().ravel()
    fans, others = np.argsort(-taste)[:30], np.argsort(taste)[:30]
    scores = model.scores(np.concatenate([fans, others]))
    ranks = (-scores).argsort(axis=1).argsort(axis=1)[:, cold_horror].mean(axis=1)
    # Horror fans rank the cold Horror movies much higher than users who never watch Horror.
    assert ranks[:30].mean() < 0.5 * ranks[30:].mean()
