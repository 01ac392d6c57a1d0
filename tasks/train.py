"""Prefect tasks that fit and evaluate models: the `train` flow's comparison and cold-start
reports, and the `retrain` flow's final training and held-out evaluation (tracked in MLflow).
Matrices and frames pass between them, so no input-hash caching."""

from __future__ import annotations

import time
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from models import compare
from models.factorization import LightFMRecommender
from models.tune import TrialSetup
from movierec import report, tracking
from movierec.errors import DataError
from movierec.feature_store import write_features
from movierec.schema import CanonicalTables
from movierec.settings import Settings
from movierec.snapshot import Snapshot, SnapshotStore
from tasks.tune import setup_params


@task(name="load snapshot", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
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


def cold_start_setup(settings: Settings) -> compare.ColdStartSetup:
    training = settings.training
    return compare.ColdStartSetup(
        threshold=training.positive_threshold,
        item_groups=training.item_feature_groups,
        user_groups=training.user_feature_groups,
        lightfm_params=training.lightfm_params(),
        seed=training.seed,
    )


@task(name="evaluate on cold items", cache_policy=NO_CACHE)
def evaluate_cold_items(settings: Settings, tables: CanonicalTables, models: tuple[str, ...]) -> pd.DataFrame:
    return compare.cold_item_report(tables, models, item_share=settings.training.cold_item_share, setup=cold_start_setup(settings))


@task(name="evaluate on cold users", cache_policy=NO_CACHE)
def evaluate_cold_users(settings: Settings, tables: CanonicalTables) -> pd.DataFrame:
    training = settings.training
    return compare.cold_user_report(tables, k=training.k, user_share=training.cold_user_share, setup=cold_start_setup(settings))


@task(name="train final hybrid on train + validation", cache_policy=NO_CACHE)
def train_final(settings: Settings, prepared: compare.Prepared, setup: TrialSetup) -> LightFMRecommender:
    """The tuned setting refit on the whole training part (validation included), for as many
    epochs as its best validation epoch; the held-out test part stays unseen."""
    mlflow.log_params(setup_params(setup))
    lightfm = {**setup.lightfm, "num_threads": settings.training.num_threads, "random_state": settings.training.seed}
    return LightFMRecommender(name="hybrid", **lightfm).fit(
        prepared.train, item_features=prepared.item_features.matrix, user_features=prepared.user_features.matrix
    )


@dataclass
class Evaluation:
    table: pd.DataFrame  # one row per model, test metrics
    curves: pd.DataFrame  # metric@k per model
    recommended: dict[str, np.ndarray]  # each model's top lists for `users`
    users: np.ndarray  # evaluated test users (at least one held-out positive)


@task(name="evaluate on held-out test data", cache_policy=NO_CACHE)
def evaluate_models(settings: Settings, prepared: compare.Prepared, hybrid: LightFMRecommender) -> Evaluation:
    """The tuned hybrid and every baseline on the same held-out split; each baseline in a nested
    MLflow run, the hybrid's metrics on the parent run (prefix `test_`)."""
    k, ks = settings.training.k, sorted(set(settings.pipeline.curve_ks) | {settings.training.k})
    users = compare.evaluated_users(prepared)
    rows, recommended = [], {}
    for name in ("hybrid", *settings.pipeline.baselines):
        started = time.perf_counter()
        model = hybrid if name == "hybrid" else compare.build_model(name, prepared, settings.training.lightfm_params())
        seconds = time.perf_counter() - started
        metrics = compare.evaluate(model, prepared, k=k)
        recommended[name] = model.recommend(users, max(ks), exclude=prepared.seen)[0]
        rows.append({"model": name, **metrics, "train_seconds": seconds})
        if name == "hybrid":
            mlflow.log_metrics(tracking.finite_metrics(metrics, prefix="test_"))
            continue
        with mlflow.start_run(run_name=f"baseline {name}", nested=True, tags={"kind": "baseline", "model": name}):
            params = {"model": name, **(settings.training.lightfm_params() if name == "mf" else {})}
            mlflow.log_params(params)
            mlflow.log_metrics({**tracking.finite_metrics(metrics, prefix="test_"), "train_seconds": seconds})
    curves = report.metric_curves(recommended, prepared.test, users, prepared.n_items, ks=tuple(ks))
    mlflow.log_figure(report.plot_metric_curves(curves), "plots/metric_at_k.png")
    mlflow.log_figure(report.plot_popularity_coverage(recommended, prepared.train), "plots/popularity_coverage.png")
    table = pd.DataFrame(rows).set_index("model")
    mlflow.log_table(table.reset_index(), "metrics/test_metrics.json")
    mlflow.log_table(curves, "metrics/metric_at_k.json")
    return Evaluation(table=table, curves=curves, recommended=recommended, users=users)
