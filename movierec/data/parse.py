"""Read MovieLens files exactly as published into a `RawDataset`.

Every file goes through `read_delimited`: pyarrow's multi-threaded CSV reader for speed, and,
only when it rejects the file, a line-by-line pass that finds the first bad line and says what
is wrong with it (pyarrow's own messages carry no line numbers).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from movierec.data.datasets import DatasetSpec
from movierec.data.fetch import SourceFiles
from movierec.data.schema import RawDataset
from movierec.errors import FormatError

SEPARATOR_NAMES = {",": "comma", "\t": "tab", "|": "pipe", ";": "semicolon", "::": "'::'"}


@dataclass(frozen=True)
class Column:
    name: str  # name in the published file (header name, or documented field name)
    type: pa.DataType
    required: bool = True  # an empty value is an error


INT = pa.int64()
FLOAT = pa.float64()
STR = pa.string()


def read_delimited(
    path: Path,
    columns: list[Column],
    *,
    separator: str,
    header: bool,
    encoding: str = "utf-8",
    quoted: bool = False,
    allow_empty: bool = False,
) -> pd.DataFrame:
    """Read a delimited file whose columns must be exactly `columns`, in order."""
    if path.stat().st_size == 0:
        raise FormatError(path, "the file is empty (0 bytes)")
    if header:
        with path.open("rb") as handle:
            _check_header(path, handle.readline(), columns, separator, encoding)
    if len(separator) > 1:
        # pyarrow takes one-byte delimiters; ml-1m's '::' never occurs inside its fields.
        source = io.BytesIO(path.read_bytes().replace(separator.encode(), b"\x1f"))
        delimiter = "\x1f"
    else:
        source, delimiter = path, separator
    names = [column.name for column in columns]
    try:
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1 if header else 0, encoding=encoding),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, quote_char='"' if quoted else False, newlines_in_values=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={column.name: column.type for column in columns},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:
        _diagnose(path, columns, separator=separator, header=header, encoding=encoding, quoted=quoted)
        raise FormatError(path, f"unreadable: {error}") from error
    if table.num_rows == 0 and not allow_empty:
        raise FormatError(path, "the file has no data rows")
    frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    for column in columns:
        if column.required and frame[column.name].isna().any():
            row = int(frame[column.name].isna().to_numpy().argmax())
            raise FormatError(path, "empty value", line=row + 1 + int(header), field=column.name)
    return frame


def _check_header(path: Path, first: bytes, columns: list[Column], separator: str, encoding: str) -> None:
    first = first.rstrip(b"\r\n")
    try:
        text = first.decode(encoding).lstrip("\ufeff")
    except UnicodeDecodeError as error:
        raise FormatError(path, f"undecodable bytes in the header ({error.reason})", line=1) from error
    found = [name.strip().strip('"') for name in next(csv.reader([text], delimiter=separator))]
    expected = [column.name for column in columns]
    if found == expected:
        return
    if len(found) == 1:
        other = next((sep for sep in (";", "\t", "|", ",") if sep != separator and sep in text), None)
        if other:
            raise FormatError(
                path,
                f"the header '{text}' is {SEPARATOR_NAMES[other]}-separated; "
                f"expected {SEPARATOR_NAMES[separator]}-separated columns {expected}",
                line=1,
            )
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    problems = []
    if missing:
        problems.append(f"missing column(s) {missing}")
    if unexpected:
        problems.append(f"unexpected column(s) {unexpected}" + (" (renamed?)" if missing else ""))
    if not problems:
        problems.append(f"columns in the wrong order {found}")
    raise FormatError(path, f"{'; '.join(problems)}; expected header {expected}", line=1)


def _diagnose(
    path: Path,
    columns: list[Column],
    *,
    separator: str,
    header: bool,
    encoding: str,
    quoted: bool,
) -> None:
    """Find the first line pyarrow could not read and raise a FormatError that names it."""
    lines = path.read_bytes().split(b"\n")
    start = 1 if header else 0
    for number, line in enumerate(lines[start:], start=start + 1):
        line = line.rstrip(b"\r")
        if not line:
            continue
        try:
            text = line.decode(encoding)
        except UnicodeDecodeError as error:
            raise FormatError(
                path,
                f"undecodable bytes {line[error.start : error.end]!r} at byte {error.start} "
                f"(the file should be {encoding})",
                line=number,
            ) from error
        fields = next(csv.reader([text], delimiter=separator)) if quoted else text.split(separator)
        if len(fields) != len(columns):
            hint = " (truncated line?)" if len(fields) < len(columns) and number >= len(lines) - 1 else ""
            if len(fields) == 1:
                other = next((s for s in (",", ";", "\t", "|") if s != separator and s in text), None)
                if other:
                    hint = f" (it looks {SEPARATOR_NAMES[other]}-separated)"
            raise FormatError(
                path,
                f"expected {len(columns)} {SEPARATOR_NAMES[separator]}-separated fields "
                f"({', '.join(c.name for c in columns)}), found {len(fields)}: {text[:120]!r}{hint}",
                line=number,
            )
        for column, value in zip(columns, fields, strict=True):
            if value == "" or column.type == STR:
                continue
            try:
                int(value) if column.type == INT else float(value)
            except ValueError:
                kind = "an integer" if column.type == INT else "a number"
                raise FormatError(path, f"{value!r} is not {kind}", line=number, field=column.name) from None


# --- MovieLens formats ----------------------------------------------------------------------

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip

# ml-1m's users.dat codes occupations as integers; names from its README.
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip

RATING_COLUMNS = ["user_id", "movie_id", "rating", "timestamp"]


def read_dataset(spec: DatasetSpec, source: SourceFiles) -> RawDataset:
    readers = {"ml-100k": _read_ml100k, "ml-1m": _read_ml1m, "csv": _read_csv_dataset}
    ratings, movies, users, tags = readers[spec.format](source)
    if users is not None:
        _check_raters_are_users(source.path(RATINGS_FILES[spec.format][0]), ratings, users, RATINGS_FILES[spec.format])
    return RawDataset(
        name=spec.name,
        ratings=ratings,
        movies=movies,
        users=users,
        tags=tags,
        rating_scale=spec.rating_scale,
        files=source.files,
        source=source.origin,
    )


# The ratings file and the users file of the formats that ship a users table.
RATINGS_FILES = {"ml-100k": ("u.data", "u.user"), "ml-1m": ("ratings.dat", "users.dat")}


def _read_ratings(path: Path, user: str, movie: str, *, separator: str, header: bool = False) -> pd.DataFrame:
    """A ratings file (user, movie, rating, timestamp) under the dataset's own column names;
    user and movie ids must be positive integers (they are the ids the API and exports use)."""
    frame = read_delimited(
        path,
        [Column(user, INT), Column(movie, INT), Column("rating", FLOAT), Column("timestamp", INT)],
        separator=separator,
        header=header,
        quoted=header,
    )
    for column in (user, movie):
        bad = (frame[column] < 1).to_numpy()
        if bad.any():
            row = int(bad.argmax())
            raise FormatError(
                path,
                f"{column} {frame[column].iloc[row]} is not a positive integer",
                line=row + 1 + int(header),
                field=column,
            )
    frame.columns = RATING_COLUMNS
    return frame.astype({"user_id": "int64", "movie_id": "int64", "rating": "float64", "timestamp": "int64"})


def _check_raters_are_users(path: Path, ratings: pd.DataFrame, users: pd.DataFrame, files: tuple[str, str]) -> None:
    """Every rating's user is in the dataset's users table (`files`: ratings file, users file)."""
    missing = ~ratings["user_id"].isin(users["user_id"]).to_numpy()
    if missing.any():
        row = int(missing.argmax())
        raise FormatError(
            path,
            f"user_id {ratings['user_id'].iloc[row]} is not in {files[1]} "
            f"({int(missing.sum()):,} rating(s) by users missing from it)",
            line=row + 1,
            field="user_id",
        )


def _read_ml100k(source: SourceFiles):
    ratings = _read_ratings(source.path("u.data"), "user_id", "movie_id", separator="\t")
    flag_columns = [Column(f"genre:{genre}", INT) for genre in ML100K_GENRES]
    items = read_delimited(
        source.path("u.item"),
        [
            Column("movie_id", INT),
            Column("title", STR),
            Column("release_date", STR, required=False),
            Column("video_release_date", STR, required=False),
            Column("imdb_url", STR, required=False),
            *flag_columns,
        ],
        separator="|",
        header=False,
        encoding="latin-1",
    )
    flags = items[[column.name for column in flag_columns]].to_numpy(dtype=bool)
    movies = pd.DataFrame(
        {
            "movie_id": items["movie_id"].astype("int64"),
            "title": items["title"],
            "genres": ["|".join(g for g, on in zip(ML100K_GENRES, row, strict=True) if on) for row in flags],
            "release_date": pd.to_datetime(items["release_date"], format="%d-%b-%Y", errors="coerce", utc=True),
        }
    )
    users = read_delimited(
        source.path("u.user"),
        [
            Column("user_id", INT),
            Column("age", INT),
            Column("gender", STR),
            Column("occupation", STR),
            Column("zip_code", STR, required=False),
        ],
        separator="|",
        header=False,
    )
    users["user_id"] = users["user_id"].astype("int64")
    return ratings, movies, users, None


def _read_ml1m(source: SourceFiles):
    ratings = _read_ratings(source.path("ratings.dat"), "user_id", "movie_id", separator="::")
    movies = read_delimited(
        source.path("movies.dat"),
        [Column("movie_id", INT), Column("title", STR), Column("genres", STR, required=False)],
        separator="::",
        header=False,
        encoding="latin-1",
    )
    movies["movie_id"] = movies["movie_id"].astype("int64")
    users = read_delimited(
        source.path("users.dat"),
        [
            Column("user_id", INT),
            Column("gender", STR),
            Column("age", INT),
            Column("occupation", INT),
            Column("zip_code", STR, required=False),
        ],
        separator="::",
        header=False,
    )
    codes = users["occupation"].astype("int64")
    bad = ~codes.between(0, len(ML1M_OCCUPATIONS) - 1)
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise FormatError(
            source.path("users.dat"), f"unknown occupation code {codes.iloc[row]}", line=row + 1, field="occupation"
        )
    users["occupation"] = [ML1M_OCCUPATIONS[code] for code in codes]
    users["user_id"] = users["user_id"].astype("int64")
    return ratings, movies, users[["user_id", "age", "gender", "occupation", "zip_code"]], None


def _read_csv_dataset(source: SourceFiles):
    ratings = _read_ratings(source.path("ratings.csv"), "userId", "movieId", separator=",", header=True)
    movies = read_delimited(
        source.path("movies.csv"),
        [Column("movieId", INT), Column("title", STR), Column("genres", STR, required=False)],
        separator=",",
        header=True,
        quoted=True,
    ).rename(columns={"movieId": "movie_id"})
    links = read_delimited(
        source.path("links.csv"),
        [Column("movieId", INT), Column("imdbId", INT, required=False), Column("tmdbId", INT, required=False)],
        separator=",",
        header=True,
        quoted=True,
    ).rename(columns={"movieId": "movie_id", "imdbId": "imdb_id", "tmdbId": "tmdb_id"})
    repeated = links["movie_id"].duplicated()
    if repeated.any():
        row = int(repeated.to_numpy().argmax())
        raise FormatError(
            source.path("links.csv"),
            f"movieId {links['movie_id'].iloc[row]} is listed twice",
            line=row + 2,
            field="movieId",
        )
    movies = movies.merge(links, on="movie_id", how="left")
    movies["movie_id"] = movies["movie_id"].astype("int64")
    tags = read_delimited(
        source.path("tags.csv"),
        [Column("userId", INT), Column("movieId", INT), Column("tag", STR, required=False), Column("timestamp", INT)],
        separator=",",
        header=True,
        quoted=True,
        allow_empty=True,
    )
    tags.columns = ["user_id", "movie_id", "tag", "timestamp"]
    tags = tags.astype({"user_id": "int64", "movie_id": "int64", "timestamp": "int64"})
    return ratings, movies, None, tags
