import pandas as pd

from movierec.data.tmdb import join_tmdb, title_key


def test_title_key_ignores_case_accents_punctuation_and_articles():
    assert title_key("The Shawshank Redemption") == "shawshank redemption"
    assert title_key("Amélie") == "amelie"
    assert title_key("Mr. & Mrs. Smith") == "mr and mrs smith"


TMDB = pd.DataFrame(
    {
        "tmdb_id": [862, 278, 999],
        "title": ["Toy Story", "The Shawshank Redemption", "Toy Story"],
        "original_title": ["Toy Story", "The Shawshank Redemption", "Toy Story"],
        "year": pd.array([1995, 1994, 2010], dtype="Int64"),
        "overview": ["toys", "prison", "remake"],
        "keywords": ["toy", "prison", None],
        "cast": ["Tom Hanks", "Tim Robbins", None],
        "director": ["John Lasseter", "Frank Darabont", None],
        "runtime": [81.0, 142.0, 90.0],
        "original_language": ["en", "en", "en"],
    }
)


def _items(tmdb_ids):
    return pd.DataFrame(
        {
            "movie_id": [1, 2, 3],
            "title": ["Toy Story", "The Shawshank Redemption", "Heat"],
            "year": pd.array([1995, 1994, 1995], dtype="Int64"),
            "tmdb_id": pd.array(tmdb_ids, dtype="Int64"),
        }
    )


def test_join_by_links_uses_tmdb_id():
    items, stats = join_tmdb(_items([862, 278, 12345]), TMDB)
    assert stats == {"method": "links.csv tmdbId", "matched": 2, "items": 3, "match_rate": 0.6667}
    assert items.set_index("movie_id").loc[2, "director"] == "Frank Darabont"
    assert pd.isna(items.set_index("movie_id").loc[3, "overview"])


def test_join_by_title_and_year_when_there_are_no_links():
    items, stats = join_tmdb(_items([None, None, None]), TMDB)
    assert stats["method"] == "normalised title + year"
    assert stats["matched"] == 2
    by_id = items.set_index("movie_id")
    # The 2010 "Toy Story" has the same title but another year: not a match.
    assert by_id.loc[1, "tmdb_id"] == 862 and by_id.loc[1, "overview"] == "toys"
    assert pd.isna(by_id.loc[3, "tmdb_id"])


def test_title_match_tolerates_one_year_and_shares_a_tmdb_movie_between_duplicates():
    tmdb = TMDB.assign(year=pd.array([1996, 1994, 2010], dtype="Int64"))
    items = pd.DataFrame(
        {
            "movie_id": [1, 2, 3],
            "title": ["Toy Story", "The Shawshank Redemption", "Shawshank Redemption, The"],
            "year": pd.array([1995, 1994, 1994], dtype="Int64"),
            "tmdb_id": pd.array([None, None, None], dtype="Int64"),
        }
    )
    enriched, stats = join_tmdb(items, tmdb)
    assert stats["matched"] == 3
    assert enriched.set_index("movie_id")["tmdb_id"].tolist() == [862, 278, 278]
