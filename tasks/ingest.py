"""Prefect tasks of the ingest flow: thin wrappers that name each step in the Prefect UI.

DataFrames pass between these tasks, so they opt out of Prefect's input-hash caching (hashing a
25M-row frame would cost more than the step itself).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from features.tables import CanonicalTables
from movierec.data import feedback, preprocess, synthetic
from movierec.data.datasets import TMDB, DatasetSpec
from movierec.data.feedback import Feedback
from movierec.data.fetch import SourceFiles, locate, locate_optional
from movierec.data.parse import read_dataset
from movierec.data.schema import RawDataset
from movierec.data.snapshot import Snapshot, SnapshotStore
from movierec.data.tmdb import read_tmdb
from movierec.settings import Settings


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


@task(name="read feedback", cache_policy=NO_CACHE)
def read_feedback(path: Path) -> Feedback | None:
    return feedback.read_feedback(path)


@task(name="screen feedback", cache_policy=NO_CACHE)
def hold_back_feedback(raw: RawDataset, events: Feedback, settings: Settings) -> pd.DataFrame:
    """What `feedback.hold_back` keeps out of the snapshot; the events it newly finds are put in
    the store's quarantine (kept, listed and released by `movierec feedback`)."""
    held = feedback.hold_back(raw, events, settings)
    new = held[held["new"]]
    if len(new):
        store = feedback.FeedbackStore(events.path)
        try:
            store.quarantine(new, raw.name)
        finally:
            store.close()
    return held


@task(name="merge feedback", cache_policy=NO_CACHE)
def merge_feedback(raw: RawDataset, events: Feedback, held: pd.DataFrame) -> tuple[RawDataset, pd.DataFrame, dict]:
    return feedback.merge_feedback(raw, events, held)
