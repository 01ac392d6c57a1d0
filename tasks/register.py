"""Prefect tasks of the registry stage: log the served model, register it as `challenger`, and
promote it to `champion` when the gate (`movierec.tracking.promotion`) says so."""

from __future__ import annotations

from mlflow.models.model import ModelInfo
from prefect import task
from prefect.cache_policies import NO_CACHE

from features.splits import Split
from inference.model import ServingBundle
from models.factorization import LightFMRecommender
from movierec.settings import Settings
from movierec.tracking import promotion, served_model


@task(name="log model to MLflow", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def log_model(bundle: ServingBundle, evaluation_bundle: ServingBundle, model: LightFMRecommender) -> ModelInfo:
    return served_model.log_model(bundle, evaluation_bundle, model, name="model")


@task(name="register challenger and run promotion gate", cache_policy=NO_CACHE)
def register_and_promote(
    settings: Settings, model_info: ModelInfo, held_out: Split, tags: dict[str, str], card: dict
) -> dict:
    return promotion.register_and_promote(settings, model_info.model_uri, held_out, tags, card)
