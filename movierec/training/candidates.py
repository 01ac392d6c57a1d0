"""Candidates for the registered model, and the bundle each is served as.

A candidate is a name: "hybrid" (the Optuna-tuned LightFM hybrid), "blend" (the hybrid with EASE
and item kNN, weights from the validation split: `models.blend`), or a baseline of
`pipeline.baselines` a bundle can serve: popularity, item_knn, ease, mf. user_knn and content are
measured but never registered: the served model has no form for them (`NOT_SERVABLE`).

Every bundle carries the hybrid's factors, even when its recipe does not score with them: they
place a new user from demographics, find similar movies and say "because you liked ...". The mf
candidate is the exception; its own factors are the bundle's. Every bundle also carries the
content model: the movies nobody has rated yet are ranked by their metadata, whatever the recipe.

A candidate is fitted on three scopes of the same snapshot: the validation split's training part
(to choose it), the holdout's training part (its test metrics and the gate: the evaluation
twin), and every rating (what is served). `fit_candidate` fits it the same way on any of them;
on every rating, its factor model may instead continue from the twin's (`training.continue_epochs`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from features.interactions import recency_ranked
from features.prepare import Prepared
from features.tables import CanonicalTables
from inference.model import FACTORS, POPULARITY, ServingBundle
from models.base import Recommender
from models.blend import item_item_models, served_item_item
from models.factorization import BiasedMF, LightFMRecommender, carried_over, feature_rows
from models.families import build_model
from models.tune import TrialSetup
from movierec.data.snapshot import Snapshot
from movierec.settings import Settings
from movierec.training import protocol

HYBRID, BLEND = "hybrid", "blend"
SERVABLE = (HYBRID, BLEND, "popularity", "item_knn", "ease", "mf")
NOT_SERVABLE = {
    "user_knn": "the served model has no form for user-user neighbours",
    "content": "content scores are every bundle's ranking of unrated movies, not a recipe of their own",
    "biased_mf": "a rating predictor, not a ranking model",
}


@dataclass
class Fitted:
    """A candidate fitted on one scope: the bundle's factor model, its recipe and the item-item
    matrices the recipe names, and the seconds the candidate's own models took to fit."""

    name: str
    factors: LightFMRecommender
    blend: dict[str, float]
    item_item: dict[str, sp.csr_matrix]
    seconds: float
    half_life: float | None = None  # recency half-life of the item-item models' inputs


@dataclass
class FactorStart:
    """A factor model fitted on one scope and the names of its feature columns (None: plain MF,
    identity only): where the same model may continue on a larger scope of the snapshot."""

    model: LightFMRecommender
    item_names: list[str] | None
    user_names: list[str] | None


def factor_start(model: LightFMRecommender, prepared: Prepared) -> FactorStart:
    """`model`, fitted on `prepared`, as a `FactorStart`."""
    if model.item_features is None:
        return FactorStart(model, None, None)
    return FactorStart(model, prepared.item_features.names, prepared.user_features.names)


def fit_hybrid(
    settings: Settings, prepared: Prepared, setup: TrialSetup, start: FactorStart | None = None
) -> LightFMRecommender:
    """The tuned hybrid setting fitted on `prepared.train` for its best validation epoch count, or,
    with `start` and `training.continue_epochs` set, continued from `start` for that many epochs."""
    return _fitted(settings, HYBRID, prepared, protocol.hybrid_params(settings, setup), start)


def continued_factors(chosen: str) -> tuple[str, ...]:
    """The factor models the served model of candidate `chosen` continues from the evaluation's
    when `training.continue_epochs` is set: the hybrid (every bundle carries it), and mf's own."""
    return (HYBRID, "mf") if chosen == "mf" else (HYBRID,)


def _fitted(settings: Settings, name: str, prepared: Prepared, params: dict, start: FactorStart | None) -> Recommender:
    """Family `name` with `params` on `prepared`: fitted from scratch (`build_model`), or, with a
    `start` and `training.continue_epochs` set, LightFM trained on `prepared.train` for that many
    epochs from `start` (fitted on a part of the same ratings; its feature columns matched to
    `prepared`'s by name, new ones starting fresh)."""
    if start is None or settings.training.continue_epochs is None:
        return build_model(name, prepared, params)
    if start.item_names is None:
        item_features = user_features = None
        item_rows, user_rows = np.arange(prepared.n_items), np.arange(prepared.n_users)
    else:
        item_features, user_features = prepared.item_features.matrix, prepared.user_features.matrix
        item_rows = feature_rows(start.item_names, prepared.item_features.names)
        user_rows = feature_rows(start.user_names, prepared.user_features.names)
    state = carried_over(start.model.model, item_rows, user_rows, settings.training.seed)
    model = LightFMRecommender(name=name, **{**params, "epochs": settings.training.continue_epochs})
    return model.fit(prepared.train, item_features=item_features, user_features=user_features, start=state)


def fit_candidate(
    settings: Settings,
    name: str,
    prepared: Prepared,
    hybrid: LightFMRecommender,
    *,
    hybrid_seconds: float,
    weights: dict[str, float] | None = None,
    ease_l2: float | None = None,
    half_life: float | None = None,
    fitted: dict[str, Recommender] | None = None,
    mf_epochs: int | None = None,
    mf_start: FactorStart | None = None,
) -> Fitted:
    """Candidate `name` on `prepared`, beside `hybrid` (fitted on the same data in
    `hybrid_seconds`). A blend needs its `weights` (and `ease_l2` when it uses EASE) and takes
    the `half_life` of its inputs; `fitted` holds models already fitted on `prepared` (a
    baseline, or the blend's item-item scorers), reused instead of fitted again; an mf fitted
    here trains for `mf_epochs` (`mf_params`), or continues from `mf_start` when
    `training.continue_epochs` is set."""
    if name not in SERVABLE:
        raise ValueError(f"candidate {name!r} cannot be served ({NOT_SERVABLE.get(name, 'unknown')})")
    started = time.perf_counter()
    if name == HYBRID:
        return Fitted(name, hybrid, {FACTORS: 1.0}, {}, hybrid_seconds)
    if name == BLEND:
        if weights is None:
            raise ValueError("a blend needs its weights")
        models = item_item_models(prepared, ease_l2, [part for part in weights if part != FACTORS], fitted)
        seconds = time.perf_counter() - started + (hybrid_seconds if FACTORS in weights else 0.0)
        return Fitted(name, hybrid, dict(weights), served_item_item(models), seconds, half_life)
    model = (fitted or {}).get(name) or _fitted(
        settings, name, prepared, mf_params(settings, mf_epochs), mf_start if name == "mf" else None
    )
    seconds = time.perf_counter() - started
    if name == "mf":
        return Fitted(name, model, {FACTORS: 1.0}, {}, seconds)
    if name == POPULARITY:
        return Fitted(name, hybrid, {POPULARITY: 1.0}, {}, seconds)
    return Fitted(name, hybrid, {name: 1.0}, {name: model.item_item()}, seconds)


def mf_params(settings: Settings, epochs: int | None) -> dict:
    """The mf baseline's LightFM arguments: the settings', trained for `epochs` when given (the
    count selection chose on validation: `Selection.mf_epochs`), else for `training.epochs`."""
    params = settings.training.lightfm_params()
    return params if epochs is None else {**params, "epochs": epochs}


def bundle(
    settings: Settings,
    fitted: Fitted,
    prepared: Prepared,
    tables: CanonicalTables,
    snapshot: Snapshot,
    setup: TrialSetup,
    role: str,
    ratings: BiasedMF | None = None,
    new_users: tuple[str, tuple[str, ...]] = ("model", ()),
    unrated_content_weight: float = 1.0,
) -> ServingBundle:
    """`fitted` as the bundle that scores it, with the rating predictor `ratings` (fitted on the
    same data) and the answer to new users known by demographics only (`new_users`: policy and
    segment columns), described by `role` ("validation", "evaluation" or "serving") and the
    ratings it learned from. The content model, fitted on the same data, ranks the movies no
    rating of `prepared` mentions with `unrated_content_weight` (`ServingBundle.place_unrated`)."""
    about = {
        "role": role,
        "candidate": fitted.name,
        "blend": fitted.blend,
        "recency_half_life": fitted.half_life,
        "trained_ratings": int(prepared.seen.nnz),
        "snapshot_id": snapshot.id,
    }
    user_groups = setup.user_groups if fitted.factors.name == HYBRID else None
    positives = None
    if fitted.item_item:
        threshold = settings.training.positive_threshold
        positives = recency_ranked(
            prepared.split.train, prepared.n_users, prepared.n_items, threshold=threshold, half_life=fitted.half_life
        )
    return protocol.bundle_model(
        settings,
        fitted.factors,
        prepared,
        tables,
        snapshot,
        user_groups,
        blend=fitted.blend,
        item_item=fitted.item_item,
        about=about,
        positives=positives,
        ratings=ratings,
        new_user_policy=new_users[0],
        segment_columns=new_users[1],
        content=build_model("content", prepared).scorer,
        unrated_content_weight=unrated_content_weight,
    )


def fit_rating_predictor(prepared: Prepared, params: dict) -> BiasedMF:
    """The rating predictor with the parameters tuned on validation, fitted on every training
    rating of `prepared`."""
    return BiasedMF(**params).fit(prepared.seen)
