"""Benchmark: how far Optuna tuning takes the LightFM hybrid on the held-out test split.

Tunes on a validation split carved from the training part (per-user temporal, like the test
split), with per-epoch pruning; then refits the best setting on the whole training part and
measures NDCG@10 / Recall@10 on the test split, which tuning never saw.

Usage: .venv/bin/python bench/tune_hybrid.py [DATASET] [TRIALS]   (default ml-100k, 25)
"""

from __future__ import annotations

import sys
import tempfile
import time

import optuna
from recommenders import snapshot_of

from features.prepare import prepare
from features.splits import user_temporal_split, validation_split
from models.evaluation import evaluate
from models.factorization import LightFMRecommender
from models.tune import create_study, make_objective, suggest


def main(dataset: str, trials: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tables = snapshot_of(dataset)[0]
    held_out = user_temporal_split(tables.ratings)
    validation = validation_split(held_out)
    frames = {"users": tables.users, "items": tables.items, "tags": tables.tags}
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        study = create_study(dataset, f"sqlite:///{folder}/optuna.db", seed=1)
        study.optimize(make_objective(validation, frames, max_epochs=40), n_trials=trials)
        seconds = time.perf_counter() - started
    states = [trial.state for trial in study.trials]
    best = study.best_trial
    print(f"{dataset}: {len(states)} trials, {states.count(optuna.trial.TrialState.PRUNED)} pruned, {seconds:.0f} s")
    print(f"best validation NDCG@10 {best.value:.4f} at epoch {best.user_attrs['best_epoch']}: {best.params}")
    setup = suggest(optuna.trial.FixedTrial(best.params), max_epochs=best.user_attrs["best_epoch"])
    prepared = prepare(
        tables.users,
        tables.items,
        tables.tags,
        chosen=held_out,
        item_groups=setup.item_groups,
        user_groups=setup.user_groups,
    )
    model = LightFMRecommender(random_state=42, **setup.lightfm).fit(
        prepared.train, item_features=prepared.item_features.matrix, user_features=prepared.user_features.matrix
    )
    metrics = evaluate(model, prepared)
    print(f"tuned hybrid on the test split: NDCG@10 {metrics['ndcg@10']:.4f}, Recall@10 {metrics['recall@10']:.4f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "ml-100k", int(sys.argv[2]) if len(sys.argv) > 2 else 25)
