"""Benchmark: every model family on ml-100k and ml-latest-small, same protocol for all.

Protocol: per-user temporal split (last 20% of each user's ratings by time, users with >= 5
ratings), positives = ratings >= 4, rankings over the full catalogue with each user's training
items excluded, k = 10. Then cold items (10% of rated items held out with all their ratings):
AUC among cold items. Then the scoring rate: top-100 for every user of ml-latest-small from the
hybrid's served bundle (`ServingBundle.recommend`, the path of the export, the gate and the
evaluation), beside a plain numpy matrix product of the same shape.

Usage: .venv/bin/python bench/recommenders.py [DATASET ...]   (needs MOVIEREC_DATA_DIR or ../shared/data)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.prepare import prepare
from features.splits import user_temporal_split
from models.bundle import serving_bundle
from models.cold_start import ColdStartSetup, cold_item_report
from models.evaluation import compare
from models.factorization import LightFMRecommender
from models.families import MODEL_NAMES
from movierec.data.datasets import TMDB, get_spec
from movierec.data.fetch import locate, locate_optional
from movierec.data.parse import read_dataset
from movierec.data.preprocess import canonicalize
from movierec.data.tmdb import read_tmdb
from movierec.settings import TrainingSettings

REPO = Path(__file__).resolve().parent.parent
COLUMNS = ["ndcg@10", "recall@10", "precision@10", "map@10", "coverage@10", "train_seconds"]


def data_dir() -> Path:
    explicit = os.environ.get("MOVIEREC_DATA_DIR")
    folder = Path(explicit) if explicit else REPO.parent / "shared" / "data"
    if not folder.is_dir():
        raise SystemExit("set MOVIEREC_DATA_DIR to a folder holding ml-100k/ and ml-latest-small/")
    return folder


def tables_of(dataset: str):
    folder = data_dir()
    downloads = Path("/tmp/movierec-bench-downloads")
    tmdb_source = locate_optional(TMDB, folder, downloads)
    spec = get_spec(dataset)
    raw = read_dataset(spec, locate(spec, folder, downloads))
    return canonicalize(raw, read_tmdb(tmdb_source) if tmdb_source else None)[0]


def main(datasets: list[str]) -> None:
    settings = TrainingSettings()
    params = settings.lightfm_params()
    pd.set_option("display.width", 200)
    for dataset in datasets or ["ml-100k", "ml-latest-small"]:
        tables = tables_of(dataset)
        chosen = user_temporal_split(tables.ratings, test_share=0.2, min_ratings=5)
        prepared = prepare(
            tables.users,
            tables.items,
            tables.tags,
            chosen=chosen,
            item_groups=settings.item_feature_groups,
            user_groups=settings.user_feature_groups,
        )
        table = compare(prepared, MODEL_NAMES, k=10, lightfm_params=params)
        users = table["n_users_evaluated"].iloc[0]
        print(f"\n{dataset}: per-user temporal 80/20, positives >= 4, {users} test users, k=10")
        print(table[COLUMNS].round(4).to_string())
        if "rmse" in table:
            row = table.loc["biased_mf"]
            print(f"biased_mf rating errors: MAE {row['mae']:.4f}  RMSE {row['rmse']:.4f}")
        cold = cold_item_report(
            tables,
            ("mf", "content", "hybrid"),
            setup=ColdStartSetup(
                item_groups=settings.item_feature_groups,
                user_groups=settings.user_feature_groups,
                lightfm_params=params,
            ),
        )
        print(f"{dataset} cold items:\n{cold.round(4).to_string()}")

    tables = tables_of("ml-latest-small")
    chosen = user_temporal_split(tables.ratings)
    prepared = prepare(
        tables.users,
        tables.items,
        tables.tags,
        chosen=chosen,
        item_groups=settings.item_feature_groups,
        user_groups=settings.user_feature_groups,
    )
    model = LightFMRecommender(**params).fit(
        prepared.train, item_features=prepared.item_features.matrix, user_features=prepared.user_features.matrix
    )
    bundle = serving_bundle(model, prepared, tables.users, tables.items, settings.user_feature_groups)
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


if __name__ == "__main__":
    main(sys.argv[1:])
