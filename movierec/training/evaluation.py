"""The evaluation stage: the tuned hybrid, measured through the bundle it will be registered as,
and every baseline of `pipeline.baselines`, on the same held-out split, tracked in MLflow.

The hybrid's metrics go on the parent run (prefix `test_`), each baseline's in a nested run;
metric@k curves, the long-tail exposure plot and the tables are artifacts of the parent run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd

from features.prepare import Prepared
from inference.model import ServingBundle
from models.evaluation import evaluate, evaluated_users
from models.families import build_model
from movierec.settings import Settings
from movierec.tracking import reports, runs

REGISTERED = "hybrid"


@dataclass
class Evaluation:
    table: pd.DataFrame  # one row per model, test metrics
    curves: pd.DataFrame  # metric@k per model
    recommended: dict[str, np.ndarray]  # each model's top lists for `users`
    users: np.ndarray  # evaluated test users (at least one held-out positive)


def evaluate_candidates(
    settings: Settings, prepared: Prepared, bundle: ServingBundle, fit_seconds: float
) -> Evaluation:
    """The hybrid (as `bundle`, fitted in `fit_seconds`) and every baseline on `prepared`'s
    held-out part, logged to the active run."""
    k, ks = settings.training.k, sorted(set(settings.pipeline.curve_ks) | {settings.training.k})
    users = evaluated_users(prepared)
    rows, recommended = [], {}
    for name in (REGISTERED, *settings.pipeline.baselines):
        if name == REGISTERED:
            model, seconds = bundle, fit_seconds
        else:
            started = time.perf_counter()
            model = build_model(name, prepared, settings.training.lightfm_params())
            seconds = time.perf_counter() - started
        metrics = evaluate(model, prepared, k=k)
        recommended[name] = model.recommend(users, max(ks), exclude=prepared.seen)[0]
        rows.append({"model": name, **metrics, "train_seconds": seconds})
        if name == REGISTERED:
            mlflow.log_metrics(runs.finite_metrics(metrics, prefix="test_"))
            continue
        with mlflow.start_run(run_name=f"baseline {name}", nested=True, tags={"kind": "baseline", "model": name}):
            params = {"model": name, **(settings.training.lightfm_params() if name == "mf" else {})}
            mlflow.log_params(params)
            mlflow.log_metrics({**runs.finite_metrics(metrics, prefix="test_"), "train_seconds": seconds})
    curves = reports.metric_curves(recommended, prepared.test, users, prepared.n_items, ks=tuple(ks))
    mlflow.log_figure(reports.plot_metric_curves(curves), "plots/metric_at_k.png")
    mlflow.log_figure(reports.plot_popularity_coverage(recommended, prepared.train), "plots/popularity_coverage.png")
    table = pd.DataFrame(rows).set_index("model")
    mlflow.log_table(table.reset_index(), "metrics/test_metrics.json")
    mlflow.log_table(curves, "metrics/metric_at_k.json")
    return Evaluation(table=table, curves=curves, recommended=recommended, users=users)
