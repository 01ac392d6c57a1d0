"""Data validation with Great Expectations (GX 1.x).

Each table of a stage is checked by the suite of the same name in `expectations/`, a JSON file
under version control. Whatever depends on the dataset or the settings (rating scale, timestamp
bounds, minimum sizes, table lengths) is a GX suite parameter, written `{"$PARAMETER": "name"}`
in the JSON and given a value here at run time.

Some suites check small tables derived here instead of the data as given:

- `*_rated_movies`, `*_tagged_movies`: one row per distinct referenced movie id, next to the id
  found in the movie table (null if absent). `expect_column_values_to_be_in_set` with the whole
  catalogue as the set would be the direct check, but GX handles every value of the set in
  Python objects: with 90k movies one such expectation takes ~8 s and renders a 4.5 MB Data
  Docs page per run, however few rows it checks.
- `canonical_user_activity`: the number of ratings of each user.

Every call builds a throw-away GX context, validates each table, keeps the suites and results
as JSON in `<reports_dir>/gx_stores`, renders them as Data Docs (HTML) in
`<reports_dir>/data_docs`, and then, if any expectation failed, raises `ValidationFailed` with one
readable line per failed expectation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.tables import GENRES, CanonicalTables
from movierec.data.schema import RatingScale, RawDataset
from movierec.errors import ValidationFailed
from movierec.settings import Settings

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.data_context.types.base import DataContextConfig

# "|"-joined genre names, or the empty string for a movie without genres.
_GENRE = "|".join(re.escape(genre) for genre in GENRES)
GENRES_PATTERN = rf"^(?:(?:{_GENRE})(?:\|(?:{_GENRE}))*)?$"

# Release years beyond this many years from now are typos, not announced films.
MAX_YEARS_AHEAD = 5
# How many distinct bad values a failure message quotes.
SAMPLE_SIZE = 5


@dataclass
class ValidationReport:
    suites: dict[str, dict]  # per suite: {"success": bool, "evaluated": int, "failed": int}
    docs_path: Path | None  # the Data Docs index.html written for this validation


def validate_raw(raw: RawDataset, settings: Settings) -> ValidationReport:
    """Check a dataset as its source gave it, before any cleaning."""
    limits = settings.validation
    earliest, latest = _timestamp_bounds(settings)
    scale = raw.rating_scale
    parameters = {
        "rating_min": scale.min,
        "rating_max": scale.max,
        "rating_values": scale.values(),
        "timestamp_min": int(earliest.timestamp()),
        "timestamp_max": int(latest.timestamp()),
        "min_ratings": limits.min_ratings,
        "min_items": limits.min_items,
    }
    batches = {
        "raw_ratings": raw.ratings,
        "raw_rated_movies": _movie_references(raw.ratings, raw.movies, "movie_id_in_movies"),
        "raw_movies": raw.movies,
    }
    return _validate(batches, parameters, settings, run_name=f"{raw.name}-raw")


def validate_canonical(
    tables: CanonicalTables, rating_scale: RatingScale, settings: Settings, *, dataset: str
) -> ValidationReport:
    """Check the canonical tables a snapshot is about to store."""
    limits = settings.validation
    earliest, latest = _timestamp_bounds(settings)
    parameters = {
        # Canonical ratings are float32: compare them with float32 numbers. Those equal the
        # stored values even for scales float32 cannot hold exactly (steps of 0.1), and keep
        # pandas' isin vectorised (against Python floats it compares objects: 5 s per 25M rows).
        "rating_values": [np.float32(value) for value in rating_scale.values()],
        "timestamp_min": pd.Timestamp(earliest),
        "timestamp_max": pd.Timestamp(latest),
        "min_ratings": limits.min_ratings,
        "mean_rating_min": limits.mean_rating_min,
        "mean_rating_max": limits.mean_rating_max,
        "n_users": len(tables.users),
        "n_items": len(tables.items),
        "min_users": limits.min_users,
        "min_items": limits.min_items,
        "min_ratings_per_user": limits.min_ratings_per_user,
        "users_min_ratings_threshold": limits.users_min_ratings_threshold,
        "share_users_with_min_ratings": limits.share_users_with_min_ratings,
        "latest_year": datetime.now(UTC).year + MAX_YEARS_AHEAD,
        "genres_pattern": GENRES_PATTERN,
    }
    items = tables.items
    batches = {
        "canonical_ratings": tables.ratings,
        "canonical_rated_movies": _movie_references(tables.ratings, items, "movie_id_in_items"),
        "canonical_user_activity": _user_activity(tables.ratings, tables.users),
        "canonical_items": items,
        "canonical_users": tables.users,
        "canonical_tags": tables.tags,
        "canonical_tagged_movies": _movie_references(tables.tags, items, "movie_id_in_items"),
    }
    return _validate(batches, parameters, settings, run_name=f"{dataset}-canonical")


def validate_fresh_ratings(
    ratings: pd.DataFrame, movies: pd.DataFrame, rating_scale: RatingScale, settings: Settings, *, dataset: str
) -> list[str]:
    """Check ratings that arrived after a model's training data (monitoring) with the raw
    ratings suites of ingestion: columns, nulls, the scale, plausible timestamps, one rating per
    user, movie and time, every movie in `movies`. `ratings`: user_id, movie_id, rating,
    timestamp (Unix seconds or datetimes). Returns one line per failed expectation (none: valid)."""
    earliest, latest = _timestamp_bounds(settings)
    frame = ratings[["user_id", "movie_id", "rating", "timestamp"]].copy()
    if pd.api.types.is_datetime64_any_dtype(frame["timestamp"]):  # as the raw suites read them
        stamps = pd.to_datetime(frame["timestamp"], utc=True)
        frame["timestamp"] = (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    parameters = {
        "rating_min": rating_scale.min,
        "rating_max": rating_scale.max,
        "rating_values": rating_scale.values(),
        "timestamp_min": int(earliest.timestamp()),
        "timestamp_max": int(latest.timestamp()),
        "min_ratings": 1,
    }
    batches = {
        "raw_ratings": frame,
        "raw_rated_movies": _movie_references(frame, movies, "movie_id_in_movies"),
    }
    try:
        _validate(batches, parameters, settings, run_name=f"{dataset}-fresh")
    except ValidationFailed as failed:
        return failed.failures
    return []


def _timestamp_bounds(settings: Settings) -> tuple[datetime, datetime]:
    """Plausible rating times: from the configured start until a little after now (clock skew)."""
    earliest = settings.validation.earliest_timestamp
    if earliest.tzinfo is None:
        earliest = earliest.replace(tzinfo=UTC)
    latest = datetime.now(UTC) + timedelta(days=settings.validation.max_future_days)
    return earliest, latest


# Derived tables. A frame lacking the columns one needs yields None: its own suite then
# reports the missing column, and the derived suite is skipped.


def _movie_references(referencing: pd.DataFrame, movies: pd.DataFrame, found_column: str) -> pd.DataFrame | None:
    """One row per distinct movie_id of `referencing`; `found_column` holds the same id if
    `movies` lists it, else None."""
    if "movie_id" not in referencing.columns or "movie_id" not in movies.columns:
        return None
    referenced = referencing["movie_id"].dropna().drop_duplicates().sort_values().to_numpy()
    known = pd.Series(referenced).isin(movies["movie_id"]).to_numpy()
    return pd.DataFrame({"movie_id": referenced, found_column: np.where(known, referenced.astype(object), None)})


def _user_activity(ratings: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame | None:
    """Ratings per user, counting users of the users table who rated nothing as 0."""
    if "user_id" not in ratings.columns or "user_id" not in users.columns:
        return None
    counts = ratings["user_id"].value_counts()
    everyone = counts.index.union(pd.Index(users["user_id"].dropna().unique()))
    counts = counts.reindex(everyone, fill_value=0)
    return pd.DataFrame({"user_id": everyone.to_numpy(), "n_ratings": counts.to_numpy(np.int64)})


# Running the suites.


def _validate(
    batches: dict[str, pd.DataFrame | None],
    parameters: dict[str, Any],
    settings: Settings,
    *,
    run_name: str,
) -> ValidationReport:
    # GX takes seconds to import; importing it here keeps commands that never validate fast.
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    docs_dir = settings.reports_dir / "data_docs"
    context = gx.get_context(
        mode="ephemeral",
        project_config=_project_config(settings.reports_dir / "gx_stores", docs_dir),
    )
    source = context.data_sources.add_pandas("movierec")
    # One run id groups this call's results in Data Docs.
    run_id = RunIdentifier(run_name=run_name, run_time=datetime.now(UTC))

    results: dict[str, ExpectationSuiteValidationResult] = {}
    rendered: list[ExpectationSuiteIdentifier | ValidationResultIdentifier] = []
    for name, frame in batches.items():
        if frame is None:
            continue
        suite = context.suites.add_or_update(_load_suite(name))
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        result = definition.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=parameters,
            run_id=run_id,
        )
        results[name] = result
        suite_id = ExpectationSuiteIdentifier(name=name)
        rendered += [
            suite_id,
            ValidationResultIdentifier(
                expectation_suite_identifier=suite_id,
                run_id=run_id,
                batch_identifier=result.batch_id,
            ),
        ]

    # Render this call's pages only; the index lists every validation stored so far, so the
    # raw and the canonical validation of an ingest (and earlier ones) appear side by side.
    context.build_data_docs(resource_identifiers=rendered)
    docs_path = docs_dir / "index.html"
    report = ValidationReport(
        suites={
            name: {
                "success": bool(result.success),
                "evaluated": result.statistics["evaluated_expectations"],
                "failed": result.statistics["unsuccessful_expectations"],
            }
            for name, result in results.items()
        },
        docs_path=docs_path,
    )

    failed = {name: result for name, result in results.items() if not result.success}
    if failed:
        failures = [
            # With several suites failing, each line says which one it comes from.
            f"{name}: {line}" if len(failed) > 1 else line
            for name, result in failed.items()
            for line in _describe_failures(result)
        ]
        raise ValidationFailed(", ".join(failed), failures, docs_path)
    return report


def _project_config(stores_dir: Path, docs_dir: Path) -> DataContextConfig:
    """A GX project configured in memory. Suites and validation results are kept as JSON in
    `stores_dir`, which Data Docs (HTML in `docs_dir`) are rendered from."""
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # Without init_temp_docs_sites, which would add a second Data Docs site in a temporary folder.
    defaults = InMemoryStoreBackendDefaults()
    for store_name, folder in [
        (defaults.expectations_store_name, "expectations"),
        (defaults.validation_results_store_name, "validations"),
    ]:
        defaults.stores[store_name]["store_backend"] = _filesystem(stores_dir / folder)
    site = {
        "class_name": "SiteBuilder",
        "store_backend": _filesystem(docs_dir),
        "site_index_builder": {
            "class_name": "DefaultSiteIndexBuilder",
            "show_how_to_buttons": False,
        },
    }
    return DataContextConfig(
        store_backend_defaults=defaults,
        data_docs_sites={"movierec": site},
        # GX 1.24 sends no usage statistics; this keeps it so should an update bring them back.
        analytics_enabled=False,
        # tqdm bars ("Calculating Metrics") would otherwise clutter the CLI's output.
        progress_bars=ProgressBarsConfig(globally=False),
    )


def _filesystem(folder: Path) -> dict:
    return {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(folder)}


def suite_path(name: str) -> Traversable:
    """The JSON file of suite `name` in the `expectations` package (a file of an install too)."""
    return resources.files("expectations").joinpath(f"{name}.json")


def suite_names() -> list[str]:
    return sorted(
        entry.name.removesuffix(".json")
        for entry in resources.files("expectations").iterdir()
        if entry.name.endswith(".json")
    )


def _load_suite(name: str) -> ExpectationSuite:
    import great_expectations as gx

    path = suite_path(name)
    spec = json.loads(path.read_text())
    suite = gx.ExpectationSuite(**spec)
    # GX logs and drops an expectation it cannot parse; a check that silently vanished would
    # pass every time.
    if len(suite.expectations) != len(spec["expectations"]):
        raise ValueError(f"{path}: GX could not parse every expectation (see the log above)")
    return suite


# Failure messages.


def _describe_failures(result: ExpectationSuiteValidationResult) -> list[str]:
    """One line per failed expectation of a suite's result."""
    return [_describe_failure(outcome) for outcome in result.results if not outcome.success]


def _describe_failure(outcome: ExpectationValidationResult) -> str:
    """`expectation(arguments): what was found`, e.g.
    `expect_column_values_to_be_between(column='rating', min_value=0.5, max_value=5.0): 1 of
    100836 rows unexpected, e.g. [7.0]`."""
    config = outcome.expectation_config
    kwargs = {key: value for key, value in config.kwargs.items() if key != "batch_id"}
    call = f"{config.type}({', '.join(f'{key}={_show(value)}' for key, value in kwargs.items())})"
    return f"{call}: {_finding(config.type, kwargs, outcome)}"


def _finding(kind: str, kwargs: dict, outcome: ExpectationValidationResult) -> str:
    # GX reports an error either for the expectation or per metric it could not compute
    # (e.g. of a missing column).
    info = outcome.exception_info or {}
    for error in [info, *info.values()]:
        if isinstance(error, dict) and error.get("raised_exception"):
            return f"could not be evaluated: {error.get('exception_message')}"
    result = outcome.result or {}

    # Row-by-row expectations: how many rows failed, and a few of their values.
    if "element_count" in result:
        finding = f"{result['unexpected_count']} of {result['element_count']} rows unexpected"
        mostly = kwargs.get("mostly", 1)
        if mostly < 1:
            allowed = 100 * (1 - mostly)
            finding += f" ({result['unexpected_percent']:.1f}%, at most {allowed:.1f}% allowed)"
        samples = [entry["value"] for entry in result.get("partial_unexpected_counts", [])]
        samples = samples or result.get("partial_unexpected_list", [])
        finding += f", e.g. {_show(samples[:SAMPLE_SIZE])}"
        # Raw frames keep the order of their file, so there a row number is the data row of the
        # file (its line, less any header); canonical tables are sorted by key.
        positions = [p for p in result.get("partial_unexpected_index_list") or [] if isinstance(p, (int, np.integer))]
        if positions:
            finding += f" at row(s) {_show([int(p) + 1 for p in positions[:SAMPLE_SIZE]])}"
        return finding

    observed = result.get("observed_value")
    if isinstance(observed, np.generic):
        observed = observed.item()
    # Aggregates with bounds (row count, mean, min, max): the observed value against the bounds.
    quantity = re.fullmatch(r"expect_(?:table_)?(\w+?)_to_be_between", kind)
    if quantity and isinstance(observed, (int, float)):
        bounds = []
        if kwargs.get("min_value") is not None:
            operator = ">" if kwargs.get("strict_min") else ">="
            bounds.append(f"{operator} {_show(kwargs['min_value'])}")
        if kwargs.get("max_value") is not None:
            operator = "<" if kwargs.get("strict_max") else "<="
            bounds.append(f"{operator} {_show(kwargs['max_value'])}")
        label = quantity.group(1).replace("_", " ")
        return f"{label} {_show(observed)}, expected {' and '.join(bounds)}"
    # Column lists: what is missing and what is extra.
    if "column_set" in kwargs or "column_list" in kwargs:
        expected = kwargs.get("column_set") or kwargs.get("column_list")
        missing = [column for column in expected if column not in observed]
        extra = [column for column in observed if column not in expected]
        if missing or extra:
            return f"missing columns {missing}, unexpected columns {extra}"
        return f"columns out of order: {observed}"
    return f"observed {_show(observed)}"


def _show(value: Any) -> str:
    """A short, plain rendering of a value: numpy scalars as Python numbers, NaN as None."""
    if isinstance(value, (list, tuple)):
        shown = ", ".join(_show(item) for item in value)
        return f"({shown})" if isinstance(value, tuple) else f"[{shown}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_show(item)}" for key, item in value.items()) + "}"
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "None"
    if isinstance(value, (pd.Timestamp, datetime)):
        return str(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
