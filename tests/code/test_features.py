import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from features.items import item_features, train_tags
from features.tables import GENRES
from features.users import new_user_features, user_features
from inference.model import age_bucket, taste
from movierec.data.preprocess import canonicalize

T = pd.Timestamp


def _items():
    return pd.DataFrame(
        {
            "movie_id": [10, 20, 30],
            "item_idx": [0, 1, 2],
            "genres": ["Horror", "Comedy|Drama", ""],
            "year": pd.array([1994, 2003, None], dtype="Int64"),
            "overview": ["a haunted house of ghosts", "a funny family wedding", None],
            "keywords": ["ghost|house", "wedding", None],
            "cast": [None, None, None],
            "director": ["Wes Craven", None, "Wes Craven"],
            "original_language": ["en", "fr", None],
        }
    )


def test_item_groups_values_and_l1_rows():
    features = item_features(_items(), groups={"genre": 1.0, "year": 1.0, "director": 2.0}, min_count=1)
    assert features.names == [
        "genre:Comedy",
        "genre:Drama",
        "genre:Horror",
        "year:1990s",
        "year:2000s",
        "director:Wes Craven",
    ]
    dense = features.matrix.toarray()
    # Item 0: Horror (1) + 1990s (1) + director weight 2 -> 1/4, 1/4, 2/4.
    np.testing.assert_allclose(dense[0], [0, 0, 0.25, 0.25, 0, 0.5])
    # Item 2: no genre, no year, only the director.
    np.testing.assert_allclose(dense[2], [0, 0, 0, 0, 0, 1.0])
    np.testing.assert_allclose(dense.sum(axis=1), 1.0)
    assert features.groups == {"genre": (0, 2 + 1), "year": (3, 5), "director": (5, 6)}


def test_vocabularies_are_fitted_on_training_items_only():
    features = item_features(_items(), groups={"keyword": 1.0, "text": 1.0}, fit_items=np.array([1]), min_count=1)
    assert [n for n in features.names if n.startswith("keyword:")] == ["keyword:wedding"]
    text = [n for n in features.names if n.startswith("text:")]
    assert "text:wedding" in text and "text:ghosts" not in text


def test_switched_off_groups_and_unknown_groups():
    features = item_features(_items(), groups={"identity": 1.0, "genre": 0.0})
    assert features.names == ["item:10", "item:20", "item:30"]
    with pytest.raises(ValueError, match="unknown item feature groups"):
        item_features(_items(), groups={"colour": 1.0})


def test_train_tags_drop_held_out_pairs_and_tags_after_the_cutoff():
    train = pd.DataFrame(
        {
            "user_id": [1, 1, 2],
            "movie_id": [10, 20, 10],
            "timestamp": [T("2000-01-01", tz="UTC"), T("2000-02-01", tz="UTC"), T("2001-01-01", tz="UTC")],
        }
    )
    test = pd.DataFrame({"user_id": [1], "movie_id": [30]})
    tags = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 3],
            "movie_id": [10, 30, 20, 10, 10],
            "tag": ["scary", "leaked", "late", "ok", "stranger"],
            "timestamp": [
                T(x, tz="UTC") for x in ("2000-01-05", "2000-01-10", "2000-03-01", "2000-06-01", "2000-01-01")
            ],
        }
    )
    kept = train_tags(tags, train, test)
    # "leaked" is on a test pair, "late" after user 1's last training rating, user 3 has no training ratings.
    assert sorted(kept["tag"]) == ["ok", "scary"]


def test_test_interactions_never_reach_features(small_raw):
    """Whatever the test split holds, the features built for training are unchanged by it."""
    tables = canonicalize(small_raw, None)[0]
    ratings = tables.ratings.sort_values("timestamp")
    train, test = ratings.iloc[: len(ratings) * 4 // 5], ratings.iloc[len(ratings) * 4 // 5 :]
    fit_items = train["item_idx"].unique()
    groups = {"identity": 1.0, "genre": 1.0, "tag": 1.0, "text": 1.0}
    built = item_features(tables.items, tags=train_tags(tables.tags, train, test), fit_items=fit_items, groups=groups)
    # Tags made on test pairs and any later tags are spoiled: features must not move.
    spoiled = tables.tags.copy()
    later = spoiled["timestamp"] > train["timestamp"].max()
    spoiled.loc[later, "tag"] = "spoiler"
    extra = test.iloc[:50][["user_id", "movie_id", "timestamp"]].assign(tag="spoiler")
    spoiled = pd.concat([spoiled, extra], ignore_index=True)
    again = item_features(tables.items, tags=train_tags(spoiled, train, test), fit_items=fit_items, groups=groups)
    assert built.names == again.names
    assert (built.matrix != again.matrix).nnz == 0
    assert not any("spoiler" in name for name in again.names)


def test_item_features_are_deterministic(small_raw):
    tables = canonicalize(small_raw, None)[0]
    first = item_features(tables.items, tags=tables.tags)
    second = item_features(tables.items.sample(frac=1, random_state=1), tags=tables.tags.sample(frac=1, random_state=2))
    assert first.names == second.names
    assert (first.matrix != second.matrix).nnz == 0


def test_age_buckets():
    assert [age_bucket(a) for a in (7, 18, 24, 25, 49, 50, 56, 73)] == [
        ["under 18"],
        ["18-24"],
        ["18-24"],
        ["25-34"],
        ["45-49"],
        ["50-55"],
        ["56+"],
        ["56+"],
    ]
    assert age_bucket(None) == []


def _users():
    return pd.DataFrame(
        {
            "user_id": [1, 2],
            "user_idx": [0, 1],
            "age": pd.array([30, None], dtype="Int64"),
            "gender": ["F", None],
            "occupation": ["writer", "artist"],
        }
    )


def test_taste_is_genre_share_of_positives():
    interactions = sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 0]], dtype=np.float32))
    shares = taste(
        interactions, item_features(_items(), groups={"genre": 1.0}).matrix.astype(bool).astype(np.float32)
    ).toarray()
    # User 0 liked a Horror film and a Comedy|Drama film: 1/3 each.
    np.testing.assert_allclose(shares[0], [1 / 3] * 3)
    assert shares[1].sum() == 0


def test_user_features_and_a_new_user_in_the_same_space():
    interactions = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32))
    features = user_features(_users(), interactions, _items(), groups={"age": 1.0, "gender": 1.0, "taste": 1.0})
    horror = features.names.index("taste:Horror")
    assert features.matrix[0, horror] > 0 and features.matrix[1, horror] == 0
    assert features.matrix[0, features.names.index("age:25-34")] > 0
    row = new_user_features(
        features,
        _items(),
        liked_items=np.array([0]),
        demographics={"age": 31, "gender": "F", "occupation": "astronaut"},
        groups={"age": 1.0, "gender": 1.0, "taste": 1.0},
    )
    dense = row.toarray().ravel()
    np.testing.assert_allclose(dense.sum(), 1.0, rtol=1e-6)
    # Taste 1 (all Horror) + age 1 + gender 1, normalised; the unknown occupation is ignored.
    assert dense[horror] == pytest.approx(1 / 3)
    assert dense[features.names.index("age:25-34")] == pytest.approx(1 / 3)
    assert len(GENRES) == sum(name.startswith("taste:") for name in features.names)
