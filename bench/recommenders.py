"""Benchmark: every model family, the blend and the champion on ml-100k and ml-latest-small, by
the pipeline's own selection and evaluation code; cold items, cold users and rating errors with
their anchors; the scoring rate of the served bundle.

Protocol (the pipeline's defaults): per-user temporal split (last 20% of each user's ratings by
time, users with >= 5 ratings), positives = ratings >= 4, rankings over the full catalogue with
each user's training items excluded, k = 10. The candidates are fitted on the validation split
carved from the training part, the blend's weights and the champion chosen there
(`movierec.training.selection.select`); then every candidate is refitted on the training part and
measured on the held-out test part (`movierec.training.evaluation.evaluate_candidates`). The
hybrid is tuned first as the pipeline tunes it (`--trials`, default the settings' 20; 0: the
default LightFM settings). Tracking goes to a throwaway MLflow store.

Then cold items (10% of rated items held out with all their ratings: AUC among cold items), cold
users (10% of users held out, known only by demographics), the rating predictor against
scikit-surprise (bench/ratings.py), and the scoring rate: top-100 for every user of
ml-latest-small from the served bundle (`ServingBundle.recommend`), beside a plain numpy matrix
product of the same shape.

Usage: .venv/bin/python bench/recommenders.py [DATASET ...] [--trials N]   (MOVIEREC_DATA_DIR or ../shared/data)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd

from features.prepare import prepare
from features.splits import validation_split
from features.tables import CanonicalTables
from models.cold_start import cold_item_report, cold_user_report
from models.tune import TrialSetup, best_setup
from movierec.data.datasets import TMDB, get_spec
from movierec.data.fetch import locate, locate_optional
from movierec.data.parse import read_dataset
from movierec.data.preprocess import canonicalize
from movierec.data.snapshot import Snapshot
from movierec.data.tmdb import read_tmdb
from movierec.settings import Settings, get_settings
from movierec.training import protocol
from movierec.training.evaluation import evaluate_candidates
from movierec.training.selection import select
from movierec.training.tuning import settings_objective, settings_study

REPO = Path(__file__).resolve().parent.parent
COLUMNS = ["ndcg@10", "recall@10", "precision@10", "map@10", "coverage@10", "auc", "train_seconds"]
FAMILIES = ["popularity", "item_knn", "ease", "user_knn", "content", "mf"]


def data_dir() -> Path:
    explicit = os.environ.get("MOVIEREC_DATA_DIR")
    folder = Path(explicit) if explicit else REPO.parent / "shared" / "data"
    if not folder.is_dir():
        raise SystemExit("set MOVIEREC_DATA_DIR to a folder holding ml-100k/ and ml-latest-small/")
    return folder


def snapshot_of(dataset: str) -> tuple[CanonicalTables, Snapshot]:
    """The dataset's canonical tables (TMDB joined when present) and a stand-in snapshot holding
    what the bundles read from one (its rating scale)."""
    folder = data_dir()
    downloads = Path("/tmp/movierec-bench-downloads")
    tmdb_source = locate_optional(TMDB, folder, downloads)
    spec = get_spec(dataset)
    raw = read_dataset(spec, locate(spec, folder, downloads))
    tables, report = canonicalize(raw, read_tmdb(tmdb_source) if tmdb_source else None)
    return tables, Snapshot(dataset, f"bench-{dataset}", folder, {"preprocessing": report})


def tuned_setup(settings: Settings, tables: CanonicalTables, validation, trials: int) -> TrialSetup:
    """The hybrid's setting: the defaults with `trials` 0, else the best of an Optuna study with
    the pipeline's objective and search space on the validation split (in memory, seeded; the
    settings' timeout applies)."""
    training, tuning = settings.training, settings.tuning
    if trials == 0:
        return TrialSetup(
            {
                key: value
                for key, value in training.lightfm_params().items()
                if key not in ("num_threads", "random_state")
            },
            training.item_feature_groups,
            training.user_feature_groups,
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = settings_study(settings, "bench", "sqlite:///:memory:")
    study.optimize(settings_objective(settings, tables, validation), n_trials=trials, timeout=tuning.timeout_seconds)
    return best_setup(study, grid=tuning.sampler == "grid")


def compare(dataset: str, settings: Settings, trials: int) -> None:
    tables, snapshot = snapshot_of(dataset)
    training = settings.training
    held_out = protocol.held_out_split(settings, tables.ratings)
    setup = tuned_setup(settings, tables, validation_split(held_out), trials)

    def features(split):
        return prepare(
            tables.users,
            tables.items,
            tables.tags,
            chosen=split,
            threshold=training.positive_threshold,
            item_groups=setup.item_groups,
            user_groups=setup.user_groups,
        )

    with mlflow.start_run(run_name=f"bench {dataset}"):
        selection = select(settings, features(validation_split(held_out)), tables, snapshot, setup)
        evaluation = evaluate_candidates(settings, features(held_out), tables, snapshot, setup, selection)
    table = evaluation.table[COLUMNS].copy()
    table.insert(0, "validation ndcg@10", selection.table["ndcg@10"].reindex(table.index))
    users = len(evaluation.users)
    tuned = f"hybrid tuned by {trials} Optuna trials" if trials else "hybrid untuned"
    print(f"\n{dataset}: per-user temporal 80/20, positives >= 4, {users} test users, k=10, {tuned}")
    print(table.round(4).to_string())
    chosen = selection.chosen
    weights = ", ".join(f"{name} {weight:g}" for name, weight in selection.weights.items())
    print(
        f"blend: {weights}; EASE l2 {selection.ease_l2}; recency half-life {selection.half_life}\n"
        f"champion (chosen on validation): {chosen}, test NDCG@10 {table.loc[chosen, 'ndcg@10']:.4f}; "
        f"champion / EASE: {table.loc[chosen, 'ndcg@10'] / table.loc['ease', 'ndcg@10']:.3f}"
    )
    for name, reason in selection.skipped.items():
        print(f"skipped {name}: {reason}")
    print(f"{dataset} rating predictor on the held-out ratings:\n{evaluation.ratings.round(4).to_string()}")

    setup_cold = protocol.cold_start_setup(settings)
    cold_items = cold_item_report(tables, ("mf", "content", "hybrid"), setup=setup_cold)
    print(f"{dataset} cold items:\n{cold_items.round(4).to_string()}")
    cold_users = cold_user_report(tables, setup=setup_cold)
    print(f"{dataset} cold users:\n{cold_users.round(4).to_string()}")


def scoring_rate(settings: Settings) -> None:
    from models.bundle import serving_bundle
    from models.factorization import LightFMRecommender

    training = settings.training
    tables, _ = snapshot_of("ml-latest-small")
    prepared = prepare(
        tables.users,
        tables.items,
        tables.tags,
        chosen=protocol.held_out_split(settings, tables.ratings),
        item_groups=training.item_feature_groups,
        user_groups=training.user_feature_groups,
    )
    model = LightFMRecommender(**training.lightfm_params()).fit(
        prepared.train, item_features=prepared.item_features.matrix, user_features=prepared.user_features.matrix
    )
    bundle = serving_bundle(model, prepared, tables.users, tables.items, training.user_feature_groups)
    user_vectors, item_vectors = bundle.user_vectors, bundle.item_vectors
    users = np.arange(prepared.n_users)
    timings, plain = [], []
    for _ in range(5):
        started = time.perf_counter()
        bundle.recommend(users, 100, prepared.seen)
        timings.append(time.perf_counter() - started)
        started = time.perf_counter()
        user_vectors @ item_vectors.T
        plain.append(time.perf_counter() - started)
    best, best_plain = min(timings), min(plain)
    print(
        f"\nscoring top-100 for all {len(users)} users x {prepared.n_items} items ({user_vectors.shape[1]} dims, "
        f"train items excluded): {best * 1000:.1f} ms = {len(users) / best:,.0f} users/s; "
        f"plain numpy product of the same shape: {best_plain * 1000:.1f} ms (best of 5)"
    )


def main(datasets: list[str], trials: int) -> None:
    pd.set_option("display.width", 200)
    with tempfile.TemporaryDirectory(prefix="movierec-bench-") as home:
        os.environ["MOVIEREC_HOME"] = home
        mlflow.set_tracking_uri(f"sqlite:///{home}/mlflow.db")
        mlflow.set_experiment("bench")
        settings = get_settings()
        settings = settings.model_copy(
            update={"pipeline": settings.pipeline.model_copy(update={"baselines": FAMILIES})}
        )
        for dataset in datasets or ["ml-100k", "ml-latest-small"]:
            compare(dataset, settings, trials)
            ratings.run(dataset)  # the rating anchors: scikit-surprise on the same split
        scoring_rate(settings)


if __name__ == "__main__":
    import ratings  # bench/ratings.py: bench/ is the script's folder, first on sys.path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="*")
    parser.add_argument("--trials", type=int, default=None, help="Optuna trials for the hybrid (default: settings)")
    arguments = parser.parse_args()
    main(arguments.datasets, get_settings().tuning.trials if arguments.trials is None else arguments.trials)
