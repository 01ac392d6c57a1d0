"""TMDB 5000 metadata: read the two Kaggle CSVs and join them onto MovieLens items.

The join goes through MovieLens `links.csv` (tmdbId) where a dataset has links; ml-100k and ml-1m
have none, so their titles are matched on a normalised title plus release year.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pandas as pd

from movierec.data.fetch import SourceFiles
from movierec.errors import FormatError

TOP_CAST = 5
MOVIE_COLUMNS = [
    "id",
    "title",
    "original_title",
    "overview",
    "keywords",
    "release_date",
    "runtime",
    "original_language",
]
CREDIT_COLUMNS = ["movie_id", "cast", "crew"]


def read_tmdb(source: SourceFiles) -> pd.DataFrame:
    """One row per TMDB movie: tmdb_id, title, original_title, year, overview, keywords, cast,
    director, runtime, original_language ('|' joins lists)."""
    movies_path, credits_path = source.path("tmdb_5000_movies.csv"), source.path("tmdb_5000_credits.csv")
    movies = _read_csv(movies_path, MOVIE_COLUMNS)
    credits = _read_csv(credits_path, CREDIT_COLUMNS)
    frame = pd.DataFrame(
        {
            "tmdb_id": pd.to_numeric(movies["id"], errors="raise").astype("int64"),
            "title": movies["title"],
            "original_title": movies["original_title"],
            "year": pd.to_datetime(movies["release_date"], errors="coerce").dt.year.astype("Int64"),
            "overview": movies["overview"],
            "keywords": _json_names(movies["keywords"], movies_path, "keywords"),
            "runtime": pd.to_numeric(movies["runtime"], errors="coerce"),
            "original_language": movies["original_language"],
        }
    )
    people = pd.DataFrame(
        {
            "tmdb_id": pd.to_numeric(credits["movie_id"], errors="raise").astype("int64"),
            "cast": _top_cast(credits["cast"], credits_path),
            "director": _directors(credits["crew"], credits_path),
        }
    )
    if frame["tmdb_id"].duplicated().any() or people["tmdb_id"].duplicated().any():
        raise FormatError(movies_path.parent, "TMDB ids repeat within the movies or credits file")
    return frame.merge(people, on="tmdb_id", how="left")


def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    if path.stat().st_size == 0:
        raise FormatError(path, "the file is empty (0 bytes)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError) as error:
        raise FormatError(path, f"unreadable CSV: {error}") from error
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise FormatError(path, f"missing column(s) {missing}; found {list(frame.columns)}", line=1)
    return frame[columns]


def _parse_json_lists(values: pd.Series, path: Path, field: str) -> list[list[dict]]:
    parsed = []
    for row, text in enumerate(values):
        try:
            parsed.append(json.loads(text) if isinstance(text, str) else [])
        except json.JSONDecodeError as error:
            raise FormatError(path, f"invalid JSON ({error.msg})", line=row + 2, field=field) from error
    return parsed


def _json_names(values: pd.Series, path: Path, field: str) -> list[str | None]:
    return ["|".join(entry["name"] for entry in entries) or None for entries in _parse_json_lists(values, path, field)]


def _top_cast(values: pd.Series, path: Path) -> list[str | None]:
    result = []
    for entries in _parse_json_lists(values, path, "cast"):
        ordered = sorted(entries, key=lambda entry: entry.get("order", 0))[:TOP_CAST]
        result.append("|".join(entry["name"] for entry in ordered) or None)
    return result


def _directors(values: pd.Series, path: Path) -> list[str | None]:
    return [
        "|".join(entry["name"] for entry in entries if entry.get("job") == "Director") or None
        for entries in _parse_json_lists(values, path, "crew")
    ]


def title_key(title: str) -> str:
    """Normalise a title for matching: no accents, case, punctuation or leading article."""
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    text = text.lower().replace("&", " and ")
    text = re.sub(r", (the|a|an)$", "", text.strip())
    text = re.sub(r"[^a-z0-9 ]+", " ", text)
    text = re.sub(r"^(the|a|an) ", "", text.strip())
    return re.sub(r"\s+", " ", text).strip()


TMDB_FIELDS = ["overview", "keywords", "cast", "director", "runtime", "original_language"]


def join_tmdb(items: pd.DataFrame, tmdb: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Add TMDB fields to canonical `items` (needs movie_id, title, year, tmdb_id).

    Returns the enriched items and match statistics {method, matched, items, match_rate}.
    """
    by_link = items["tmdb_id"].notna().any()
    if by_link:
        keys = items[["movie_id", "tmdb_id"]].dropna().astype({"tmdb_id": "int64"})
        matches = keys.merge(tmdb[["tmdb_id"]], on="tmdb_id")[["movie_id", "tmdb_id"]]
        method = "links.csv tmdbId"
    else:
        matches = _match_by_title(items, tmdb)
        method = "normalised title + year"
    enrichment = matches.merge(tmdb[["tmdb_id", *TMDB_FIELDS]], on="tmdb_id").drop(columns="tmdb_id")
    if not by_link:
        # Items without links get the TMDB id the title match found, so later stages can use it.
        items = items.drop(columns="tmdb_id").merge(matches, on="movie_id", how="left")
    enriched = items.drop(columns=[c for c in TMDB_FIELDS if c in items.columns]).merge(
        enrichment, on="movie_id", how="left"
    )
    matched = int(enriched["movie_id"].isin(enrichment["movie_id"]).sum())
    stats = {
        "method": method,
        "matched": matched,
        "items": len(items),
        "match_rate": round(matched / len(items), 4) if len(items) else 0.0,
    }
    return enriched, stats


def _match_by_title(items: pd.DataFrame, tmdb: pd.DataFrame) -> pd.DataFrame:
    """Match on (title key, year), counting TMDB's original title as a second name, then on
    year +- 1 for the rest (festival vs release dates). A movie with two candidates stays
    unmatched; two MovieLens ids may share one TMDB movie (ml-100k lists some films twice)."""
    ours = pd.DataFrame(
        {
            "movie_id": items["movie_id"].to_numpy(),
            # MovieLens appends alternative titles in parentheses: "Shanghai Triad (Yao a yao ...)".
            "key": [title_key(re.sub(r"\s*\(.*\)\s*$", "", t or "")) for t in items["title"]],
            "year": items["year"].astype("Int64").to_numpy(),
        }
    ).dropna(subset=["year"])
    names = (
        pd.concat(
            [
                pd.DataFrame(
                    {"tmdb_id": tmdb["tmdb_id"], "key": tmdb[column].fillna("").map(title_key), "year": tmdb["year"]}
                )
                for column in ("title", "original_title")
            ]
        )
        .dropna(subset=["year"])
        .drop_duplicates()
    )
    names = names[names["key"] != ""]
    matched = []
    for year_shift in (0, -1, 1):
        remaining = ours[~ours["movie_id"].isin([m for part in matched for m in part["movie_id"]])]
        shifted = names.assign(year=names["year"] + year_shift)
        pairs = remaining.merge(shifted, on=["key", "year"])[["movie_id", "tmdb_id"]].drop_duplicates()
        matched.append(pairs[~pairs["movie_id"].duplicated(keep=False)])
    return _sorted(pd.concat(matched).astype({"tmdb_id": "int64"}))


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("movie_id", kind="stable").reset_index(drop=True)
