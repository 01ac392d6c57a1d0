"""The selection stage: every candidate fitted on the validation split's training part and measured
on its validation part; the blend's weights tuned there; the candidate to register chosen there.

The held-out test part is never looked at: the choice is made before any candidate is measured
on it, so the test metrics of the evaluation stage stay an honest estimate for the chosen one.
Candidates that cannot scale (EASE beyond `models.baselines.EASE_MAX_ITEMS` items) are skipped
with the reason logged; those the served model has no form for are measured but not eligible
(`candidates.NOT_SERVABLE`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import mlflow
import pandas as pd

from features.prepare import Prepared
from features.tables import CanonicalTables
from inference.model import DEMOGRAPHICS, FACTORS, POPULARITY
from models.blend import COMPONENTS, ITEM_ITEM, tune_ease, tune_half_life, tune_unrated_content_weight, tune_weights
from models.cold_start import choose_new_user_policy, cold_user_report
from models.evaluation import evaluate, evaluated_users
from models.factorization import LightFMRecommender
from models.families import build_model, unscalable
from models.ratings import Tuning, tune_biased_mf
from models.tune import TrialSetup, fit_best_epoch
from movierec.data.snapshot import Snapshot
from movierec.settings import Settings
from movierec.tracking import runs
from movierec.training import candidates, protocol
from movierec.training.candidates import BLEND, HYBRID, NOT_SERVABLE, SERVABLE

log = logging.getLogger("movierec")


@dataclass
class Selection:
    chosen: str  # the candidate to register
    weights: dict[str, float]  # the blend's recipe, tuned on validation
    ease_l2: float | None  # the blend's EASE strength (None: EASE skipped)
    half_life: float | None  # recency half-life of the blend's item-item inputs (None: unweighted)
    table: pd.DataFrame  # validation metrics per candidate, with `eligible`
    weight_table: pd.DataFrame  # every weight vector tried, best first
    skipped: dict[str, str]  # candidates not fitted, and why
    rating_params: dict  # the rating predictor's (BiasedMF) parameters, tuned on validation
    rating_validation_rmse: float
    new_user_policy: str  # how users known only by demographics are answered
    segment_columns: tuple[str, ...]  # the demographic segments of the "segments" policy
    cold_users: pd.DataFrame | None  # the cold-user table the policy was chosen on (None: no demographics)
    unrated_content_weight: float  # the content model's say over movies without a rating
    unrated_table: dict[float, float]  # validation NDCG@k of the chosen recipe per such weight
    mf_epochs: int | None  # the mf baseline's best validation epoch count (None: mf not fitted)


def select(
    settings: Settings,
    prepared: Prepared,
    tables: CanonicalTables,
    snapshot: Snapshot,
    setup: TrialSetup,
) -> Selection:
    """Fit and measure every candidate on `prepared` (the validation split), tune the blend,
    choose; logged to the active run (metrics `validation_<candidate>_ndcg_at_<k>`, tables
    `metrics/validation_metrics.json` and `metrics/blend_weights.json`, tag `selected_model`)."""
    k = settings.training.k
    users = evaluated_users(prepared)
    started = time.perf_counter()
    hybrid = candidates.fit_hybrid(settings, prepared, setup)
    hybrid_seconds = time.perf_counter() - started
    rows = {HYBRID: evaluate(hybrid, prepared, k=k)}
    fitted, skipped = {}, {}
    for name in settings.pipeline.baselines:
        reason = unscalable(name, prepared.n_items)
        if reason:
            skipped[name] = reason
            continue
        if name == "mf":  # its epochs chosen here, as the hybrid's are by tuning
            fitted[name] = LightFMRecommender(name="mf", **settings.training.lightfm_params())
            fit_best_epoch(fitted[name], prepared, k)
        else:
            fitted[name] = build_model(name, prepared, settings.training.lightfm_params())
        rows[name] = evaluate(fitted[name], prepared, k=k)
    mf_epochs = fitted["mf"].epochs if "mf" in fitted else None

    parts = [name for name in ITEM_ITEM if not unscalable(name, prepared.n_items)]
    for name in set(ITEM_ITEM) - set(parts):
        skipped.setdefault(f"blend's {name}", unscalable(name, prepared.n_items))
    ease_l2, tuned_ease = tune_ease(prepared, users, k) if "ease" in parts else (None, None)
    every_part = {FACTORS: 1.0, **dict.fromkeys(parts, 1.0)}
    blend = candidates.fit_candidate(
        settings,
        BLEND,
        prepared,
        hybrid,
        hybrid_seconds=hybrid_seconds,
        weights=every_part,
        ease_l2=ease_l2,
        fitted={"ease": tuned_ease} if tuned_ease else None,
    )
    blend.half_life = tune_half_life(blend.item_item, prepared, users, k, settings.training.positive_threshold)
    # Candidates are compared with their own scores for unrated movies, as the raw models are.
    bundle = candidates.bundle(
        settings, blend, prepared, tables, snapshot, setup, "validation", unrated_content_weight=0.0
    )
    component_scores = {name: bundle.component_scores(name, users) for name in COMPONENTS if name in every_part}
    weights, weight_table = tune_weights(component_scores, prepared, users, k)
    tuned = replace(
        bundle, blend=weights, item_item={name: bundle.item_item[name] for name in weights if name != FACTORS}
    )
    rows[BLEND] = evaluate(tuned, prepared, k=k)
    for reason in skipped.values():
        log.warning("selection: %s", reason)

    table = pd.DataFrame([{"model": name, **metrics} for name, metrics in rows.items()]).set_index("model")
    table["eligible"] = [name in SERVABLE for name in table.index]
    metric = f"ndcg@{k}"
    order = [HYBRID, BLEND, *settings.pipeline.baselines]
    eligible = table.loc[table["eligible"]]
    chosen = min(eligible.index, key=lambda name: (-eligible.loc[name, metric], order.index(name)))
    log.info(
        "selection on validation: %s (NDCG@%d %.4f); blend %s; %s",
        chosen,
        k,
        table.loc[chosen, metric],
        ", ".join(f"{name} {weight:g}" for name, weight in weights.items()),
        ", ".join(f"{name} {value:.4f}" for name, value in table[metric].items()),
    )
    # Movies without a rating in the validation part: how much the content model ranks them,
    # measured with the chosen candidate's recipe (the blend's for one the bundle cannot score).
    recipes = {HYBRID: {FACTORS: 1.0}, BLEND: weights, POPULARITY: {POPULARITY: 1.0}}
    recipes.update({name: {name: 1.0} for name in bundle.item_item})
    unrated_weight, unrated_table = tune_unrated_content_weight(
        replace(bundle, blend=recipes.get(chosen, weights)), prepared, users, k
    )
    log.info(
        "selection: movies without a rating are ranked with content weight %g (%d such movies; NDCG@%d %s)",
        unrated_weight,
        len(bundle.unrated),
        k,
        ", ".join(f"{weight:g}: {value:.4f}" for weight, value in unrated_table.items()),
    )
    mlflow.log_param("unrated_content_weight", unrated_weight)
    policy, columns, cold_users = choose_cold_user_answer(settings, prepared, tables, setup)
    ratings = tune_rating_predictor(prepared)
    log.info("selection: rating predictor %s, validation RMSE %.4f", ratings.params, ratings.rmse)
    _log(table, weight_table, chosen, weights, ease_l2, blend.half_life, skipped, k)
    mlflow.log_params({f"ratings.{name}": value for name, value in ratings.params.items()})
    if mf_epochs is not None:
        mlflow.log_param("mf_epochs", mf_epochs)
    mlflow.log_metric("validation_rating_rmse", ratings.rmse)
    return Selection(
        chosen,
        weights,
        ease_l2,
        blend.half_life,
        table,
        weight_table,
        skipped,
        ratings.params,
        ratings.rmse,
        policy,
        columns,
        cold_users,
        unrated_weight,
        unrated_table,
        mf_epochs,
    )


def choose_cold_user_answer(
    settings: Settings, prepared: Prepared, tables: CanonicalTables, setup: TrialSetup
) -> tuple[str, tuple[str, ...], pd.DataFrame | None]:
    """How new users known only by demographics are answered: the hybrid (the tuned `setup`, as
    it is served), popularity, or popularity within a demographic segment, whichever scores the
    best NDCG@k for users held out entirely from the training part (never the test part).
    ("model", (), None) when the users have no demographics: there is nothing to choose from."""
    users = tables.users
    if not any(column in users and users[column].notna().any() for column in DEMOGRAPHICS):
        return "model", (), None
    training = pd.concat([prepared.split.train, prepared.split.test], ignore_index=True)
    report = cold_user_report(
        replace(tables, ratings=training),
        k=settings.training.k,
        user_share=settings.training.cold_user_share,
        setup=protocol.cold_start_setup(settings, setup),
    )
    policy, columns = choose_new_user_policy(report, settings.training.k)
    log.info(
        "selection: new users by demographics only get %s (cold-user NDCG@%d on the training part: %s)",
        policy + (f" by {'+'.join(columns)}" if columns else ""),
        settings.training.k,
        ", ".join(f"{name} {value:.4f}" for name, value in report[f"ndcg@{settings.training.k}"].items()),
    )
    mlflow.log_table(report.reset_index(), "metrics/validation_cold_users.json")
    mlflow.log_params({"new_user_policy": policy, "new_user_segments": "+".join(columns) or "none"})
    return policy, columns, report


def tune_rating_predictor(prepared: Prepared) -> Tuning:
    """`BiasedMF` tuned on the validation split: fitted on its training ratings, measured on its
    held-out ratings (`models.ratings.tune_biased_mf`)."""
    held_out = prepared.split.test
    pairs = tuple(held_out[column].to_numpy() for column in ("user_idx", "item_idx", "rating"))
    return tune_biased_mf(prepared.seen, pairs)


def _log(
    table: pd.DataFrame,
    weight_table: pd.DataFrame,
    chosen: str,
    weights: dict,
    ease_l2: float | None,
    half_life: float | None,
    skipped: dict[str, str],
    k: int,
) -> None:
    metric = f"ndcg@{k}"
    mlflow.log_metrics(
        {runs.metric_key(f"validation_{name}_{metric}"): float(value) for name, value in table[metric].items()}
    )
    mlflow.log_params(
        {
            "selected_model": chosen,
            "blend_weights": ", ".join(f"{name}={weight:g}" for name, weight in weights.items()),
            "blend_ease_l2": "skipped" if ease_l2 is None else ease_l2,
            "blend_recency_half_life": "none" if half_life is None else half_life,
        }
    )
    mlflow.set_tags(
        {
            "selected_model": chosen,
            **{f"skipped.{name.replace(' ', '_').replace(chr(39), '')}": reason for name, reason in skipped.items()},
            **{f"not_servable.{name}": reason for name, reason in NOT_SERVABLE.items() if name in table.index},
        }
    )
    mlflow.log_table(table.reset_index(), "metrics/validation_metrics.json")
    mlflow.log_table(weight_table.assign(weights=weight_table["weights"].map(str)), "metrics/blend_weights.json")
