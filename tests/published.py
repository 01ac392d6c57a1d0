"""Write generated data in the exact formats GroupLens publishes, so tests can run the real
parsers without the real (non-redistributable) datasets."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.data.parse import ML100K_GENRES
from movierec.data.schema import RawDataset


def write_csv_dataset(raw: RawDataset, folder: Path) -> Path:
    """ml-latest-small layout: ratings.csv, movies.csv, tags.csv, links.csv with CRLF endings."""
    folder.mkdir(parents=True, exist_ok=True)
    ratings = raw.ratings.rename(columns={"user_id": "userId", "movie_id": "movieId"})
    ratings = ratings.assign(rating=ratings["rating"].map(lambda r: f"{r:.1f}"))
    _write_csv(folder / "ratings.csv", ratings[["userId", "movieId", "rating", "timestamp"]])
    movies = raw.movies.rename(columns={"movie_id": "movieId"})
    _write_csv(folder / "movies.csv", movies[["movieId", "title", "genres"]])
    links = pd.DataFrame(
        {
            "movieId": raw.movies["movie_id"],
            "imdbId": [f"{100000 + i:07d}" for i in range(len(raw.movies))],
            "tmdbId": [str(900000 + i) for i in range(len(raw.movies))],
        }
    )
    _write_csv(folder / "links.csv", links)
    tags = raw.tags if raw.tags is not None else pd.DataFrame(columns=["user_id", "movie_id", "tag", "timestamp"])
    tags = tags.rename(columns={"user_id": "userId", "movie_id": "movieId"})
    _write_csv(folder / "tags.csv", tags[["userId", "movieId", "tag", "timestamp"]])
    return folder


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    path.write_bytes(buffer.getvalue().encode("utf-8"))


def write_ml100k(raw: RawDataset, folder: Path) -> Path:
    """ml-100k layout: u.data (tab), u.item (pipe, Latin-1, 19 genre flags), u.user (pipe)."""
    folder.mkdir(parents=True, exist_ok=True)
    stars = np.clip(np.ceil(raw.ratings["rating"].to_numpy()), 1, 5).astype(int)
    lines = [
        f"{u}\t{m}\t{r}\t{t}\n"
        for u, m, r, t in zip(
            raw.ratings["user_id"], raw.ratings["movie_id"], stars, raw.ratings["timestamp"], strict=True
        )
    ]
    (folder / "u.data").write_text("".join(lines), encoding="ascii")
    item_lines = []
    for movie_id, title, genres in zip(raw.movies["movie_id"], raw.movies["title"], raw.movies["genres"], strict=True):
        names = {"Children": "Children's"}
        flagged = {names.get(g, g) for g in genres.split("|")} if genres != "(no genres listed)" else {"unknown"}
        flags = "|".join("1" if genre in flagged else "0" for genre in ML100K_GENRES)
        item_lines.append(f"{movie_id}|{title}|01-Jan-1995||http://us.imdb.com/M/title-exact?x|{flags}\n")
    (folder / "u.item").write_text("".join(item_lines), encoding="latin-1", errors="replace")
    users = raw.users
    user_lines = [
        f"{u}|{a}|{g}|{o}|{z}\n"
        for u, a, g, o, z in zip(
            users["user_id"], users["age"], users["gender"], users["occupation"], users["zip_code"], strict=True
        )
    ]
    (folder / "u.user").write_text("".join(user_lines), encoding="ascii")
    return folder
