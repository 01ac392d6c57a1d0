"""Raw dataset -> canonical tables. Pure functions: DataFrames in, DataFrames and counts out.

Policies, each a function below: a (user, movie) rated more than once keeps its latest rating;
titles lose their "(year)" and get their trailing article back in front; genre spellings are
unified across MovieLens releases; timestamps become UTC datetimes; every table keeps its
original ids beside contiguous 0-based indices (`user_idx`, `item_idx`) sorted by original id.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from features.tables import GENRES, CanonicalTables
from movierec.data.schema import RawDataset, empty_frame
from movierec.data.tmdb import TMDB_FIELDS, join_tmdb

# "Title (1995)", "Title (2006-2007)" or "Title (2006– )" for series; spaces may trail.
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-–]\s*(?:\d{4})?\s*)?\)\s*$")
# "Shawshank Redemption, The" or, with an alternative title, "City of Lost Children, The (Cité ...)".
_TRAILING_ARTICLE = re.compile(
    r"^(?P<main>.+?), (?P<article>The|A|An|Les|Le|La|L'|Il|El|Los|Las|Das|Der|Die|Det|Den|Une|Un)"
    r"(?P<rest>\s+\(.*\))?$"
)
GENRE_ALIASES = {"Children's": "Children"}
DEMOGRAPHICS = ("age", "gender", "occupation", "zip_code")
NO_GENRE = {"(no genres listed)", "unknown", ""}
_GENRE_ORDER = {genre: position for position, genre in enumerate(GENRES)}


def parse_title(published: str) -> tuple[str, int | None]:
    """'Shawshank Redemption, The (1994)' -> ('The Shawshank Redemption', 1994)."""
    text = published.strip()
    year = None
    match = _TITLE_YEAR.match(text)
    if match:
        text, year = match.group("title"), int(match.group("year"))
    article = _TRAILING_ARTICLE.match(text)
    if article:
        joiner = "" if article.group("article").endswith("'") else " "
        text = f"{article.group('article')}{joiner}{article.group('main')}{article.group('rest') or ''}"
    return text, year


def normalise_genres(published: str | None) -> str:
    """'Children's|Comedy|Animation' -> 'Animation|Children|Comedy'; no genre -> ''."""
    if published is None or (isinstance(published, float) and np.isnan(published)):
        return ""
    names = {GENRE_ALIASES.get(name, name) for name in published.split("|")} - NO_GENRE
    return "|".join(sorted(names, key=lambda name: (_GENRE_ORDER.get(name, len(GENRES)), name)))


def dedupe_ratings(ratings: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep the latest rating of each (user, movie); the result is sorted by (user, movie).

    Equal timestamps for one pair are rejected by validation before this runs, so "latest" is
    always well defined.
    """
    users = ratings["user_id"].to_numpy(np.int64)
    movies = ratings["movie_id"].to_numpy(np.int64)
    pair = users * (int(movies.max()) + 1) + movies
    order = np.lexsort((ratings["timestamp"].to_numpy(), pair))
    pair_sorted = pair[order]
    last_of_pair = np.append(pair_sorted[1:] != pair_sorted[:-1], True)
    kept = order[last_of_pair]
    return ratings.iloc[kept].reset_index(drop=True), int(len(ratings) - len(kept))


def utc_seconds(unix_seconds: pd.Series) -> pd.Series:
    """Unix seconds -> a datetime64[s, UTC] Series with a fresh 0..n-1 index."""
    stamps = pd.to_datetime(unix_seconds.to_numpy(np.int64), unit="s", utc=True)
    return pd.Series(stamps.astype("datetime64[s, UTC]"))


def build_items(movies: pd.DataFrame) -> pd.DataFrame:
    titles = [parse_title(title) for title in movies["title"]]
    release = movies["release_date"] if "release_date" in movies else pd.Series(pd.NaT, index=movies.index)
    release = pd.to_datetime(release, utc=True)
    year = pd.array([year for _, year in titles], dtype="Int64")
    # Titles without "(year)" fall back to the release date where the dataset has one (ml-100k).
    year = pd.Series(year).fillna(pd.Series(release.dt.year.to_numpy(), dtype="Int64"))
    items = pd.DataFrame(
        {
            "movie_id": movies["movie_id"].to_numpy(np.int64),
            "title": [title for title, _ in titles],
            "title_original": movies["title"].str.strip().to_numpy(),
            "year": year.array,
            "genres": [normalise_genres(value) for value in movies["genres"]],
            "release_date": release.dt.date.to_numpy(),
            "imdb_id": _optional_int(movies, "imdb_id"),
            "tmdb_id": _optional_int(movies, "tmdb_id"),
        }
    )
    for column in TMDB_FIELDS:
        items[column] = movies[column].to_numpy() if column in movies else None
    return items.sort_values("movie_id", kind="stable").reset_index(drop=True)


def _optional_int(frame: pd.DataFrame, column: str) -> pd.array:
    if column not in frame:
        return pd.array([pd.NA] * len(frame), dtype="Int64")
    return pd.array(frame[column], dtype="Int64")


def build_users(users: pd.DataFrame | None, rated_user_ids: np.ndarray) -> pd.DataFrame:
    """Every user who rated or is listed, with demographics where the dataset has them."""
    if users is None:
        users = pd.DataFrame({"user_id": np.unique(rated_user_ids)})
    for column in DEMOGRAPHICS:
        if column not in users:
            users[column] = None
    ids = np.union1d(rated_user_ids, users["user_id"].to_numpy(np.int64))
    frame = pd.DataFrame({"user_id": ids}).merge(users, on="user_id", how="left")
    return pd.DataFrame(
        {
            "user_id": ids,
            "age": pd.array(frame["age"], dtype="Int64"),
            "gender": pd.Categorical(frame["gender"]),
            "occupation": pd.Categorical(frame["occupation"]),
            "zip_code": frame["zip_code"].astype("string"),
        }
    )


def build_tags(tags: pd.DataFrame | None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Trimmed, non-empty tags, each (user, movie, tag, time) once."""
    if tags is None or tags.empty:
        return empty_frame("tags"), {}
    text = tags["tag"].astype("string").str.strip()
    empty = text.isna() | (text == "")
    frame = pd.DataFrame(
        {
            "user_id": tags["user_id"].to_numpy(np.int64),
            "movie_id": tags["movie_id"].to_numpy(np.int64),
            "tag": text,
            "timestamp": utc_seconds(tags["timestamp"]),
        }
    )[~empty.to_numpy()]
    before = len(frame)
    frame = frame.drop_duplicates().sort_values(["user_id", "movie_id", "timestamp", "tag"], kind="stable")
    counts = {"empty_tags_dropped": int(empty.sum()), "duplicate_tags_dropped": before - len(frame)}
    return frame.reset_index(drop=True), counts


def _index_of(ids: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    return np.searchsorted(sorted_ids, ids).astype(np.int32)


def missing_counts(frame: pd.DataFrame) -> dict[str, int]:
    counts = frame.isna().sum()
    return {column: int(count) for column, count in counts.items() if count}


def canonicalize(raw: RawDataset, tmdb: pd.DataFrame | None) -> tuple[CanonicalTables, dict]:
    """Build the canonical tables and a report of everything that was changed or is missing."""
    ratings, duplicates = dedupe_ratings(raw.ratings)
    items = build_items(raw.movies)
    tmdb_stats = None
    if tmdb is not None:
        items, tmdb_stats = join_tmdb(items, tmdb)
    items.insert(1, "item_idx", np.arange(len(items), dtype=np.int32))
    items["original_language"] = pd.Categorical(items["original_language"])

    users = build_users(raw.users, ratings["user_id"].to_numpy(np.int64))
    users.insert(1, "user_idx", np.arange(len(users), dtype=np.int32))

    canonical_ratings = pd.DataFrame(
        {
            "user_id": ratings["user_id"].to_numpy(np.int32),
            "movie_id": ratings["movie_id"].to_numpy(np.int32),
            "rating": ratings["rating"].to_numpy(np.float32),
            "timestamp": utc_seconds(ratings["timestamp"]),
            "user_idx": _index_of(ratings["user_id"].to_numpy(np.int64), users["user_id"].to_numpy(np.int64)),
            "item_idx": _index_of(ratings["movie_id"].to_numpy(np.int64), items["movie_id"].to_numpy(np.int64)),
        }
    )
    tags, tag_counts = build_tags(raw.tags)
    tables = CanonicalTables(ratings=canonical_ratings, users=users, items=items, tags=tags)
    report = {
        "rating_scale": {"min": raw.rating_scale.min, "max": raw.rating_scale.max, "step": raw.rating_scale.step},
        "rows_in": {
            "ratings": len(raw.ratings),
            "movies": len(raw.movies),
            "tags": 0 if raw.tags is None else len(raw.tags),
        },
        "duplicate_ratings_dropped": duplicates,
        "titles_without_year": int(items["year"].isna().sum()),
        "items_without_genre": int((items["genres"] == "").sum()),
        **tag_counts,
        "missing": {name: counts for name, frame in tables.as_dict().items() if (counts := missing_counts(frame))},
        "tmdb": tmdb_stats,
    }
    return tables, report
