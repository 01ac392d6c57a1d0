"""Behaviour of the baseline recommenders on a generated MovieLens-shaped dataset."""

import numpy as np
import pytest
import scipy.sparse as sp

from features.items import item_features
from models.baselines import EASE, ContentBased, ItemKNN, Popularity, UserKNN

K = 10


@pytest.fixture(scope="module")
def data():
    from movierec.data.preprocess import canonicalize
    from movierec.data.synthetic import generate

    tables = canonicalize(generate(30_000, seed=3), None)[0]
    positives = tables.ratings[tables.ratings["rating"] >= 4]
    shape = (len(tables.users), len(tables.items))
    matrix = sp.csr_matrix(
        (np.ones(len(positives), np.float32), (positives["user_idx"], positives["item_idx"])), shape=shape
    )
    items = tables.items.sort_values("item_idx").reset_index(drop=True)
    genres = [set(value.split("|")) - {""} for value in items["genres"]]
    # The FeatureMatrix itself, as models.families gives it: ContentBased uses its groups.
    features = item_features(items, groups={"genre": 1.0, "year": 0.5})
    popularity = np.bincount(matrix.indices, minlength=shape[1])
    return matrix, genres, features, popularity


def _models(features):
    return [Popularity(), ItemKNN(), EASE(), UserKNN(), ContentBased(features)]


def _row(items, n_items):
    return sp.csr_matrix((np.ones(len(items), np.float32), (np.zeros(len(items), np.int64), items)), shape=(1, n_items))


def _horror_only(genres, popularity):
    """Movies whose only genre is Horror, most popular first (ties: lower index)."""
    pure = np.array([index for index, value in enumerate(genres) if value == {"Horror"}])
    return pure[np.argsort(-popularity[pure], kind="stable")]


def _with_users(matrix, *rows):
    return sp.vstack([matrix, *rows], format="csr")


def test_seen_items_are_never_recommended_and_identical_histories_match(data):
    matrix, _, features, _ = data
    twin = matrix[5]
    assert twin.nnz > 0
    train = _with_users(matrix, twin, twin)
    first, second = train.shape[0] - 2, train.shape[0] - 1
    users = np.arange(train.shape[0])
    for model in _models(features):
        items, _ = model.fit(train).recommend(users, K, exclude=train)
        assert items.shape == (len(users), K)
        for user in users:
            row = items[user]
            assert not set(row[row >= 0].tolist()) & set(train[user].indices.tolist()), (model.name, user)
        assert items[first].tolist() == items[second].tolist(), model.name
        # Deterministic: a second fit gives the same lists.
        again, _ = (
            type(model)(**({"item_features": features} if isinstance(model, ContentBased) else {}))
            .fit(train)
            .recommend(users[-20:], K, exclude=train)
        )
        np.testing.assert_array_equal(again, items[-20:])


def test_a_horror_fan_gets_mostly_horror(data):
    matrix, genres, features, popularity = data
    pure = _horror_only(genres, popularity)
    liked = pure[popularity[pure] > 0]
    assert len(liked) >= 10
    train = _with_users(matrix, _row(liked, matrix.shape[1]))
    fan = np.array([train.shape[0] - 1])

    def horror_share(model):
        items, _ = model.fit(train).recommend(fan, K, exclude=train)
        return np.mean(["Horror" in genres[item] for item in items[0] if item >= 0])

    baseline = horror_share(Popularity())
    item_knn = horror_share(ItemKNN())
    content = horror_share(ContentBased(features))
    assert item_knn >= 0.6, item_knn
    assert content >= 0.9, content
    assert baseline < 0.3 and item_knn > baseline and content > baseline


@pytest.mark.parametrize("genre", ["Horror", "Animation", "Comedy", "Sci-Fi"])
def test_a_one_genre_fan_gets_that_genres_movies_first_cold_ones_included(data, genre):
    matrix, genres, features, popularity = data
    pure = np.array([index for index, value in enumerate(genres) if value == {genre}])
    liked = pure[popularity[pure] > 0]
    cold = pure[popularity[pure] == 0]  # nobody liked them: no training data in `train`
    assert len(liked) >= 10 and len(cold) >= 1
    train = _with_users(matrix, _row(liked, matrix.shape[1]))
    fan = np.array([train.shape[0] - 1])

    content = ContentBased(features).fit(train)
    scores = content.scores(fan)[0]
    assert np.isfinite(scores).all() and np.all(scores[cold] != 0.0)
    # Every unseen movie of only that genre, cold ones included, outranks every movie without it.
    other = np.array([genre not in value for value in genres])
    assert scores[cold].min() > scores[other].max()
    items, _ = content.recommend(fan, K, exclude=train)
    assert all(genre in genres[item] for item in items[0]), [genres[item] for item in items[0]]
    # The same for a new user known only by those liked movies.
    new_user = content.new_user_scores(liked)
    np.testing.assert_allclose(new_user, scores, rtol=1e-5, atol=1e-6)
    # Collaborative models know nothing about a cold item.
    item_knn = ItemKNN().fit(train)
    assert np.all(item_knn.scores(fan)[0, cold] == 0.0)


def test_a_new_user_gets_their_genres_more_than_from_popularity(data):
    matrix, genres, features, popularity = data
    animation = np.array([index for index, value in enumerate(genres) if "Animation" in value])
    liked = animation[np.argsort(-popularity[animation], kind="stable")][:5]
    liked_genres = set().union(*(genres[item] for item in liked))

    def overlap(model):
        items, _ = model.fit(matrix).recommend_new_user(liked, K)
        assert not set(items.tolist()) & set(liked.tolist())
        return np.mean([len(genres[item] & liked_genres) / max(len(genres[item]), 1) for item in items if item >= 0])

    baseline = overlap(Popularity())
    for model in [ItemKNN(), EASE(), UserKNN(), ContentBased(features)]:
        assert overlap(model) > baseline, model.name


def test_content_based_similar_items_share_genres(data):
    matrix, genres, features, popularity = data
    model = ContentBased(features).fit(matrix)
    for movie in np.argsort(-popularity, kind="stable")[:5]:
        similar, scores = model.similar_items(int(movie), K)
        assert movie not in similar
        assert all(genres[item] & genres[movie] for item in similar), (movie, genres[movie])
        assert np.all(np.diff(scores) <= 0)
