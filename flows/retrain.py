"""Flow `retrain`: the whole pipeline, one tracked MLflow parent run per call.

    ingest (subflow: locate, parse, validate, snapshot; an unchanged input is not re-ingested)
      -> features: held-out split, validation split carved from its training part
      -> tuning: Optuna study of the hybrid on the validation split (one nested run per trial)
      -> final training: the best setting refit on train + validation
      -> evaluation: the hybrid and the baselines on the held-out test part (nested runs, plots)
      -> registration: log the pyfunc model, register it as `challenger`
      -> promotion: `champion` moves only if the challenger beats it on the same holdout
      -> export: the champion's top-k for every known user as Parquet (tasks/export.py)

Any failure ends the MLflow run FAILED with the error and leaves the registry as it was.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
from prefect import flow, runtime

from flows.ingest import ingest
from movierec import tracking
from movierec.feature_store import write_features
from movierec.settings import get_settings
from tasks.features import build_features, split_holdout, split_validation
from tasks.export import export_champion
from tasks.register import log_model, register_and_promote
from tasks.train import evaluate_models, feature_settings, load_snapshot, train_final
from tasks.tune import setup_params, tune_hybrid

log = logging.getLogger("movierec")
METRICS_SHOWN = ("ndcg@{k}", "recall@{k}", "precision@{k}", "map@{k}", "mrr", "coverage@{k}", "auc")


class Stopwatch:
    """Wall seconds per stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        log.info("%s…", stage)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started


@flow(
    name="retrain",
    description="Ingest, validate, featurise, tune, train, evaluate, register and promote the LightFM hybrid.",
    persist_result=True,
)
def retrain(
    dataset: str = "ml-latest-small",
    trials: int | None = None,
    timeout: float | None = None,
    synthetic_ratings: int | None = None,
    seed: int | None = None,
) -> dict:
    settings = get_settings()
    trials = settings.tuning.trials if trials is None else trials
    timeout = settings.tuning.timeout_seconds if timeout is None else timeout
    k = settings.training.k
    stages = Stopwatch()

    with stages("ingest"):
        snapshot_summary = ingest(dataset=dataset, synthetic_ratings=synthetic_ratings, seed=seed)
    experiment_id = tracking.configure(settings)
    snapshot_id = snapshot_summary["snapshot_id"]
    tags = {
        "dataset": dataset,
        "snapshot_id": snapshot_id,
        "code_version": tracking.code_version(),
        "prefect.flow_run_id": str(runtime.flow_run.id),
    }
    with tracking.pipeline_run(f"retrain {dataset} {snapshot_id[:8]}", tags) as run:
        mlflow.log_params({"dataset": dataset, "trials_budget": trials, "timeout_seconds": timeout,
                           "split": settings.training.split, "positive_threshold": settings.training.positive_threshold, "k": k})
        mlflow.log_dict(snapshot_summary, "data/snapshot.json")
        mlflow.log_text(validation_report(snapshot_summary), "data/validation_report.md")

        with stages("features"):
            snapshot, tables = load_snapshot(settings, dataset, snapshot_id)
            held_out = split_holdout(settings, tables)
            validation = split_validation(held_out)
            log_data(snapshot, tables, held_out)

        with stages("tuning"):
            tuned = tune_hybrid(settings, dataset, snapshot_id, tables, held_out, validation, trials, timeout)

        with stages("final training"):
            prepared = build_features(settings, snapshot_id, tables, held_out, "holdout", tuned.setup.item_groups, tuned.setup.user_groups)
            log_vocabularies(settings, snapshot, prepared, tuned.setup)
            hybrid = train_final(settings, prepared, tuned.setup)

        with stages("evaluation"):
            evaluation = evaluate_models(settings, prepared, hybrid)

        with stages("registration"):
            model_info = log_model(settings, hybrid, prepared, tables, tuned.setup.user_groups)
            columns = [name.format(k=k) for name in METRICS_SHOWN]
            card = {
                "model_name": settings.registered_model_name,
                "dataset": dataset,
                "snapshot_id": snapshot_id,
                "split": f"{held_out.kind} {held_out.params}; positives are ratings >= {settings.training.positive_threshold:g}",
                "params": setup_params(tuned.setup),
                "metrics": evaluation.table[columns],
                "k": k,
                "champion_model": "hybrid",
                "data_summary": snapshot_summary["rows"],
                "limits": known_limits(snapshot_summary),
                "trials": {**tuned.counts, "best_value": round(tuned.best_value, 4), "best_trial": tuned.best_trial},
            }
            version_tags = {**tags, "run_id": run.info.run_id, tracking.metric_key(f"test_ndcg@{k}"): f"{evaluation.table.loc['hybrid', f'ndcg@{k}']:.6f}"}
            registration = register_and_promote(settings, model_info, held_out, version_tags, card)

        with stages("export"):  # the champion's top-k for every user; never fails the run (tasks/export.py)
            export = export_champion(settings, registration)

        # The ingest subflow validates too; report validation as a stage of its own, after ingest.
        validation_seconds = snapshot_summary["validation_seconds"]
        stages.seconds = {"ingest": stages.seconds.pop("ingest") - validation_seconds, "validation": validation_seconds, **stages.seconds}
        mlflow.log_metrics({f"stage_seconds.{stage.replace(' ', '_')}": seconds for stage, seconds in stages.seconds.items()})

    return {
        "dataset": dataset,
        "snapshot": snapshot_summary,
        "experiment_id": experiment_id,
        "run_id": run.info.run_id,
        "tracking_uri": settings.tracking_uri,
        "split": held_out.kind,
        "users_evaluated": len(evaluation.users),
        "metrics": evaluation.table.reset_index().to_dict(orient="records"),
        "tuning": {"study": tuned.study_name, "best_value": tuned.best_value, "best_trial": tuned.best_trial,
                   "counts": tuned.counts, "trials_this_run": tuned.trials_this_run, "params": setup_params(tuned.setup)},
        "registration": registration,
        "export": export,
        "stage_seconds": stages.seconds,
    }


def log_data(snapshot, tables, held_out) -> None:
    """Data lineage on the run: the snapshot's ratings as an MLflow dataset (digest = snapshot
    id) and the train / test parts of the split, with the snapshot folder as their source."""
    source = snapshot.path.as_uri()
    parts = {"snapshot": tables.ratings, "train": held_out.train, "test": held_out.test}
    with warnings.catch_warnings():
        # Two hints that do not apply here: integer columns and missing values (that concerns
        # model inputs), and a file URI matching two equivalent local source types.
        warnings.simplefilter("ignore", UserWarning)
        for context, frame in parts.items():
            dataset = mlflow.data.from_pandas(frame, source=source, name=f"{snapshot.dataset}-{context}",
                                              digest=f"{snapshot.id}-{context}"[:36])
            mlflow.log_input(dataset, context=context)


def log_vocabularies(settings, snapshot, prepared, setup) -> None:
    """Store the final model's feature matrices beside the snapshot; log their vocabularies."""
    chosen = {**feature_settings(settings), "item_feature_groups": setup.item_groups, "user_feature_groups": setup.user_groups}
    folder = write_features(snapshot.path, chosen, {"item": prepared.item_features, "user": prepared.user_features})
    for name in ("item_vocabulary.parquet", "user_vocabulary.parquet", "settings.json"):
        mlflow.log_artifact(str(folder / name), "features")
    mlflow.set_tag("features_path", str(folder))


def validation_report(snapshot_summary: dict) -> str:
    """The expectation suites the snapshot passed, readable in the MLflow UI (the full Great
    Expectations Data Docs stay in the reports folder)."""
    lines = [f"# Validation of snapshot {snapshot_summary['snapshot_id']} ({snapshot_summary['dataset']})", "",
             "| stage | suite | expectations | failed | passed |", "|---|---|---:|---:|---|"]
    for stage, suites in snapshot_summary["validation"].items():
        for suite, result in suites.items():
            lines.append(f"| {stage} | {suite} | {result['evaluated']} | {result['failed']} | {'yes' if result['success'] else 'no'} |")
    lines += ["", f"Data Docs: {snapshot_summary['data_docs']}", ""]
    return "\n".join(lines)


def known_limits(snapshot_summary: dict) -> list[str]:
    limits = [
        "Trained on each user's earlier ratings; the held-out later part is for measurement only, so the served "
        "model has not learned from the most recent ratings.",
        "Users the model has never seen get the most popular movies (marked as fallback) unless they describe "
        "themselves by liked movies or demographics.",
        "Movies with no training interactions are ranked by their metadata features alone.",
    ]
    tmdb = snapshot_summary.get("tmdb")
    if tmdb:
        limits.append(f"TMDB metadata covers {tmdb['match_rate']:.0%} of movies; the rest have MovieLens genres, year and tags only.")
    else:
        limits.append("No TMDB metadata was joined: item features are MovieLens genres, year and tags only.")
    return limits
