"""The serving bundle: the same answers as the fitted model, in original ids, plus fallbacks, and
`holdout_metrics` measuring a bundle as served."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from ranking import assert_same_predictions, assert_same_ranking

from features.interactions import rating_matrix
from features.prepare import prepare
from features.splits import user_temporal_split
from features.users import new_user_features
from inference.model import ServingBundle
from models.bundle import serving_bundle
from models.evaluation import evaluate, holdout_metrics
from models.factorization import LightFMRecommender
from movierec.data.preprocess import canonicalize
from movierec.data.synthetic import generate

USER_GROUPS = {"identity": 1.0, "age": 0.5, "gender": 0.5, "occupation": 0.5, "taste": 1.0}


@pytest.fixture(scope="module")
def tables():
    return canonicalize(generate(6_000, seed=7), None)[0]


@pytest.fixture(scope="module")
def split(tables):
    return user_temporal_split(tables.ratings)


@pytest.fixture(scope="module")
def prepared(tables, split):
    return prepare(tables.users, tables.items, tables.tags, chosen=split, user_groups=USER_GROUPS)


@pytest.fixture(scope="module")
def hybrid(prepared):
    return LightFMRecommender(epochs=5, no_components=16).fit(
        prepared.train, item_features=prepared.item_features.matrix, user_features=prepared.user_features.matrix
    )


@pytest.fixture(scope="module")
def bundle(hybrid, prepared, tables):
    return serving_bundle(hybrid, prepared, tables.users, tables.items, USER_GROUPS)


def _liked(bundle, n=4):
    """Movies of one genre in the middle of the popularity list (so popularity differs)."""
    genres = bundle.items["genres"].to_numpy()
    middle = bundle.popularity[len(bundle.popularity) // 3 :]
    first = genres[middle[0]]
    return bundle.item_ids[[item for item in middle if genres[item] == first][:n]]


def test_known_users_get_the_models_lists_without_any_rated_movie(bundle, hybrid, prepared, tables):
    users = tables.users.sort_values("user_idx")
    movie_ids, scores, fallback = bundle.recommend_users(users["user_id"].to_numpy(), 10)
    # Served lists exclude every rated movie, the held-out part of the split included.
    rated = rating_matrix(tables.ratings, prepared.n_users, prepared.n_items)
    items, expected_scores = hybrid.recommend(users["user_idx"].to_numpy(), 10, exclude=rated)
    np.testing.assert_array_equal(movie_ids, bundle.item_ids[items])
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)
    assert not fallback.any() and movie_ids.dtype == np.int64 and scores.dtype == np.float32
    for user_idx, row in zip(users["user_idx"], movie_ids, strict=True):
        assert not set(row) & set(tables.ratings.loc[tables.ratings["user_idx"] == user_idx, "movie_id"])
    # What the model was trained on stays apart, for holdout evaluation.
    assert (bundle.trained != prepared.seen).nnz == 0 and bundle.seen.nnz == len(tables.ratings) > bundle.trained.nnz


def test_known_user_scores_are_the_models_scores(bundle, hybrid, prepared):
    user_idx = 5
    movie_ids, scores, _ = bundle.recommend_users([bundle.user_ids[user_idx]], bundle.n_items)
    valid = movie_ids[0] >= 0
    assert valid.sum() == bundle.n_items - bundle.seen[user_idx].nnz
    expected = hybrid.scores(np.array([user_idx]))[0][bundle.item_index(movie_ids[0][valid])]
    np.testing.assert_allclose(scores[0][valid], expected, rtol=1e-6)
    assert np.all(np.diff(scores[0][valid]) <= 0)


def test_unknown_users_get_popularity_with_the_fallback_flag(bundle):
    known = int(bundle.user_ids[3])
    movie_ids, scores, fallback = bundle.recommend_users([999_999, known, -5], 7)
    np.testing.assert_array_equal(fallback, [True, False, True])
    popular = bundle.item_ids[bundle.popularity[:7]]
    np.testing.assert_array_equal(movie_ids[0], popular)
    np.testing.assert_array_equal(movie_ids[2], popular)
    counts = bundle.popularity_counts[bundle.popularity[:7]]
    np.testing.assert_allclose(scores[0], counts / bundle.popularity_counts.max(), rtol=1e-6)
    alone, _, _ = bundle.recommend_users([known], 7)
    np.testing.assert_array_equal(movie_ids[1], alone[0])


def test_a_new_user_with_liked_movies_gets_the_models_feature_row_recommendations(bundle, hybrid, prepared, tables):
    liked = _liked(bundle)
    liked_idx = bundle.item_index(liked)
    demographics = {"age": 31, "gender": "F", "occupation": "programmer"}
    movie_ids, scores, fallback = bundle.recommend_new_user([*list(liked), 987654], demographics, 10)
    assert not fallback
    assert not set(movie_ids) & set(liked)
    assert list(movie_ids) != list(bundle.item_ids[bundle.popularity[:10]])

    row = new_user_features(
        prepared.user_features, tables.items, liked_items=liked_idx, demographics=demographics, groups=USER_GROUPS
    )
    assert (bundle.new_user_row(liked_idx, demographics) != row).nnz == 0
    items, expected = hybrid.recommend_new_user(liked_idx, 10, user_features=row)
    np.testing.assert_array_equal(movie_ids, bundle.item_ids[items])
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_a_new_user_known_only_by_demographics_uses_the_model(bundle, hybrid, prepared, tables):
    demographics = {"age": 52, "gender": "M", "occupation": None}
    movie_ids, _, fallback = bundle.recommend_new_user(None, demographics, 10)
    row = new_user_features(
        prepared.user_features,
        tables.items,
        liked_items=np.array([], dtype=np.int64),
        demographics={"age": 52, "gender": "M"},
        groups=USER_GROUPS,
    )
    assert row.nnz and not fallback
    np.testing.assert_array_equal(
        movie_ids, bundle.item_ids[hybrid.recommend_new_user(np.array([], dtype=np.int64), 10, user_features=row)[0]]
    )


def test_a_new_user_with_nothing_usable_falls_back_to_popularity(bundle):
    popular = bundle.item_ids[bundle.popularity[:5]]
    for liked, demographics in [([], None), ([123_456, 765_432], None), (None, {"occupation": "astronaut"})]:
        movie_ids, _scores, fallback = bundle.recommend_new_user(liked, demographics, 5)
        assert fallback
        np.testing.assert_array_equal(movie_ids, popular)
    # Known liked movies are still excluded from the fallback when they give no usable feature.
    mf_like = ServingBundle(
        **{
            **_fields(bundle),
            "user_feature_embeddings": None,
            "user_feature_biases": None,
            "user_feature_names": [],
            "user_feature_groups": {},
            "user_groups": None,
        }
    )
    movie_ids, _, fallback = mf_like.recommend_new_user([int(popular[0])], None, 5)
    assert not fallback and popular[0] not in movie_ids


def test_without_user_features_a_new_user_is_the_mean_of_liked_item_vectors(prepared, tables):
    mf = LightFMRecommender(epochs=5, no_components=16).fit(prepared.train)
    bundle = serving_bundle(mf, prepared, tables.users, tables.items, None)
    assert not bundle.has_user_features and bundle.user_feature_embeddings is None
    liked = _liked(bundle)
    movie_ids, scores, fallback = bundle.recommend_new_user(liked, {"age": 30}, 10)
    items, expected = mf.recommend_new_user(bundle.item_index(liked), 10)
    assert not fallback
    np.testing.assert_array_equal(movie_ids, bundle.item_ids[items])
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_similar_movies_are_the_models_similar_items_without_the_movie_itself(bundle, hybrid):
    movie = int(bundle.item_ids[bundle.popularity[0]])
    movie_ids, scores = bundle.similar_movies(movie, 10)
    assert movie not in movie_ids and np.all(np.diff(scores) <= 0) and scores[0] <= 1.0 + 1e-6
    items, expected = hybrid.similar_items(int(bundle.item_index([movie])[0]), 10)
    np.testing.assert_array_equal(movie_ids, bundle.item_ids[items])
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    with pytest.raises(KeyError, match="movie_id 424242 is not in the model's catalogue"):
        bundle.similar_movies(424_242, 5)


def test_predict_routes_each_request_and_formats_the_output(bundle):
    known = int(bundle.user_ids[0])
    liked = [int(movie) for movie in _liked(bundle, 3)]
    requests = pd.DataFrame(
        {
            "user_id": pd.array([known, None, 999_999, None, known], dtype="Int64"),
            "k": pd.array([3, 4, None, 2, 5], dtype="Int64"),
            "liked_movie_ids": [None, liked, None, [], [1]],
            "age": [np.nan, 25.0, np.nan, np.nan, 40.0],
            "gender": [None, "M", None, None, None],
            "occupation": [None, None, None, None, None],
        }
    )
    out = bundle.predict(requests, default_k=6)
    assert list(out.columns) == ["request", "user_id", "movie_id", "rank", "score", "source"]
    assert {c: str(t) for c, t in out.dtypes.items()} == {
        "request": "int64",
        "user_id": "Int64",
        "movie_id": "int64",
        "rank": "int64",
        "score": "float64",
        "source": "str",
    }
    assert out.groupby("request").size().to_dict() == {0: 3, 1: 4, 2: 6, 3: 2, 4: 5}
    for _, group in out.groupby("request"):
        assert group["rank"].tolist() == list(range(1, len(group) + 1))
        assert group["score"].is_monotonic_decreasing
    by_request = {r: g.reset_index(drop=True) for r, g in out.groupby("request")}
    # `predict` scored its two known rows in one product, `recommend_users` this one alone: float32
    # rounding may differ between the shapes, so lists match wherever scores are not tied.
    full = bundle.scores(bundle.user_index([known]))
    alone, alone_scores, _ = bundle.recommend_users([known], 5)

    def same_list(frame: pd.DataFrame, k: int) -> None:
        items = bundle.item_index(frame["movie_id"].to_numpy())[None, :]
        expected = bundle.item_index(alone[0][:k])[None, :]
        assert_same_ranking(items, frame["score"].to_numpy()[None, :], expected, alone_scores[:, :k], full)

    same_list(by_request[4], 5)
    same_list(by_request[0], 3)
    assert set(by_request[0]["source"]) == {"model"} and by_request[0]["user_id"].tolist() == [known] * 3
    new_user = bundle.recommend_new_user(liked, {"age": 25.0, "gender": "M"}, 4)
    np.testing.assert_array_equal(by_request[1]["movie_id"], new_user[0])
    assert set(by_request[1]["source"]) == {"model"} and by_request[1]["user_id"].isna().all()
    assert not set(by_request[1]["movie_id"]) & set(liked)
    for request in (2, 3):
        assert set(by_request[request]["source"]) == {"popularity"}
        np.testing.assert_array_equal(
            by_request[request]["movie_id"], bundle.item_ids[bundle.popularity[: len(by_request[request])]]
        )
    assert by_request[2]["user_id"].tolist() == [999_999] * 6

    # The same requests as dicts, and a frame without a user_id column.
    records = [{"user_id": known, "k": 3}, {"liked_movie_ids": liked, "k": 4, "age": 25, "gender": "M"}]
    assert_same_predictions(bundle.predict(records), out[out["request"] <= 1])
    anonymous = bundle.predict(pd.DataFrame({"k": [2]}))
    assert anonymous["source"].tolist() == ["popularity"] * 2 and anonymous["user_id"].isna().all()
    with pytest.raises(ValueError, match="user_id must be an integer"):
        bundle.predict(pd.DataFrame({"user_id": [1.5]}))
    with pytest.raises(ValueError, match="k must be positive"):
        bundle.predict(pd.DataFrame({"user_id": [known], "k": [0]}))


def test_holdout_metrics_equal_the_offline_evaluation_of_the_same_split(bundle, hybrid, prepared, split):
    # The same protocol seen from two sides: every test user is known to the bundle, the given
    # train pairs are exactly the bundle's seen items, and every test movie is in the catalogue.
    served = holdout_metrics(bundle, split.train, split.test, k=10, threshold=4)
    offline = evaluate(hybrid, prepared, k=10)
    for key in ("ndcg@10", "recall@10", "precision@10", "map@10", "mrr", "coverage@10", "novelty@10", "diversity@10"):
        assert served[key] == pytest.approx(offline[key], abs=1e-12), key
    assert served["n_users_evaluated"] == offline["n_users_evaluated"] > 0
    assert served["fallback_users"] == 0


# ---------------------------------------------------------------------- a bundle small enough to do by hand


def _fields(bundle: ServingBundle) -> dict:
    names = [
        "user_ids",
        "item_ids",
        "user_bias",
        "user_vectors",
        "item_bias",
        "item_vectors",
        "seen",
        "popularity",
        "popularity_counts",
        "items",
        "user_feature_embeddings",
        "user_feature_biases",
        "user_feature_names",
        "user_feature_groups",
        "user_groups",
    ]
    return {name: getattr(bundle, name) for name in names}


@pytest.fixture
def tiny() -> ServingBundle:
    """Users 1, 2, 3 and movies 10..50 (item_idx 0..4). Zero biases; user 1 scores movies
    5, 4, 3, 2, 1 (prefers 10), user 2 scores 1, 2, 3, 4, 5 (prefers 50), user 3 ties all.
    Seen in training: user 1 movie 10, user 2 movie 50. Popularity: 50, 20, 30, 10, 40."""
    counts = np.array([1, 3, 2, 0, 5])
    return ServingBundle(
        user_ids=np.array([1, 2, 3]),
        item_ids=np.array([10, 20, 30, 40, 50]),
        user_bias=np.zeros(3),
        user_vectors=np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]),
        item_bias=np.zeros(5),
        item_vectors=np.array([[5.0, 1.0], [4.0, 2.0], [3.0, 3.0], [2.0, 4.0], [1.0, 5.0]]),
        seen=sp.csr_matrix((np.array([4.0, 5.0]), (np.array([0, 1]), np.array([0, 4]))), shape=(3, 5)),
        popularity=np.argsort(-counts, kind="stable"),
        popularity_counts=counts,
        items=pd.DataFrame(
            {
                "movie_id": [10, 20, 30, 40, 50],
                "title": list("abcde"),
                "year": [1990] * 5,
                "genres": ["Drama", "Comedy", "Drama|Comedy", "Horror", "Action"],
            }
        ),
    )


def test_tiny_bundle_recommendations(tiny):
    movie_ids, scores, fallback = tiny.recommend_users([1, 2, 7], 2)
    np.testing.assert_array_equal(movie_ids, [[20, 30], [40, 30], [50, 20]])
    np.testing.assert_allclose(scores, [[4, 3], [4, 3], [1, 0.6]], rtol=1e-6)
    np.testing.assert_array_equal(fallback, [False, False, True])
    # Fewer eligible movies than k: padded in the arrays, left out by predict.
    assert tiny.recommend_users([1], 6)[0][0].tolist() == [20, 30, 40, 50, -1, -1]
    assert len(tiny.predict(pd.DataFrame({"user_id": [1], "k": [6]}))) == 4


def test_holdout_metrics_by_hand(tiny):
    train = pd.DataFrame(
        {"user_id": [1, 1, 2, 9, 9], "movie_id": [10, 20, 50, 50, 20], "rating": [4.0, 2.0, 5.0, 3.0, 4.0]}
    )
    test = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 9, 9, 3],
            "movie_id": [30, 60, 40, 30, 30, 10, 20],  # movie 60 is unknown to the bundle
            "rating": [5.0, 4.0, 2.0, 4.0, 5.0, 4.5, 3.0],
        }
    )
    metrics = holdout_metrics(tiny, train, test, k=2, threshold=4.0)
    # User 1: 10 seen, 20 a train pair -> [30, 40]; positives {30, 60}: DCG 1, ideal 1 + 1/log2(3).
    # (Without excluding the train pair the list would be [20, 30].)
    # User 2: 50 seen -> [40, 30]; positive {30}: DCG 1/log2(3), ideal 1.
    # User 9 (unknown): popularity without its train pairs 50, 20 -> [30, 10]; both positive: 1.
    # User 3 has no positive and is not evaluated.
    discount = 1 / np.log2(3)
    assert metrics["ndcg@2"] == pytest.approx((1 / (1 + discount) + discount + 1.0) / 3)
    assert metrics["recall@2"] == pytest.approx((1 / 2 + 1 + 1) / 3)
    assert metrics["precision@2"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert metrics["mrr"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    assert metrics["coverage@2"] == pytest.approx(3 / 5)  # 30, 40, 10
    assert metrics["n_users_evaluated"] == 3
    assert metrics["fallback_users"] == 1
