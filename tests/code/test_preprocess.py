import numpy as np
import pandas as pd
import pytest

from movierec.data.preprocess import (
    build_items,
    build_tags,
    build_users,
    canonicalize,
    dedupe_ratings,
    normalise_genres,
    parse_title,
    utc_seconds,
)
from movierec.data.schema import RatingScale, RawDataset


@pytest.mark.parametrize(
    ("published", "title", "year"),
    [
        ("Toy Story (1995)", "Toy Story", 1995),
        ("Shawshank Redemption, The (1994)", "The Shawshank Redemption", 1994),
        (
            "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
            "The City of Lost Children (Cité des enfants perdus, La)",
            1995,
        ),
        ("Seven (a.k.a. Se7en) (1995)", "Seven (a.k.a. Se7en)", 1995),
        ("Misérables, Les (1995)", "Les Misérables", 1995),
        ("Enfer, L' (1994)", "L'Enfer", 1994),
        ("Babylon 5", "Babylon 5", None),
        ("Big Bang Theory, The (2007-)", "The Big Bang Theory", 2007),
        ("Hyena Road (2015) ", "Hyena Road", 2015),
        ("1900 (Novecento) (1976)", "1900 (Novecento)", 1976),
        ("unknown", "unknown", None),
    ],
)
def test_parse_title(published, title, year):
    assert parse_title(published) == (title, year)


@pytest.mark.parametrize(
    ("published", "expected"),
    [
        ("Comedy|Animation|Children's", "Animation|Children|Comedy"),
        ("(no genres listed)", ""),
        ("unknown", ""),
        ("unknown|Drama", "Drama"),
        ("", ""),
        (None, ""),
        ("Drama|Drama", "Drama"),
    ],
)
def test_normalise_genres(published, expected):
    assert normalise_genres(published) == expected


def test_dedupe_keeps_latest_rating_per_pair_and_sorts():
    ratings = pd.DataFrame(
        {
            "user_id": [2, 1, 1, 1, 2],
            "movie_id": [5, 9, 3, 9, 5],
            "rating": [1.0, 2.0, 3.0, 4.0, 5.0],
            "timestamp": [50, 20, 10, 10, 40],
        }
    )
    kept, dropped = dedupe_ratings(ratings)
    assert dropped == 2
    assert kept[["user_id", "movie_id", "rating"]].values.tolist() == [[1, 3, 3.0], [1, 9, 2.0], [2, 5, 1.0]]


def test_timestamps_become_utc_seconds():
    converted = utc_seconds(pd.Series([0, 881250949]))
    assert str(converted.dtype) == "datetime64[s, UTC]"
    assert converted.iloc[1] == pd.Timestamp("1997-12-04 15:55:49", tz="UTC")


def test_items_fall_back_to_release_year_and_keep_original_ids():
    movies = pd.DataFrame(
        {
            "movie_id": [30, 10],
            "title": ["unknown", "Toy Story (1995)"],
            "genres": ["unknown", "Animation|Children's"],
            "release_date": pd.to_datetime([None, "1995-01-01"], utc=True),
        }
    )
    items = build_items(movies)
    assert items["movie_id"].tolist() == [10, 30]
    assert items["year"].tolist()[0] == 1995 and pd.isna(items["year"].iloc[1])
    assert items["genres"].tolist() == ["Animation|Children", ""]


def test_users_without_demographics_and_unlisted_raters():
    listed = pd.DataFrame(
        {
            "user_id": [1, 3],
            "age": [24, 53],
            "gender": ["M", "F"],
            "occupation": ["writer", "other"],
            "zip_code": ["85711", "94043"],
        }
    )
    users = build_users(listed, np.array([3, 2, 2]))
    assert users["user_id"].tolist() == [1, 2, 3]
    assert users["age"].isna().tolist() == [False, True, False]
    bare = build_users(None, np.array([7, 5]))
    assert bare["user_id"].tolist() == [5, 7] and bare["gender"].isna().all()


def test_tags_are_trimmed_deduplicated_and_empty_ones_counted():
    tags = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2],
            "movie_id": [5, 5, 5, 6],
            "tag": [" funny ", "funny", "  ", None],
            "timestamp": [10, 10, 11, 12],
        }
    )
    frame, counts = build_tags(tags)
    assert frame["tag"].tolist() == ["funny"]
    assert counts == {"empty_tags_dropped": 2, "duplicate_tags_dropped": 1}


def test_canonicalize_indices_are_contiguous_and_consistent(small_raw):
    tables, report = canonicalize(small_raw, None)
    ratings, users, items = tables.ratings, tables.users, tables.items
    assert items["item_idx"].tolist() == list(range(len(items)))
    assert users["user_idx"].tolist() == list(range(len(users)))
    joined = ratings.merge(items[["movie_id", "item_idx"]], on="movie_id", suffixes=("", "_items"))
    assert (joined["item_idx"] == joined["item_idx_items"]).all()
    joined = ratings.merge(users[["user_id", "user_idx"]], on="user_id", suffixes=("", "_users"))
    assert (joined["user_idx"] == joined["user_idx_users"]).all()
    assert report["rating_scale"] == {"min": 0.5, "max": 5.0, "step": 0.5}
    assert report["duplicate_ratings_dropped"] == 0
    assert len(ratings) == len(small_raw.ratings)


def test_canonicalize_reports_missing_values_per_column():
    raw = RawDataset(
        name="tiny",
        ratings=pd.DataFrame(
            {
                "user_id": [1, 1, 2],
                "movie_id": [1, 2, 1],
                "rating": [4.0, 3.0, 5.0],
                "timestamp": [900000000, 900000001, 900000002],
            }
        ),
        movies=pd.DataFrame(
            {"movie_id": [1, 2], "title": ["A (1990)", "B"], "genres": ["Drama", "(no genres listed)"]}
        ),
        rating_scale=RatingScale(1, 5, 1),
    )
    _tables, report = canonicalize(raw, None)
    assert report["titles_without_year"] == 1
    assert report["items_without_genre"] == 1
    assert report["missing"]["items"]["year"] == 1
    assert report["missing"]["users"]["gender"] == 2
