"""Prefect tasks of the registry stage: log the served model, register it as `challenger`, and
promote it to `champion` when the gate (`movierec.tracking.promotion`) says so.

With a Dask cluster in the settings (`distributed.dask_address`) the gate's scoring is sharded:
the held-out users in ranges of `distributed.shard_users`, each a `gate shard` task run on the
cluster (`tasks.shards`) measuring the version on its users; the shards' NDCG means, weighted by
their users, make the mean over all of them.
"""

from __future__ import annotations

import numpy as np
from mlflow.models.model import ModelInfo
from prefect import task
from prefect.cache_policies import NO_CACHE

from features.splits import Split
from inference.model import ServingBundle
from models.evaluation import holdout_metrics
from models.factorization import LightFMRecommender
from movierec.settings import Settings
from movierec.tracking import promotion, served_model
from tasks.shards import run_shards, worker_bundle


@task(name="log model to MLflow", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def log_model(bundle: ServingBundle, evaluation_bundle: ServingBundle, model: LightFMRecommender) -> ModelInfo:
    return served_model.log_model(bundle, evaluation_bundle, model, name="model")


@task(name="register challenger and run promotion gate", cache_policy=NO_CACHE)
def register_and_promote(
    settings: Settings, model_info: ModelInfo, held_out: Split, tags: dict[str, str], card: dict
) -> dict:
    score = None if settings.distributed.dask_address is None else sharded_scorer(settings, held_out)
    return promotion.register_and_promote(settings, model_info.model_uri, held_out, tags, card, score)


def sharded_scorer(settings: Settings, held_out: Split) -> promotion.Scorer:
    """The gate's measure (`promotion.holdout_score`) with the users sharded over the cluster."""
    user_ids = held_out.test["user_id"].to_numpy(np.int64)
    train_ids = held_out.train["user_id"].to_numpy(np.int64)
    size = settings.distributed.shard_users
    uris = {"tracking_uri": settings.tracking_uri, "registry_uri": settings.registry_uri}

    def score(model_uri: str, _bundle: ServingBundle, users: set[int]) -> float:
        ordered = np.array(sorted(users), dtype=np.int64)
        shards = [ordered[start : start + size] for start in range(0, len(ordered), size)]
        results = run_shards(
            settings,
            gate_shard,
            [
                {
                    "settings": settings,
                    "model_uri": model_uri,
                    "train": held_out.train[np.isin(train_ids, shard)],
                    "test": held_out.test[np.isin(user_ids, shard)],
                    **uris,
                }
                for shard in shards
            ],
        )
        users_scored = sum(count for _, count in results)
        return sum(value * count for value, count in results if count) / users_scored if users_scored else float("nan")

    return score


@task(name="gate shard", cache_policy=NO_CACHE, retries=1)
def gate_shard(
    settings: Settings, model_uri: str, train, test, tracking_uri: str, registry_uri: str
) -> tuple[float, int]:
    """NDCG@k of a version's evaluation twin on one shard's held-out users, and how many it scored."""
    bundle = worker_bundle(model_uri, True, tracking_uri, registry_uri)
    k = settings.training.k
    metrics = holdout_metrics(bundle, train, test, k=k, threshold=settings.training.positive_threshold)
    return metrics[f"ndcg@{k}"], metrics["n_users_evaluated"]
