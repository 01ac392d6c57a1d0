"""Every model family by name: a fitted model of that family from prepared data."""

from __future__ import annotations

from features.prepare import Prepared
from models import baselines
from models.base import Recommender
from models.factorization import BiasedMF, LightFMRecommender

MODEL_NAMES = ("popularity", "item_knn", "ease", "user_knn", "content", "mf", "hybrid", "biased_mf")


def build_model(name: str, prepared: Prepared, lightfm_params: dict | None = None) -> Recommender:
    """A fitted model of family `name`; `lightfm_params` go to the LightFM families (mf, hybrid)."""
    lightfm_params = lightfm_params or {}
    if name == "popularity":
        return baselines.Popularity().fit(prepared.train)
    if name == "item_knn":
        return baselines.ItemKNN().fit(prepared.train)
    if name == "ease":
        return baselines.EASE().fit(prepared.train)
    if name == "user_knn":
        return baselines.UserKNN().fit(prepared.train)
    if name == "content":
        # The FeatureMatrix (its groups are normalised one by one); the ratings tell which items
        # have training data even when nobody liked them (the popularity prior).
        return baselines.ContentBased(prepared.metadata_features).fit(prepared.train, ratings=prepared.seen)
    if name == "mf":
        return LightFMRecommender(name="mf", **lightfm_params).fit(prepared.train)
    if name == "hybrid":
        return LightFMRecommender(name="hybrid", **lightfm_params).fit(
            prepared.train, item_features=prepared.item_features.matrix, user_features=prepared.user_features.matrix
        )
    if name == "biased_mf":
        return BiasedMF().fit(prepared.seen)
    raise ValueError(f"unknown model '{name}'; choose from {', '.join(MODEL_NAMES)}")


def unscalable(name: str, n_items: int) -> str | None:
    """Why family `name` is not fitted on a catalogue of `n_items` items, or None if it is."""
    if name == "ease" and n_items > baselines.EASE_MAX_ITEMS:
        return (
            f"ease skipped: {n_items} items exceed its limit of {baselines.EASE_MAX_ITEMS} "
            f"(a dense {n_items} x {n_items} inverse)"
        )
    return None
