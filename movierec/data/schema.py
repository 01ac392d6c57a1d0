"""The shapes of data between stages.

`RawDataset` is what a source yields (a parsed MovieLens archive, or the synthetic generator):
one row per line of the original files, original ids, no cleaning yet. The canonical tables
(`features.tables.CanonicalTables`) are what a snapshot stores; their Arrow schemas below are the
single definition of column names and dtypes (compact ints, dictionary-encoded strings, UTC
timestamps).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa

# Bumped whenever parsing or preprocessing changes what a snapshot holds for the same input,
# so that an old snapshot is not mistaken for the result of new code.
CANONICAL_VERSION = 1


@dataclass(frozen=True)
class RatingScale:
    min: float
    max: float
    step: float

    def values(self) -> list[float]:
        count = round((self.max - self.min) / self.step) + 1
        return [round(self.min + i * self.step, 4) for i in range(count)]


@dataclass
class RawDataset:
    """A dataset as its source gives it.

    ratings: user_id, movie_id (int64), rating (float64), timestamp (int64, Unix seconds).
    movies:  movie_id, title (as published, e.g. "Toy Story (1995)"), genres ("|"-joined as
             published, may be "(no genres listed)"); optional release_date (datetime64, UTC),
             imdb_id, tmdb_id (nullable Int64), overview (str).
    users:   user_id, age (nullable Int64), gender, occupation, zip_code; None if the dataset
             has no demographics.
    tags:    user_id, movie_id, tag, timestamp (Unix seconds); None if the dataset has no tags.
    """

    name: str
    ratings: pd.DataFrame
    movies: pd.DataFrame
    rating_scale: RatingScale
    users: pd.DataFrame | None = None
    tags: pd.DataFrame | None = None
    # Per source file: {"path": str, "bytes": int, "sha256": str}; parameters for generated data.
    files: dict[str, dict] = field(default_factory=dict)
    source: dict = field(default_factory=dict)


UTC_SECONDS = pa.timestamp("s", tz="UTC")
DICT_STRING = pa.dictionary(pa.int32(), pa.string())

RATINGS_SCHEMA = pa.schema(
    [
        ("user_id", pa.int32()),
        ("movie_id", pa.int32()),
        ("rating", pa.float32()),
        ("timestamp", UTC_SECONDS),
        ("user_idx", pa.int32()),
        ("item_idx", pa.int32()),
    ]
)

USERS_SCHEMA = pa.schema(
    [
        ("user_id", pa.int32()),
        ("user_idx", pa.int32()),
        ("age", pa.int16()),
        ("gender", DICT_STRING),
        ("occupation", DICT_STRING),
        ("zip_code", pa.string()),
    ]
)

ITEMS_SCHEMA = pa.schema(
    [
        ("movie_id", pa.int32()),
        ("item_idx", pa.int32()),
        ("title", pa.string()),
        ("title_original", pa.string()),
        ("year", pa.int16()),
        ("genres", pa.string()),
        ("release_date", pa.date32()),
        ("imdb_id", pa.int32()),
        ("tmdb_id", pa.int32()),
        ("overview", pa.string()),
        ("keywords", pa.string()),
        ("cast", pa.string()),
        ("director", pa.string()),
        ("runtime", pa.float32()),
        ("original_language", DICT_STRING),
    ]
)

TAGS_SCHEMA = pa.schema(
    [
        ("user_id", pa.int32()),
        ("movie_id", pa.int32()),
        ("tag", pa.string()),
        ("timestamp", UTC_SECONDS),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "ratings": RATINGS_SCHEMA,
    "users": USERS_SCHEMA,
    "items": ITEMS_SCHEMA,
    "tags": TAGS_SCHEMA,
}

# Primary keys: canonical tables are sorted by them, which makes Parquet files and content
# hashes independent of the order rows arrived in.
KEYS: dict[str, list[str]] = {
    "ratings": ["user_id", "movie_id"],
    "users": ["user_id"],
    "items": ["movie_id"],
    "tags": ["user_id", "movie_id", "timestamp", "tag"],
}


def to_arrow(name: str, frame: pd.DataFrame) -> pa.Table:
    """Convert a canonical frame to Arrow with exactly its declared schema (column order too)."""
    schema = SCHEMAS[name]
    missing = [column for column in schema.names if column not in frame.columns]
    if missing:
        raise ValueError(f"canonical table '{name}' lacks columns {missing}")
    table = pa.Table.from_pandas(frame[schema.names], preserve_index=False)
    return table.cast(schema)


def empty_frame(name: str) -> pd.DataFrame:
    return SCHEMAS[name].empty_table().to_pandas()
