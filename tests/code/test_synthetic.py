"""The synthetic generator: its contract (the `RawDataset` shapes), and structure a recommender
can learn (popularity, genre tastes, genre-bearing text)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from features.tables import GENRES
from movierec.data.synthetic import FIRST_SECOND, LAST_SECOND, default_sizes, generate


@pytest.fixture(scope="module")
def medium():
    return generate(50_000, seed=11)


@pytest.mark.parametrize(
    ("n_ratings", "kwargs"),
    [(1_000, {}), (7_777, {}), (40_000, {}), (3_000, {"n_users": 60, "n_items": 400}), (500, {"n_users": 100})],
)
def test_exact_count_of_unique_pairs(n_ratings, kwargs):
    raw = generate(n_ratings, seed=3, **kwargs)
    ratings = raw.ratings
    assert len(ratings) == n_ratings
    assert not ratings.duplicated(["user_id", "movie_id"]).any()
    assert not ratings.isna().any().any()
    per_user = ratings.groupby("user_id").size()
    assert per_user.min() >= 5
    assert len(per_user) == raw.source["n_users"] == len(raw.users)
    assert len(raw.movies) == raw.source["n_items"]
    if "n_users" in kwargs:
        assert raw.source["n_users"] == kwargs["n_users"]


def test_default_sizes_follow_movielens_proportions():
    users, items = default_sizes(1_000)
    assert 30 <= users <= 50 and 100 <= items <= 300
    users, items = default_sizes(25_000_000)
    assert 140_000 <= users <= 180_000 and 50_000 <= items <= 70_000
    users, items = default_sizes(100_000)
    assert 500 <= users <= 3_000 and 1_500 <= items <= 10_000


def test_contract_columns_and_dtypes(medium):
    assert medium.name == "synthetic"
    assert (medium.rating_scale.min, medium.rating_scale.max, medium.rating_scale.step) == (0.5, 5.0, 0.5)
    assert medium.files == {}
    assert medium.source == {
        "kind": "synthetic", "n_ratings": 50_000, "n_users": medium.source["n_users"],
        "n_items": medium.source["n_items"], "seed": 11, "generator_version": 1,
    }  # fmt: skip
    assert medium.ratings.dtypes.astype(str).to_dict() == {
        "user_id": "int64", "movie_id": "int64", "rating": "float64", "timestamp": "int64",
    }  # fmt: skip
    movies = medium.movies
    assert list(movies.columns) == ["movie_id", "title", "genres", "release_date", "imdb_id", "tmdb_id", "overview"]
    assert movies["movie_id"].dtype == "int64"
    assert str(movies["release_date"].dtype) == "datetime64[ns, UTC]"
    for column in ("imdb_id", "tmdb_id"):
        assert movies[column].dtype == "Int64" and movies[column].isna().all()
    for column in ("title", "genres", "overview"):
        assert pd.api.types.is_string_dtype(movies[column]) and movies[column].notna().all()
    users = medium.users
    assert list(users.columns) == ["user_id", "age", "gender", "occupation", "zip_code"]
    assert users["user_id"].dtype == "int64" and users["age"].dtype == "Int64"
    assert medium.tags.dtypes.astype(str).to_dict() == {
        "user_id": "int64", "movie_id": "int64", "tag": "str", "timestamp": "int64",
    }  # fmt: skip


def test_same_seed_same_data_and_other_seed_other_data():
    first, again, other = generate(4_000, seed=5), generate(4_000, seed=5), generate(4_000, seed=6)
    for name in ("ratings", "movies", "users", "tags"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(again, name))
    assert not first.ratings.equals(other.ratings)
    assert not first.movies["title"].equals(other.movies["title"])
    assert not first.users.equals(other.users)


def test_ratings_on_the_half_star_grid_and_times_in_range(medium):
    ratings = medium.ratings
    assert set(ratings["rating"].unique()) <= set(medium.rating_scale.values())
    assert ratings["rating"].nunique() == 10  # half and whole stars both used
    assert 3.2 < ratings["rating"].mean() < 3.8  # MovieLens: about 3.5
    assert ratings["timestamp"].between(FIRST_SECOND, LAST_SECOND).all()
    assert ratings["timestamp"].min() < FIRST_SECOND + 3 * 365 * 86_400  # spread over the years
    assert ratings["timestamp"].max() > LAST_SECOND - 3 * 365 * 86_400


def test_references_resolve_and_ids_look_like_movielens(medium):
    ratings, movies, users = medium.ratings, medium.movies, medium.users
    assert movies["movie_id"].is_unique and users["user_id"].is_unique
    assert ratings["movie_id"].isin(movies["movie_id"]).all()
    assert ratings["user_id"].isin(users["user_id"]).all()
    assert users["user_id"].tolist() == list(range(1, len(users) + 1))
    assert movies["movie_id"].min() == 1
    assert movies["movie_id"].max() > 1.5 * len(movies)  # gaps, as in MovieLens
    # Nobody rates a movie before it is released.
    release = ratings["movie_id"].map(movies.set_index("movie_id")["release_date"])
    assert (ratings["timestamp"] >= release.astype("int64") // 10**9).all()


def test_tags_are_on_rated_movies_after_the_rating(medium):
    tags = medium.tags
    assert 0.02 * len(medium.ratings) <= len(tags) <= 0.05 * len(medium.ratings)
    joined = tags.merge(medium.ratings, on=["user_id", "movie_id"], suffixes=("_tag", "_rating"), how="left")
    assert joined["rating"].notna().all()
    assert (joined["timestamp_tag"] >= joined["timestamp_rating"]).all()
    assert (tags["timestamp"] <= LAST_SECOND).all()
    assert tags["tag"].str.len().gt(0).all()
    assert tags["user_id"].nunique() < 0.3 * len(medium.users)  # a minority of users tag


def test_movies_look_like_movielens(medium):
    movies = medium.movies
    assert movies["title"].str.fullmatch(r"[A-Z][A-Za-z ]*( \d)?(, (The|A))? \(\d{4}\)").all()
    assert movies["title"].str.contains(", The (", regex=False).any()
    years = movies["title"].str.extract(r"\((\d{4})\)$")[0].astype(int)
    assert (years == movies["release_date"].dt.year).all()
    assert years.between(1902, 2023).all()
    genre_lists = movies["genres"].str.split("|")
    listed = genre_lists[movies["genres"] != "(no genres listed)"]
    assert listed.map(len).between(1, 3).all()
    assert listed.map(lambda names: set(names) <= set(GENRES)).all()
    assert listed.map(lambda names: names == sorted(names)).all()
    assert (movies["genres"] == "(no genres listed)").sum() <= 0.01 * len(movies)


def test_users_look_like_movielens(medium):
    users = medium.users
    assert users["age"].between(7, 73).all() and 25 < users["age"].mean() < 40
    assert set(users["gender"]) == {"M", "F"}
    assert set(users["occupation"]) <= {
        "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
        "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
        "retired", "salesman", "scientist", "student", "technician", "writer",
    }  # fmt: skip
    assert users["zip_code"].str.fullmatch(r"\d{5}").all()


def test_popularity_and_activity_are_long_tailed(medium):
    per_movie = medium.ratings["movie_id"].value_counts()
    top_tenth = per_movie.iloc[: len(medium.movies) // 10].sum()
    assert top_tenth > 0.4 * len(medium.ratings)
    per_user = medium.ratings.groupby("user_id").size()
    assert per_user.max() > 8 * per_user.median()
    assert per_user.mean() > 1.3 * per_user.median()


def test_overviews_carry_genre_signal(medium):
    """A nearest-centroid genre classifier on TF-IDF of overviews, fitted on half the
    single-genre movies, labels the other half far better than chance."""
    single = medium.movies[medium.movies["genres"].isin(GENRES)].reset_index(drop=True)
    features = TfidfVectorizer().fit_transform(single["overview"])
    labels = single["genres"].to_numpy()
    train = np.arange(len(single)) % 2 == 0
    genres = np.unique(labels[train])
    centroids = np.vstack([np.asarray(features[train & (labels == g)].mean(axis=0)) for g in genres])
    predicted = genres[np.asarray(features[~train] @ centroids.T).argmax(axis=1)]
    assert (predicted == labels[~train]).mean() > 0.8


def test_genre_taste_is_learnable(medium):
    """Each user's last 20% of ratings (by time) are held out. Scoring unseen movies by training
    popularity times the user's genre shares among their training positives must find held-out
    positives (rating >= 4) clearly better than popularity alone."""
    ratings = medium.ratings.sort_values(["user_id", "timestamp", "movie_id"], kind="stable")
    movies = medium.movies
    user = ratings["user_id"].to_numpy() - 1
    item = pd.Index(movies["movie_id"]).get_indexer(ratings["movie_id"])
    position = ratings.groupby("user_id").cumcount().to_numpy()
    count = ratings.groupby("user_id")["movie_id"].transform("size").to_numpy()
    held_out = position >= np.ceil(0.8 * count)
    positive = ratings["rating"].to_numpy() >= 4

    n_users, n_items = len(medium.users), len(movies)
    genre_matrix = np.column_stack([movies["genres"].str.split("|").map(lambda gs, g=g: g in gs) for g in GENRES])
    genre_matrix = genre_matrix / np.maximum(genre_matrix.sum(axis=1, keepdims=True), 1)
    train = ~held_out
    popularity = np.bincount(item[train], minlength=n_items).astype(float)
    shares = np.zeros((n_users, len(GENRES)))
    np.add.at(shares, user[train & positive], genre_matrix[item[train & positive]])
    shares /= np.maximum(shares.sum(axis=1, keepdims=True), 1e-12)

    seen = np.zeros((n_users, n_items), dtype=bool)
    seen[user[train], item[train]] = True
    relevant = np.zeros((n_users, n_items), dtype=bool)
    relevant[user[held_out & positive], item[held_out & positive]] = True
    evaluated = relevant.any(axis=1)
    assert evaluated.sum() > 0.5 * n_users

    def hit_rate_and_recall(scores):
        scores = np.where(seen, -np.inf, scores)
        top = np.argsort(-scores, axis=1)[:, :10]
        hits = np.take_along_axis(relevant, top, axis=1).sum(axis=1)[evaluated]
        return (hits > 0).mean(), (hits / relevant.sum(axis=1)[evaluated]).mean()

    pop_hit_rate, pop_recall = hit_rate_and_recall(np.broadcast_to(popularity, seen.shape))
    taste_hit_rate, taste_recall = hit_rate_and_recall(popularity * (shares @ genre_matrix.T))
    assert pop_hit_rate > 0.2  # popularity is a real signal, too
    assert taste_hit_rate > pop_hit_rate + 0.07
    assert taste_recall > 1.25 * pop_recall


@pytest.mark.parametrize(
    "kwargs",
    [{"n_ratings": 4}, {"n_ratings": 1_000, "n_users": 300}, {"n_ratings": 1_000, "n_items": 10},
     {"n_ratings": 10_000, "n_users": 10, "n_items": 100}],
)  # fmt: skip
def test_impossible_sizes_are_refused(kwargs):
    with pytest.raises(ValueError):
        generate(**kwargs)
