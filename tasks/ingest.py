"""Prefect tasks of the ingest flow: thin wrappers that name each step in the Prefect UI.

DataFrames pass between these tasks, so they opt out of Prefect's input-hash caching (hashing a
25M-row frame would cost more than the step itself).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from movierec import preprocess, synthetic
from movierec.datasets import TMDB, DatasetSpec
from movierec.errors import ValidationFailed
from movierec.feedback import RATING_KINDS, FeedbackStore, feedback_ratings
from movierec.fetch import SourceFiles, locate, locate_optional
from movierec.parse import read_dataset
from movierec.schema import CanonicalTables, RawDataset
from movierec.settings import Settings
from movierec.snapshot import Snapshot, SnapshotStore
from movierec.tmdb import read_tmdb


@task(name="locate dataset", cache_policy=NO_CACHE)
def locate_dataset(spec: DatasetSpec, settings: Settings) -> SourceFiles:
    ingest = settings.ingest
    return locate(
        spec,
        settings.data_dir,
        settings.downloads_dir,
        retries=ingest.download_retries,
        backoff_seconds=ingest.download_backoff_seconds,
        timeout_seconds=ingest.download_timeout_seconds,
    )


@task(name="locate tmdb", cache_policy=NO_CACHE)
def locate_tmdb(settings: Settings) -> SourceFiles | None:
    return locate_optional(TMDB, settings.data_dir, settings.downloads_dir)


@task(name="parse dataset", cache_policy=NO_CACHE)
def parse_dataset(spec: DatasetSpec, source: SourceFiles) -> RawDataset:
    return read_dataset(spec, source)


@task(name="parse tmdb", cache_policy=NO_CACHE)
def parse_tmdb(source: SourceFiles) -> pd.DataFrame:
    return read_tmdb(source)


@task(name="generate synthetic data", cache_policy=NO_CACHE)
def generate_synthetic(n_ratings: int, seed: int) -> RawDataset:
    return synthetic.generate(n_ratings, seed)


@task(name="build canonical tables", cache_policy=NO_CACHE)
def build_canonical(raw: RawDataset, tmdb: pd.DataFrame | None) -> tuple[CanonicalTables, dict]:
    return preprocess.canonicalize(raw, tmdb)


@task(name="write snapshot", cache_policy=NO_CACHE)
def write_snapshot(store: SnapshotStore, dataset: str, tables: CanonicalTables, lineage: dict) -> Snapshot:
    return store.write(dataset, tables, lineage)


# Feedback: events acknowledged by the API become ratings of the next snapshot.


@dataclass
class Feedback:
    """The stored feedback events at the time of reading."""

    path: Path
    events: pd.DataFrame  # FeedbackStore.events()
    digest: str  # FeedbackStore.digest of the rating-like events (clicks do not change a snapshot)

    @property
    def rating_events(self) -> int:
        return int(self.events["kind"].isin(RATING_KINDS).sum())


@task(name="read feedback", cache_policy=NO_CACHE)
def read_feedback(path: Path) -> Feedback | None:
    """The events of the feedback store at `path`; None if there is no store or it holds no
    rating or thumb events (clicks are not ratings), so that such inputs fingerprint as before."""
    path = Path(path)
    if not path.is_file():
        return None
    store = FeedbackStore(path)
    try:
        events, digest = store.read(kinds=RATING_KINDS)
    finally:
        store.close()
    feedback = Feedback(path, events, digest)
    return feedback if feedback.rating_events else None


@task(name="merge feedback", cache_policy=NO_CACHE)
def merge_feedback(raw: RawDataset, feedback: Feedback) -> tuple[RawDataset, pd.DataFrame, dict]:
    """`raw` with the feedback's ratings appended to its ratings, in the raw ratings' dtypes and
    timestamp representation (Unix seconds), so that the raw suites validate them like the rest.

    Per (user, movie) the latest feedback event gives one rating (`feedback_ratings`); preprocessing
    then keeps the latest rating of each pair, so a feedback rating replaces a dataset rating
    exactly when it is later. A feedback rating stamped the same second as a dataset rating of the
    pair replaces it here (the raw suites reject equal timestamps for a pair: preprocessing could
    not tell which is latest). Returns the merged dataset, the feedback ratings (with their
    event ids, in merge order) and counts for the lineage.
    """
    ratings = feedback_ratings(feedback.events, raw.rating_scale)
    seconds = ((ratings["timestamp"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
    existing = raw.ratings
    merged_rows = pd.DataFrame(
        {"user_id": ratings["user_id"].to_numpy(np.int64), "movie_id": ratings["movie_id"].to_numpy(np.int64),
         "rating": ratings["rating"].to_numpy(np.float64), "timestamp": seconds}
    )
    if pd.api.types.is_datetime64_any_dtype(existing["timestamp"]):
        merged_rows["timestamp"] = pd.to_datetime(seconds, unit="s", utc=True)
    merged_rows = merged_rows[list(existing.columns)].astype(existing.dtypes.to_dict())

    # Where each feedback rating stands against the dataset's ratings of its pair.
    keys = ["user_id", "movie_id"]
    latest = existing.groupby(keys, sort=False)["timestamp"].max().rename("dataset_timestamp").reset_index()
    against = merged_rows[keys + ["timestamp"]].merge(latest, on=keys, how="left")
    known_pair = against["dataset_timestamp"].notna().to_numpy()
    stamp = against["timestamp"].to_numpy()
    later = known_pair & (stamp > against["dataset_timestamp"].to_numpy())
    same_second = known_pair & (stamp == against["dataset_timestamp"].to_numpy())

    kept = existing
    if same_second.any():
        columns = keys + ["timestamp"]
        ties = pd.MultiIndex.from_frame(merged_rows.loc[same_second, columns])
        kept = existing[~pd.MultiIndex.from_frame(existing[columns]).isin(ties)]
    merged = dataclasses.replace(raw, ratings=pd.concat([kept, merged_rows], ignore_index=True))

    dataset_users = set(existing["user_id"].unique())
    if raw.users is not None:
        dataset_users |= set(raw.users["user_id"].unique())
    counts = {
        "path": str(feedback.path),
        "digest": feedback.digest,
        "events": len(feedback.events),
        "rating_events": feedback.rating_events,
        "clicks": int((feedback.events["kind"] == "click").sum()),
        "ratings": len(merged_rows),  # the latest rating-like event of each (user, movie)
        "new_pairs": int((~known_pair).sum()),
        "replaced": int((later | same_second).sum()),  # later than the dataset's rating of the pair
        "older_than_dataset": int((known_pair & ~later & ~same_second).sum()),  # the dataset's rating stays
        "new_users": len(set(merged_rows["user_id"].unique()) - dataset_users),
    }
    return merged, ratings, counts


def explain_feedback_failure(
    error: ValidationFailed, raw: RawDataset, feedback_rows: pd.DataFrame, dataset_rows: int, settings: Settings,
    path: Path,
) -> ValidationFailed:
    """`error` of the raw suites, with lines naming the feedback events at fault (if any): raw
    row numbers beyond the dataset's rows are feedback, which has no file line to point at."""
    scale = raw.rating_scale
    allowed = np.round(np.asarray(scale.values(), dtype=np.float64), 4)
    earliest = settings.validation.earliest_timestamp
    earliest = earliest if earliest.tzinfo else earliest.replace(tzinfo=timezone.utc)
    latest = datetime.now(timezone.utc) + timedelta(days=settings.validation.max_future_days)
    known_movies = set(raw.movies["movie_id"].to_numpy(np.int64).tolist())
    notes = []
    for row in feedback_rows.itertuples(index=False):
        problems = []
        if not np.isin(round(float(row.rating), 4), allowed):
            problems.append(f"rating {row.rating:g} is not on the scale {scale.min:g}-{scale.max:g} (step {scale.step:g})")
        if int(row.movie_id) not in known_movies:
            problems.append(f"movie {row.movie_id} is not in the catalogue")
        if not earliest <= row.timestamp.to_pydatetime() <= latest:
            problems.append(f"timestamp {row.timestamp} is outside {earliest:%Y-%m-%d} .. {latest:%Y-%m-%d}")
        if problems:
            notes.append(f"feedback event {row.event_id!r} (user {row.user_id}, movie {row.movie_id}): {'; '.join(problems)}")
    header = (f"ratings rows {dataset_rows + 1}..{dataset_rows + len(feedback_rows)} are the "
              f"{len(feedback_rows)} feedback rating(s) merged from {path}")
    explained = ValidationFailed(error.suite, error.failures, error.report)
    explained.feedback_notes = [header, *notes]
    lines = str(error).split("\n")
    at = len(lines) - 1 if error.report is not None else len(lines)  # before the "report:" line
    explained.args = ("\n".join([*lines[:at], *(f"  {note}" for note in explained.feedback_notes), *lines[at:]]),)
    return explained
