"""Flow `train`: snapshot -> split -> features (Parquet) -> fit models -> evaluate.

Every model is measured the same way: on the held-out part of the split, ranking the whole
catalogue with the user's training items excluded. Two more tables measure cold start: the models
that can score unseen items, on a split whose test items have no training interactions at all;
and the hybrid against popularity for users known only by their demographics.
"""

from __future__ import annotations

from prefect import flow

from models.families import MODEL_NAMES
from movierec.settings import get_settings
from tasks.train import evaluate_cold_items, evaluate_cold_users, fit_and_evaluate, load_snapshot, prepare_features

COLD_START_MODELS = ("mf", "content", "hybrid")


@flow(name="train", description="Fit and evaluate recommenders on a snapshot's held-out split.")
def train(
    dataset: str = "ml-latest-small",
    models: list[str] | None = None,
    snapshot_id: str | None = None,
    cold_start: bool = True,
) -> dict:
    settings = get_settings()
    chosen = tuple(models or MODEL_NAMES)
    snapshot, tables = load_snapshot(settings, dataset, snapshot_id)
    prepared, features_path = prepare_features(settings, snapshot, tables)
    table = fit_and_evaluate(settings, prepared, chosen)
    result = {
        "dataset": dataset,
        "snapshot_id": snapshot.id,
        "split": prepared.split.kind,
        "features": features_path,
        "metrics": table.reset_index().to_dict(orient="records"),
        "excluded_users": prepared.split.excluded_users,
    }
    cold_models = tuple(name for name in chosen if name in COLD_START_MODELS)
    if cold_start and cold_models:
        result["cold_items"] = (
            evaluate_cold_items(settings, tables, cold_models).reset_index().to_dict(orient="records")
        )
    if cold_start and "hybrid" in chosen:
        result["cold_users"] = evaluate_cold_users(settings, tables).reset_index().to_dict(orient="records")
    return result
