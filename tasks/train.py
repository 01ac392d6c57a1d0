"""Prefect tasks of the train flow: load a snapshot, prepare split and features, fit and
evaluate models. Matrices and frames pass between them, so no input-hash caching."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from models import compare
from movierec.errors import DataError
from movierec.feature_store import write_features
from movierec.schema import CanonicalTables
from movierec.settings import Settings
from movierec.snapshot import Snapshot, SnapshotStore


@task(name="load snapshot", cache_policy=NO_CACHE)
def load_snapshot(settings: Settings, dataset: str, snapshot_id: str | None) -> tuple[Snapshot, CanonicalTables]:
    store = SnapshotStore(settings.snapshots_dir)
    snapshot = store.get(dataset, snapshot_id) if snapshot_id else store.latest(dataset)
    if snapshot is None:
        raise DataError(f"no snapshot of {dataset} in {store.dataset_dir(dataset)}; run `movierec ingest --dataset {dataset}`")
    return snapshot, store.load(snapshot)


def feature_settings(settings: Settings) -> dict:
    training = settings.training
    return {
        "split": training.split,
        "test_share": training.test_share,
        "min_user_ratings": training.min_user_ratings,
        "seed": training.seed,
        "positive_threshold": training.positive_threshold,
        "item_feature_groups": training.item_feature_groups,
        "user_feature_groups": training.user_feature_groups,
    }


@task(name="split and build features", cache_policy=NO_CACHE)
def prepare_features(settings: Settings, snapshot: Snapshot, tables: CanonicalTables) -> tuple[compare.Prepared, str]:
    training = settings.training
    chosen = compare.default_split(
        tables.ratings, training.split, test_share=training.test_share, min_ratings=training.min_user_ratings, seed=training.seed
    )
    prepared = compare.prepare(
        tables.users,
        tables.items,
        tables.tags,
        chosen=chosen,
        threshold=training.positive_threshold,
        item_groups=training.item_feature_groups,
        user_groups=training.user_feature_groups,
    )
    folder = write_features(snapshot.path, feature_settings(settings), {"item": prepared.item_features, "user": prepared.user_features})
    return prepared, str(folder)


@task(name="fit and evaluate models", cache_policy=NO_CACHE)
def fit_and_evaluate(settings: Settings, prepared: compare.Prepared, models: tuple[str, ...]) -> pd.DataFrame:
    return compare.compare(prepared, models, k=settings.training.k, lightfm_params=settings.training.lightfm_params())


@task(name="evaluate on cold items", cache_policy=NO_CACHE)
def evaluate_cold_items(settings: Settings, tables: CanonicalTables, models: tuple[str, ...]) -> pd.DataFrame:
    training = settings.training
    return compare.cold_item_report(
        tables.ratings,
        tables.users,
        tables.items,
        tables.tags,
        models,
        item_share=training.cold_item_share,
        seed=training.seed,
        threshold=training.positive_threshold,
        item_groups=training.item_feature_groups,
        user_groups=training.user_feature_groups,
        lightfm_params=settings.training.lightfm_params(),
    )


@task(name="evaluate on cold users", cache_policy=NO_CACHE)
def evaluate_cold_users(settings: Settings, tables: CanonicalTables) -> pd.DataFrame:
    training = settings.training
    return compare.cold_user_report(
        tables.ratings,
        tables.users,
        tables.items,
        tables.tags,
        k=training.k,
        user_share=training.cold_item_share,
        seed=training.seed,
        threshold=training.positive_threshold,
        item_groups=training.item_feature_groups,
        user_groups=training.user_feature_groups,
        lightfm_params=training.lightfm_params(),
    )
