"""Benchmark: what the served model gives up when its factors continue from the evaluation twin's
(`training.continue_epochs`) instead of a fit from scratch on every rating, and what it saves.

The served model learns ratings no held-out set is left to measure, so this measures the same
step one scope down, on synthetic ratings: the twin's stand-in is the hybrid fitted on the
validation split's training part (each user's earlier ratings), the served model's stand-ins on
the holdout's training part (the twin's data plus each user's next ratings), either from scratch
for the same epochs or continued from the stand-in twin for 1, 2, 3 and 5 epochs. Each is
measured on the held-out test part (NDCG@10, every user with a held-out positive, training items
excluded), beside the stand-in twin itself, which never saw the added ratings.

The hybrid has the settings' default hyperparameters and feature groups, LightFM's Hogwild threads
(`--threads`: faster, not bit-reproducible, so a difference of a few thousandths is noise).

Usage: .venv/bin/python bench/continue_fit.py [--ratings 1000000] [--epochs 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

from features.prepare import prepare
from features.splits import user_temporal_split, validation_split
from models.evaluation import evaluate
from models.factorization import LightFMRecommender, carried_over, feature_rows
from models.families import build_model
from movierec.data.preprocess import canonicalize
from movierec.data.synthetic import generate
from movierec.settings import get_settings


def main(n_ratings: int, epochs: int, threads: int) -> None:
    training = get_settings().training
    tables = canonicalize(generate(n_ratings, seed=7), None)[0]
    groups = {"item_groups": training.item_feature_groups, "user_groups": training.user_feature_groups}
    held_out = user_temporal_split(tables.ratings)
    later = prepare(tables.users, tables.items, tables.tags, chosen=held_out, **groups)
    earlier = prepare(tables.users, tables.items, tables.tags, chosen=validation_split(held_out), **groups)
    params = {**training.lightfm_params(), "epochs": epochs, "num_threads": threads}
    print(
        f"{n_ratings:,} synthetic ratings: the stand-in twin learns {earlier.seen.nnz:,}, the served model "
        f"{later.seen.nnz:,}; {later.test.nnz:,} held-out positives; hybrid, {epochs} epochs, {threads} threads"
    )

    def measured(label: str, fit) -> LightFMRecommender:
        started = time.perf_counter()
        model = fit()
        seconds = time.perf_counter() - started
        print(f"  {label:<40} NDCG@10 {evaluate(model, later)['ndcg@10']:.4f}   fit {seconds:6.1f} s")
        return model

    twin = measured("stand-in twin (no added ratings)", lambda: build_model("hybrid", earlier, params))
    measured(f"from scratch, {epochs} epochs", lambda: build_model("hybrid", later, params))
    item_rows = feature_rows(earlier.item_features.names, later.item_features.names)
    user_rows = feature_rows(earlier.user_features.names, later.user_features.names)
    for more in (1, 2, 3, 5):
        measured(
            f"continued from the twin, {more} epochs",
            lambda more=more: LightFMRecommender(name="hybrid", **{**params, "epochs": more}).fit(
                later.train,
                item_features=later.item_features.matrix,
                user_features=later.user_features.matrix,
                start=carried_over(twin.model, item_rows, user_rows, training.seed),
            ),
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args()
    main(arguments.ratings, arguments.epochs, arguments.threads)
