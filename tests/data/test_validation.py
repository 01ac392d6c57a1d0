"""The Great Expectations suites: good tables pass, each kind of bad data fails with a message
that names the expectation, the column and the bad value, and Data Docs are written either way.

Frames are built here, small: 30 users who each rated 10 of 40 movies.
"""

from __future__ import annotations

import json
import logging
import re
import time

import numpy as np
import pandas as pd
import pytest

from features.tables import CanonicalTables
from movierec.data.schema import SCHEMAS, RatingScale, RawDataset, to_arrow
from movierec.data.validation import ValidationReport, suite_names, suite_path, validate_canonical, validate_raw
from movierec.errors import ValidationFailed
from movierec.settings import Settings, ValidationSettings

SCALE = RatingScale(0.5, 5.0, 0.5)
N_USERS, N_MOVIES, PER_USER = 30, 40, 10
N_RATINGS = N_USERS * PER_USER
MOVIE_IDS = np.arange(N_MOVIES) * 10 + 1  # ids with gaps, as MovieLens has
YEAR_2000, YEAR_2020 = 946_684_800, 1_577_836_800
RAW_SUITES = {"raw_ratings", "raw_rated_movies", "raw_movies"}
CANONICAL_SUITES = {
    "canonical_ratings",
    "canonical_rated_movies",
    "canonical_user_activity",
    "canonical_items",
    "canonical_users",
    "canonical_tags",
    "canonical_tagged_movies",
}


@pytest.fixture
def settings(tmp_path) -> Settings:
    limits = ValidationSettings(min_ratings=200, min_users=10, min_items=10)
    return Settings(home=tmp_path / "home", validation=limits)


def raw_ratings() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    movies = [rng.choice(MOVIE_IDS, PER_USER, replace=False) for _ in range(N_USERS)]
    return pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(1, N_USERS + 1), PER_USER).astype(np.int64),
            "movie_id": np.concatenate(movies).astype(np.int64),
            "rating": rng.choice([2.5, 3.0, 3.5, 4.0, 4.5, 5.0], N_RATINGS),
            "timestamp": rng.integers(YEAR_2000, YEAR_2020, N_RATINGS),
        }
    )


def raw_movies() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "movie_id": MOVIE_IDS.astype(np.int64),
            "title": [f"Movie {i} (1999)" for i in range(N_MOVIES)],
            "genres": ["Comedy|Drama"] * (N_MOVIES - 1) + ["(no genres listed)"],
        }
    )


def raw_dataset(ratings: pd.DataFrame | None = None, movies: pd.DataFrame | None = None):
    return RawDataset(
        name="tiny",
        ratings=raw_ratings() if ratings is None else ratings,
        movies=raw_movies() if movies is None else movies,
        rating_scale=SCALE,
    )


def canonical_tables() -> CanonicalTables:
    """The tables as a snapshot stores them (converted through their Arrow schemas)."""
    raw = raw_ratings()
    no_value = [None] * N_MOVIES
    frames = {
        "ratings": pd.DataFrame(
            {
                "user_id": raw["user_id"],
                "movie_id": raw["movie_id"],
                "rating": raw["rating"],
                "timestamp": pd.to_datetime(raw["timestamp"], unit="s", utc=True),
                "user_idx": raw["user_id"] - 1,
                "item_idx": np.searchsorted(MOVIE_IDS, raw["movie_id"]),
            }
        ),
        "users": pd.DataFrame(
            {
                "user_id": np.arange(1, N_USERS + 1),
                "user_idx": np.arange(N_USERS),
                "age": [25, None] * (N_USERS // 2),
                "gender": ["F", "M", None] * (N_USERS // 3),
                "occupation": "other",
                "zip_code": "12345",
            }
        ),
        "items": pd.DataFrame(
            {
                "movie_id": MOVIE_IDS,
                "item_idx": np.arange(N_MOVIES),
                "title": [f"Movie {i}" for i in range(N_MOVIES)],
                "title_original": [f"Movie {i} (1999)" for i in range(N_MOVIES)],
                "year": [1999] * (N_MOVIES - 1) + [None],
                "genres": ["Comedy|Drama", "Sci-Fi", ""] * (N_MOVIES // 3) + ["Film-Noir"],
                **dict.fromkeys(["release_date", "imdb_id", "tmdb_id", "overview"], no_value),
                **dict.fromkeys(["keywords", "cast", "director", "runtime"], no_value),
                "original_language": no_value,
            }
        ),
        "tags": pd.DataFrame(
            {
                "user_id": [1, 2, 3],
                "movie_id": MOVIE_IDS[:3],
                "tag": ["funny", "dark", "twist ending"],
                "timestamp": pd.to_datetime([YEAR_2000, YEAR_2000, YEAR_2020], unit="s", utc=True),
            }
        ),
    }
    stored = {name: to_arrow(name, frame).to_pandas() for name, frame in frames.items()}
    return CanonicalTables(**stored)


ROW_NUMBERS = re.compile(r" at row\(s\) (\[[^\]]*\])$")


def failures_of(run) -> ValidationFailed:
    """The raised error, with the row numbers moved from each line to `rows` (None where a line
    names no rows), so that tests can compare the lines and the rows separately."""
    with pytest.raises(ValidationFailed) as caught:
        run()
    failure = caught.value
    found = [ROW_NUMBERS.search(line) for line in failure.failures]
    failure.rows = [json.loads(match.group(1)) if match else None for match in found]
    failure.failures = [ROW_NUMBERS.sub("", line) for line in failure.failures]
    return failure


def suite_sizes() -> dict[str, int]:
    return {name: len(json.loads(suite_path(name).read_text())["expectations"]) for name in suite_names()}


# Good data.


def test_good_raw_dataset_passes_every_raw_suite(settings):
    report = validate_raw(raw_dataset(), settings)

    assert isinstance(report, ValidationReport)
    assert set(report.suites) == RAW_SUITES
    sizes = suite_sizes()
    for name, outcome in report.suites.items():
        # Every expectation of the JSON file ran: none was dropped while loading it.
        assert outcome == {"success": True, "evaluated": sizes[name], "failed": 0}, name
    assert report.docs_path == settings.reports_dir / "data_docs" / "index.html"
    assert report.docs_path.is_file()


def test_good_canonical_tables_pass_every_canonical_suite(settings):
    report = validate_canonical(canonical_tables(), SCALE, settings, dataset="tiny")

    assert set(report.suites) == CANONICAL_SUITES
    sizes = suite_sizes()
    for name, outcome in report.suites.items():
        assert outcome == {"success": True, "evaluated": sizes[name], "failed": 0}, name


def test_every_suite_file_is_used():
    assert set(suite_sizes()) == RAW_SUITES | CANONICAL_SUITES


def test_canonical_column_lists_match_the_schemas():
    for table, schema in SCHEMAS.items():
        suite = json.loads(suite_path(f"canonical_{table}").read_text())
        columns = next(
            expectation["kwargs"].get("column_list") or expectation["kwargs"]["column_set"]
            for expectation in suite["expectations"]
            if expectation["type"].startswith("expect_table_columns_to_match")
        )
        assert columns == schema.names, table


def test_canonical_tables_without_tags_pass(settings):
    tables = canonical_tables()
    tables.tags = tables.tags.iloc[0:0]

    report = validate_canonical(tables, SCALE, settings, dataset="tiny")

    assert report.suites["canonical_tags"]["success"]
    assert report.suites["canonical_tagged_movies"]["success"]


def test_a_movie_rated_again_later_is_left_to_the_dedupe(settings):
    ratings = raw_ratings()
    again = ratings.iloc[[0]].assign(timestamp=ratings["timestamp"].iloc[0] + 60)

    validate_raw(raw_dataset(pd.concat([ratings, again], ignore_index=True)), settings)


# Bad raw data: one broken thing each, and the exact line that reports it.


def test_rating_out_of_scale(settings):
    ratings = raw_ratings()
    ratings.loc[17, "rating"] = 7.0

    failure = failures_of(lambda: validate_raw(raw_dataset(ratings), settings))

    assert failure.suite == "raw_ratings"
    assert failure.failures == [
        "expect_column_values_to_be_between(column='rating', min_value=0.5, max_value=5.0): "
        f"1 of {N_RATINGS} rows unexpected, e.g. [7.0]",
        "expect_column_values_to_be_in_set(column='rating', value_set=[0.5, 1.0, 1.5, 2.0, 2.5, "
        f"3.0, 3.5, 4.0, 4.5, 5.0]): 1 of {N_RATINGS} rows unexpected, e.g. [7.0]",
    ]
    # Row 17 counted from 0 is the 18th data row of the file.
    assert failure.rows == [[18], [18]]


def test_rating_between_scale_values(settings):
    ratings = raw_ratings()
    ratings.loc[3, "rating"] = 3.25

    failure = failures_of(lambda: validate_raw(raw_dataset(ratings), settings))

    assert len(failure.failures) == 1
    assert failure.failures[0].startswith("expect_column_values_to_be_in_set(column='rating'")
    assert failure.failures[0].endswith(f"1 of {N_RATINGS} rows unexpected, e.g. [3.25]")


def test_missing_rating(settings):
    ratings = raw_ratings()
    ratings.loc[3, "rating"] = np.nan

    failure = failures_of(lambda: validate_raw(raw_dataset(ratings), settings))

    assert failure.failures == [
        f"expect_column_values_to_not_be_null(column='rating'): 1 of {N_RATINGS} rows unexpected, e.g. [None]"
    ]


def test_negative_timestamp(settings):
    ratings = raw_ratings()
    ratings.loc[5, "timestamp"] = -86_400

    failure = failures_of(lambda: validate_raw(raw_dataset(ratings), settings))

    [line] = failure.failures
    # 788918400 is 1995-01-01, settings.validation.earliest_timestamp.
    assert line.startswith("expect_column_values_to_be_between(column='timestamp', min_value=788918400")
    assert line.endswith(f"1 of {N_RATINGS} rows unexpected, e.g. [-86400]")


def test_far_future_timestamp(settings):
    ratings = raw_ratings()
    in_a_month = int(time.time()) + 30 * 86_400
    ratings.loc[5, "timestamp"] = in_a_month

    failure = failures_of(lambda: validate_raw(raw_dataset(ratings), settings))

    [line] = failure.failures
    assert line.startswith("expect_column_values_to_be_between(column='timestamp'")
    assert line.endswith(f"e.g. [{in_a_month}]")


def test_timestamp_within_the_allowed_clock_skew_passes(settings):
    ratings = raw_ratings()
    ratings.loc[5, "timestamp"] = int(time.time()) + 3_600  # max_future_days is 1

    validate_raw(raw_dataset(ratings), settings)


def test_duplicate_user_movie_and_timestamp(settings):
    ratings = raw_ratings()
    twice = pd.concat([ratings, ratings.iloc[[8]]], ignore_index=True)
    user, movie, stamp = twice.loc[8, ["user_id", "movie_id", "timestamp"]].astype(int)

    failure = failures_of(lambda: validate_raw(raw_dataset(twice), settings))

    assert failure.failures == [
        "expect_compound_columns_to_be_unique(column_list=['user_id', 'movie_id', 'timestamp']): "
        f"2 of {N_RATINGS + 1} rows unexpected, e.g. [({user}, {movie}, {stamp})]"
    ]


def test_rating_of_an_unknown_movie(settings):
    ratings = raw_ratings()
    ratings.loc[9, "movie_id"] = 99_999

    failure = failures_of(lambda: validate_raw(raw_dataset(ratings), settings))

    assert failure.suite == "raw_rated_movies"
    [line] = failure.failures
    assert line.startswith("expect_column_pair_values_to_be_equal(column_A='movie_id', column_B='movie_id_in_movies'")
    assert line.endswith("1 of 41 rows unexpected, e.g. [(99999, None)]")


def test_too_few_ratings(settings):
    failure = failures_of(lambda: validate_raw(raw_dataset(raw_ratings().head(50)), settings))

    assert failure.failures == ["expect_table_row_count_to_be_between(min_value=200): row count 50, expected >= 200"]


def test_missing_ratings_column(settings):
    ratings = raw_ratings().drop(columns="rating")

    failure = failures_of(lambda: validate_raw(raw_dataset(ratings), settings))

    assert (
        "expect_table_columns_to_match_set(column_set=['user_id', 'movie_id', 'rating', "
        "'timestamp']): missing columns ['rating'], unexpected columns []"
    ) in failure.failures
    on_rating = [line for line in failure.failures if "(column='rating'" in line]
    assert len(on_rating) == 3
    for line in on_rating:
        assert line.endswith('could not be evaluated: Error: The column "rating" in BatchData does not exist.')


def test_movie_id_listed_twice(settings):
    movies = pd.concat([raw_movies(), raw_movies().iloc[[4]]], ignore_index=True)

    failure = failures_of(lambda: validate_raw(raw_dataset(movies=movies), settings))

    assert failure.suite == "raw_movies"
    assert failure.failures == [
        f"expect_column_values_to_be_unique(column='movie_id'): 2 of {N_MOVIES + 1} rows "
        f"unexpected, e.g. [{MOVIE_IDS[4]}]"
    ]


def test_movie_without_title(settings):
    movies = raw_movies()
    movies.loc[2, "title"] = None

    failure = failures_of(lambda: validate_raw(raw_dataset(movies=movies), settings))

    assert failure.failures == [
        f"expect_column_values_to_not_be_null(column='title'): 1 of {N_MOVIES} rows unexpected, e.g. [None]"
    ]


def test_failures_of_several_suites_are_reported_together(settings):
    ratings = raw_ratings()
    ratings.loc[0, "rating"] = 7.0
    movies = raw_movies().head(5)  # too few, and most rated movies are now unknown

    failure = failures_of(lambda: validate_raw(raw_dataset(ratings, movies), settings))

    assert failure.suite == "raw_ratings, raw_rated_movies, raw_movies"
    suites = [line.split(": ", 1)[0] for line in failure.failures]
    assert suites == ["raw_ratings", "raw_ratings", "raw_rated_movies", "raw_movies"]
    assert failure.failures[-1] == (
        "raw_movies: expect_table_row_count_to_be_between(min_value=10): row count 5, expected >= 10"
    )
    assert "validation suite 'raw_ratings, raw_rated_movies, raw_movies' failed 4" in str(failure)


# Bad canonical tables.


def canonical_failures(settings, tables: CanonicalTables) -> ValidationFailed:
    return failures_of(lambda: validate_canonical(tables, SCALE, settings, dataset="tiny"))


def test_canonical_rating_out_of_scale(settings):
    tables = canonical_tables()
    tables.ratings.loc[3, "rating"] = 7.0

    failure = canonical_failures(settings, tables)

    assert failure.failures == [
        "expect_column_values_to_be_in_set(column='rating', value_set=[0.5, 1.0, 1.5, 2.0, 2.5, "
        f"3.0, 3.5, 4.0, 4.5, 5.0]): 1 of {N_RATINGS} rows unexpected, e.g. [7.0]"
    ]


def test_canonical_scale_that_float32_cannot_hold_exactly(settings):
    tables = canonical_tables()
    tables.ratings["rating"] = np.float32(2.7)  # a value of a 0.1-step scale

    report = validate_canonical(tables, RatingScale(0.5, 5.0, 0.1), settings, dataset="tiny")

    assert report.suites["canonical_ratings"]["success"]


def test_mean_rating_out_of_range(settings):
    tables = canonical_tables()
    tables.ratings["rating"] = np.float32(1.0)

    failure = canonical_failures(settings, tables)

    assert failure.failures == [
        "expect_column_mean_to_be_between(column='rating', min_value=2.5, max_value=4.5): "
        "column mean 1.0, expected >= 2.5 and <= 4.5"
    ]


def test_canonical_timestamp_before_the_earliest(settings):
    tables = canonical_tables()
    tables.ratings.loc[4, "timestamp"] = pd.Timestamp("1969-12-31", tz="UTC")

    failure = canonical_failures(settings, tables)

    [line] = failure.failures
    assert line.startswith("expect_column_values_to_be_between(column='timestamp', min_value=1995-01-01 00:00:00+00:00")
    assert line.endswith(f"1 of {N_RATINGS} rows unexpected, e.g. [1969-12-31 00:00:00+00:00]")


def test_canonical_duplicate_user_and_movie(settings):
    tables = canonical_tables()
    tables.ratings = pd.concat([tables.ratings, tables.ratings.iloc[[6]]], ignore_index=True)
    user, movie = (int(tables.ratings.loc[6, column]) for column in ["user_id", "movie_id"])

    failure = canonical_failures(settings, tables)

    assert failure.failures == [
        "expect_compound_columns_to_be_unique(column_list=['user_id', 'movie_id']): "
        f"2 of {N_RATINGS + 1} rows unexpected, e.g. [({user}, {movie})]"
    ]


def test_indices_out_of_range(settings):
    tables = canonical_tables()
    tables.ratings.loc[0, "item_idx"] = N_MOVIES
    tables.ratings.loc[1, "user_idx"] = -1

    failure = canonical_failures(settings, tables)

    assert failure.failures == [
        "expect_column_min_to_be_between(column='user_idx', min_value=0.0): column min -1, expected >= 0.0",
        f"expect_column_max_to_be_between(column='item_idx', max_value={N_MOVIES}.0, "
        f"strict_max=True): column max {N_MOVIES}, expected < {N_MOVIES}.0",
    ]


def test_canonical_column_of_the_wrong_dtype(settings):
    tables = canonical_tables()
    tables.ratings["user_id"] = tables.ratings["user_id"].astype(np.int64)

    failure = canonical_failures(settings, tables)

    assert failure.failures == ["expect_column_values_to_be_of_type(column='user_id', type_='int32'): observed 'int64'"]


def test_canonical_rating_of_an_unknown_movie(settings):
    tables = canonical_tables()
    tables.ratings.loc[2, "movie_id"] = 99_999

    failure = canonical_failures(settings, tables)

    assert failure.suite == "canonical_rated_movies"
    [line] = failure.failures
    assert "column_A='movie_id', column_B='movie_id_in_items'" in line
    assert line.endswith("e.g. [(99999, None)]")


def test_too_few_canonical_ratings(settings):
    tables = canonical_tables()
    tables.ratings = tables.ratings.head(150)

    failure = canonical_failures(settings, tables)

    assert (
        "canonical_ratings: expect_table_row_count_to_be_between(min_value=200): row count 150, expected >= 200"
    ) in failure.failures


def test_user_without_ratings(settings):
    tables = canonical_tables()
    tables.ratings = tables.ratings[tables.ratings["user_id"] != 7]

    failure = canonical_failures(settings, tables)

    assert failure.suite == "canonical_user_activity"
    assert failure.failures == [
        "expect_column_values_to_be_between(column='n_ratings', min_value=1.0): "
        f"1 of {N_USERS} rows unexpected, e.g. [0]"
    ]


def test_too_few_active_users(tmp_path):
    limits = ValidationSettings(min_ratings=200, min_users=50, users_min_ratings_threshold=11)
    settings = Settings(home=tmp_path / "home", validation=limits)

    failure = canonical_failures(settings, canonical_tables())

    assert failure.failures == [
        "expect_column_values_to_be_between(column='n_ratings', mostly=0.5, min_value=11.0): "
        f"{N_USERS} of {N_USERS} rows unexpected (100.0%, at most 50.0% allowed), e.g. [10]",
        f"expect_table_row_count_to_be_between(min_value=50): row count {N_USERS}, expected >= 50",
    ]


def test_canonical_movie_id_listed_twice(settings):
    tables = canonical_tables()
    tables.items.loc[5, "movie_id"] = MOVIE_IDS[4]

    failure = canonical_failures(settings, tables)

    # The ratings of the movie that lost its id now point nowhere, too.
    assert failure.suite == "canonical_rated_movies, canonical_items"
    assert (
        f"canonical_items: expect_column_values_to_be_unique(column='movie_id'): 2 of {N_MOVIES} "
        f"rows unexpected, e.g. [{MOVIE_IDS[4]}]"
    ) in failure.failures


def test_unknown_genre(settings):
    tables = canonical_tables()
    tables.items.loc[1, "genres"] = "Comedy|Sitcom"
    tables.items.loc[2, "genres"] = "Comedy, Drama"

    failure = canonical_failures(settings, tables)

    [line] = failure.failures
    assert line.startswith("expect_column_values_to_match_regex(column='genres', regex='^(?:(?:Action|")
    assert f"2 of {N_MOVIES} rows unexpected, e.g. [" in line
    assert "'Comedy|Sitcom'" in line and "'Comedy, Drama'" in line


def test_implausible_release_year(settings):
    tables = canonical_tables()
    tables.items.loc[0, "year"] = 1700

    failure = canonical_failures(settings, tables)

    [line] = failure.failures
    assert line.startswith("expect_column_values_to_be_between(column='year', min_value=1870")
    # Loaded from Parquet, a nullable int16 column is float64 in pandas.
    assert line.endswith(f"1 of {N_MOVIES} rows unexpected, e.g. [1700.0]")


def test_bad_users_table(settings):
    tables = canonical_tables()
    tables.users.loc[0, "age"] = 150
    tables.users["gender"] = tables.users["gender"].cat.add_categories(["X"])
    tables.users.loc[1, "gender"] = "X"
    tables.users.loc[3, "user_idx"] = 2

    failure = canonical_failures(settings, tables)

    assert failure.failures == [
        f"expect_column_values_to_be_unique(column='user_idx'): 2 of {N_USERS} rows unexpected, e.g. [2]",
        f"expect_column_values_to_be_between(column='age', min_value=1.0, max_value=120.0): "
        f"1 of {N_USERS} rows unexpected, e.g. [150.0]",
        "expect_column_values_to_be_in_set(column='gender', value_set=['M', 'F']): "
        f"1 of {N_USERS} rows unexpected, e.g. ['X']",
    ]


def test_bad_tags(settings):
    tables = canonical_tables()
    tables.tags.loc[0, "tag"] = "  "
    tables.tags.loc[1, "timestamp"] = pd.Timestamp("1970-01-01", tz="UTC")
    tables.tags.loc[2, "movie_id"] = 99_999

    failure = canonical_failures(settings, tables)

    assert failure.suite == "canonical_tags, canonical_tagged_movies"
    tag, timestamp, movie = failure.failures
    assert tag == (
        "canonical_tags: expect_column_values_to_match_regex(column='tag', regex='\\\\S'): "
        "1 of 3 rows unexpected, e.g. ['  ']"
    )
    assert timestamp.startswith("canonical_tags: expect_column_values_to_be_between(column='timestamp'")
    assert timestamp.endswith("1 of 3 rows unexpected, e.g. [1970-01-01 00:00:00+00:00]")
    assert movie.startswith("canonical_tagged_movies: expect_column_pair_values_to_be_equal")
    assert movie.endswith("1 of 3 rows unexpected, e.g. [(99999, None)]")


# Reports and output.


def test_data_docs_are_written_before_the_failure_is_raised(settings):
    ratings = raw_ratings()
    ratings.loc[17, "rating"] = 7.0

    failure = failures_of(lambda: validate_raw(raw_dataset(ratings), settings))

    docs = settings.reports_dir / "data_docs"
    assert failure.report == docs / "index.html"
    assert failure.report.is_file()
    assert f"report: {failure.report}" in str(failure)
    [page] = (docs / "validations" / "raw_ratings").rglob("*.html")
    assert "7.0" in page.read_text()
    assert page.relative_to(docs).as_posix() in failure.report.read_text()


def test_data_docs_index_lists_raw_and_canonical_validations(settings):
    validate_raw(raw_dataset(), settings)
    report = validate_canonical(canonical_tables(), SCALE, settings, dataset="tiny")

    index = report.docs_path.read_text()
    for suite in RAW_SUITES | CANONICAL_SUITES:
        assert f"validations/{suite}/" in index, suite


def test_validation_prints_and_logs_nothing(settings, capfd, caplog):
    tables = canonical_tables()
    tables.ratings.loc[3, "rating"] = 7.0

    with caplog.at_level(logging.WARNING):
        validate_raw(raw_dataset(), settings)
        canonical_failures(settings, tables)

    out, err = capfd.readouterr()
    assert (out, err) == ("", "")  # no progress bars, no Data Docs rendering errors
    assert caplog.records == []
