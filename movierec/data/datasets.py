"""The datasets movierec knows: where they come from, which files they must hold, their format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from movierec.data.schema import RatingScale

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"

Format = Literal["ml-100k", "ml-1m", "csv", "tmdb", "synthetic"]

FIVE_STARS = RatingScale(1.0, 5.0, 1.0)
HALF_STARS = RatingScale(0.5, 5.0, 0.5)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    format: Format
    # Files that the published archive holds and that ingestion reads; all must be present.
    files: tuple[str, ...]
    rating_scale: RatingScale | None
    url: str | None = None


def _grouplens(name: str, fmt: Format, files: tuple[str, ...], scale: RatingScale) -> DatasetSpec:
    return DatasetSpec(name, fmt, files, scale, GROUPLENS_URL.format(name=name))


_CSV_FILES = ("ratings.csv", "movies.csv", "tags.csv", "links.csv")

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        _grouplens("ml-100k", "ml-100k", ("u.data", "u.item", "u.user"), FIVE_STARS),
        _grouplens("ml-1m", "ml-1m", ("ratings.dat", "movies.dat", "users.dat"), FIVE_STARS),
        _grouplens("ml-latest-small", "csv", _CSV_FILES, HALF_STARS),
        _grouplens("ml-25m", "csv", _CSV_FILES, HALF_STARS),
        _grouplens("ml-32m", "csv", _CSV_FILES, HALF_STARS),
        DatasetSpec("synthetic", "synthetic", (), HALF_STARS),
    )
}

# TMDB 5000 is published on Kaggle behind a login, so it is only ever read from a local copy.
TMDB = DatasetSpec("tmdb-5000", "tmdb", ("tmdb_5000_movies.csv", "tmdb_5000_credits.csv"), None)


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(DATASETS)
        raise ValueError(f"unknown dataset '{name}'; choose one of: {known}") from None
