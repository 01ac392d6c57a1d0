"""The evaluation stage: every candidate fitted on the holdout's training part and measured on its
held-out test part, tracked in MLflow; and the final stage, the chosen candidate refit on every
rating for serving.

The candidate chosen on validation (`selection`) is measured through its evaluation twin, the
bundle the registered version carries for the promotion gate: its test metrics go on the parent
run (prefix `test_`), every other model's in a nested run. Metric@k curves, the long-tail
exposure plot and the tables are artifacts of the parent run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd

from features.prepare import Prepared
from features.tables import CanonicalTables
from inference.model import ServingBundle
from models.evaluation import evaluate, evaluated_users
from models.factorization import BiasedMF, LightFMRecommender
from models.families import build_model, unscalable
from models.metrics import rating_errors
from models.ratings import BiasBaseline
from models.tune import TrialSetup
from movierec.data.snapshot import Snapshot
from movierec.settings import Settings
from movierec.tracking import reports, runs
from movierec.training import candidates, protocol
from movierec.training.candidates import BLEND, HYBRID
from movierec.training.selection import Selection


@dataclass
class Evaluation:
    table: pd.DataFrame  # one row per model, test metrics; `registered` marks the chosen one
    curves: pd.DataFrame  # metric@k per model
    recommended: dict[str, np.ndarray]  # each model's top lists for `users`
    users: np.ndarray  # evaluated test users (at least one held-out positive)
    twin: ServingBundle  # the chosen candidate trained on the holdout's training part
    ratings: pd.DataFrame  # the rating predictor's held-out errors, beside its baselines
    # The factor models fitted here (hybrid, and mf when chosen) where the served model's continue,
    # when `training.continue_epochs` is set (else empty).
    starts: dict[str, candidates.FactorStart]


@dataclass
class Served:
    bundle: ServingBundle  # the chosen candidate trained on every rating
    factors: LightFMRecommender  # its factor model (the raw model logged beside it)


def evaluate_candidates(
    settings: Settings,
    prepared: Prepared,
    tables: CanonicalTables,
    snapshot: Snapshot,
    setup: TrialSetup,
    selection: Selection,
) -> Evaluation:
    """The hybrid, the blend (with the weights chosen on validation) and every baseline of
    `pipeline.baselines` fitted on `prepared.train` and measured on `prepared.test`, logged to
    the active run; the chosen candidate through its evaluation twin."""
    k, ks = settings.training.k, sorted(set(settings.pipeline.curve_ks) | {settings.training.k})
    users = protocol.evaluation_users(settings, prepared)
    mlflow.log_params({"test_users_scored": len(users), "test_users_with_positives": len(evaluated_users(prepared))})
    started = time.perf_counter()
    hybrid = candidates.fit_hybrid(settings, prepared, setup)
    hybrid_seconds = time.perf_counter() - started

    ratings = candidates.fit_rating_predictor(prepared, selection.rating_params)
    rating_table = rating_errors_table(prepared, ratings)
    models, seconds = {}, {}
    for name in settings.pipeline.baselines:
        if unscalable(name, prepared.n_items):
            continue
        started = time.perf_counter()
        models[name] = build_model(name, prepared, candidates.mf_params(settings, selection.mf_epochs))
        seconds[name] = time.perf_counter() - started
    # Kept for the served model's fit only when it continues from them (they are large at scale).
    starts = {}
    if settings.training.continue_epochs is not None:
        factor_models = {HYBRID: hybrid, **models}
        starts = {
            name: candidates.factor_start(factor_models[name], prepared)
            for name in candidates.continued_factors(selection.chosen)
        }
    # The hybrid, the blend and the chosen candidate are measured as bundles, as they are served
    # (a chosen baseline reuses its fit above).
    for name in dict.fromkeys((HYBRID, BLEND, selection.chosen)):
        fitted = candidates.fit_candidate(
            settings,
            name,
            prepared,
            hybrid,
            hybrid_seconds=hybrid_seconds,
            weights=selection.weights,
            ease_l2=selection.ease_l2,
            half_life=selection.half_life,
            fitted=models,
        )
        seconds.setdefault(name, fitted.seconds)
        models[name] = _bundle(settings, fitted, prepared, tables, snapshot, setup, "evaluation", ratings, selection)

    rows, recommended = [], {}
    for name in dict.fromkeys((HYBRID, BLEND, *models)):
        model = models[name]
        metrics = evaluate(model, prepared, k=k, users=users)
        recommended[name] = model.recommend(users, max(ks), exclude=prepared.seen)[0]
        rows.append({"model": name, **metrics, "train_seconds": seconds[name], "registered": name == selection.chosen})
        if name == selection.chosen:
            mlflow.log_metrics(runs.finite_metrics(metrics, prefix="test_"))
            continue
        kind = "candidate" if name in (HYBRID, BLEND) else "baseline"
        with mlflow.start_run(run_name=f"{kind} {name}", nested=True, tags={"kind": kind, "model": name}):
            params = {"model": name, **(candidates.mf_params(settings, selection.mf_epochs) if name == "mf" else {})}
            mlflow.log_params(params)
            mlflow.log_metrics({**runs.finite_metrics(metrics, prefix="test_"), "train_seconds": seconds[name]})
    curves = reports.metric_curves(recommended, prepared.test, users, prepared.n_items, ks=tuple(ks))
    mlflow.log_figure(reports.plot_metric_curves(curves), "plots/metric_at_k.png")
    mlflow.log_figure(reports.plot_popularity_coverage(recommended, prepared.train), "plots/popularity_coverage.png")
    table = pd.DataFrame(rows).set_index("model")
    mlflow.log_table(table.reset_index(), "metrics/test_metrics.json")
    mlflow.log_table(rating_table.reset_index(), "metrics/rating_metrics.json")
    mlflow.log_metrics(
        {f"test_rating_{name}": float(value) for name, value in rating_table.loc["biased_mf"].items() if name != "n"}
    )
    mlflow.log_table(curves, "metrics/metric_at_k.json")
    return Evaluation(
        table=table,
        curves=curves,
        recommended=recommended,
        users=users,
        twin=models[selection.chosen],
        ratings=rating_table,
        starts=starts,
    )


def rating_errors_table(prepared: Prepared, ratings: BiasedMF) -> pd.DataFrame:
    """MAE, MSE, RMSE on the held-out ratings of the rating predictor, beside the global mean and
    the user + item bias baseline fitted on the same training ratings (clipped like it)."""
    held_out = prepared.split.test
    users, items = held_out["user_idx"].to_numpy(), held_out["item_idx"].to_numpy()
    actual = held_out["rating"].to_numpy()
    mean = np.full(len(actual), prepared.seen.data.mean())
    rows = {
        "global mean": rating_errors(mean, actual),
        "bias baseline": rating_errors(BiasBaseline().fit(prepared.seen).predict(users, items), actual),
        "biased_mf": rating_errors(ratings.predict(users, items), actual),
    }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def refit_for_serving(
    settings: Settings,
    prepared: Prepared,
    tables: CanonicalTables,
    snapshot: Snapshot,
    setup: TrialSetup,
    selection: Selection,
    starts: dict[str, candidates.FactorStart] | None = None,
) -> Served:
    """The chosen candidate, with the same hyperparameters, epochs and blend weights, fitted on
    `prepared.train` (every rating of the snapshot): the bundle the registered version serves.
    With `training.continue_epochs` set, its factor models continue from the evaluation's
    (`starts`: `Evaluation.starts`) for that many epochs instead of a fit from scratch."""
    starts = starts or {}
    continued = settings.training.continue_epochs
    needed = set(candidates.continued_factors(selection.chosen))
    if continued is not None and not needed <= set(starts):
        raise ValueError(
            f"training.continue_epochs is set but there is no fitted {' or '.join(sorted(needed))} to continue"
        )
    mlflow.log_param(
        "served_factors_fit",
        "from scratch" if continued is None else f"continued {continued} epochs from the evaluation twin's",
    )
    started = time.perf_counter()
    hybrid = candidates.fit_hybrid(settings, prepared, setup, starts.get(HYBRID))
    fitted = candidates.fit_candidate(
        settings,
        selection.chosen,
        prepared,
        hybrid,
        hybrid_seconds=time.perf_counter() - started,
        weights=selection.weights,
        ease_l2=selection.ease_l2,
        half_life=selection.half_life,
        mf_epochs=selection.mf_epochs,
        mf_start=starts.get("mf"),
    )
    ratings = candidates.fit_rating_predictor(prepared, selection.rating_params)
    bundle = _bundle(settings, fitted, prepared, tables, snapshot, setup, "serving", ratings, selection)
    return Served(bundle=bundle, factors=fitted.factors)


def _bundle(
    settings: Settings,
    fitted: candidates.Fitted,
    prepared: Prepared,
    tables: CanonicalTables,
    snapshot: Snapshot,
    setup: TrialSetup,
    role: str,
    ratings: BiasedMF,
    selection: Selection,
) -> ServingBundle:
    """`candidates.bundle` with the answers selection chose for what the recipe cannot score
    (new users known by demographics only, movies without a rating): the twin and the served
    bundle get the same ones."""
    return candidates.bundle(
        settings,
        fitted,
        prepared,
        tables,
        snapshot,
        setup,
        role,
        ratings,
        (selection.new_user_policy, selection.segment_columns),
        unrated_content_weight=selection.unrated_content_weight,
    )
