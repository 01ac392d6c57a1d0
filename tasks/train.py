"""Prefect tasks that fit and evaluate models: the `train` flow's comparison and cold-start
reports, and the `retrain` flow's final training, bundling and held-out evaluation (tracked in
MLflow). Matrices and frames pass between them, so no input-hash caching."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from features.prepare import Prepared, prepare
from features.tables import CanonicalTables
from models.cold_start import cold_item_report, cold_user_report
from models.evaluation import compare
from models.tune import TrialSetup
from movierec.data.feature_store import write_features
from movierec.data.snapshot import Snapshot, SnapshotStore
from movierec.settings import Settings
from movierec.training import protocol
from movierec.training.evaluation import Evaluation, Served, evaluate_candidates, refit_for_serving
from movierec.training.selection import Selection, select


@task(name="load snapshot", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def load_snapshot(settings: Settings, dataset: str, snapshot_id: str | None) -> tuple[Snapshot, CanonicalTables]:
    store = SnapshotStore(settings.snapshots_dir)
    snapshot = store.require(dataset, snapshot_id)
    return snapshot, store.load(snapshot)


@task(name="split and build features", cache_policy=NO_CACHE)
def prepare_features(settings: Settings, snapshot: Snapshot, tables: CanonicalTables) -> tuple[Prepared, str]:
    training = settings.training
    prepared = prepare(
        tables.users,
        tables.items,
        tables.tags,
        chosen=protocol.held_out_split(settings, tables.ratings),
        threshold=training.positive_threshold,
        item_groups=training.item_feature_groups,
        user_groups=training.user_feature_groups,
    )
    features = {"item": prepared.item_features, "user": prepared.user_features}
    folder = write_features(snapshot.path, protocol.feature_settings(settings), features)
    return prepared, str(folder)


@task(name="fit and evaluate models", cache_policy=NO_CACHE)
def fit_and_evaluate(settings: Settings, prepared: Prepared, models: tuple[str, ...]) -> pd.DataFrame:
    return compare(prepared, models, k=settings.training.k, lightfm_params=settings.training.lightfm_params())


@task(name="evaluate on cold items", cache_policy=NO_CACHE)
def evaluate_cold_items(settings: Settings, tables: CanonicalTables, models: tuple[str, ...]) -> pd.DataFrame:
    setup = protocol.cold_start_setup(settings)
    return cold_item_report(tables, models, item_share=settings.training.cold_item_share, setup=setup)


@task(name="evaluate on cold users", cache_policy=NO_CACHE)
def evaluate_cold_users(settings: Settings, tables: CanonicalTables) -> pd.DataFrame:
    training = settings.training
    return cold_user_report(
        tables, k=training.k, user_share=training.cold_user_share, setup=protocol.cold_start_setup(settings)
    )


@task(name="select the model on validation", cache_policy=NO_CACHE)
def select_model(
    settings: Settings, prepared: Prepared, tables: CanonicalTables, snapshot: Snapshot, setup: TrialSetup
) -> Selection:
    return select(settings, prepared, tables, snapshot, setup)


@task(name="fit and evaluate candidates on held-out test data", cache_policy=NO_CACHE)
def evaluate_models(
    settings: Settings,
    prepared: Prepared,
    tables: CanonicalTables,
    snapshot: Snapshot,
    setup: TrialSetup,
    selection: Selection,
) -> Evaluation:
    return evaluate_candidates(settings, prepared, tables, snapshot, setup, selection)


@task(name="refit the chosen model on every rating", cache_policy=NO_CACHE)
def refit_chosen(
    settings: Settings,
    prepared: Prepared,
    tables: CanonicalTables,
    snapshot: Snapshot,
    setup: TrialSetup,
    selection: Selection,
    evaluation: Evaluation,
) -> Served:
    return refit_for_serving(settings, prepared, tables, snapshot, setup, selection, evaluation.starts)
