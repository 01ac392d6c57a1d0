"""Flow `retrain`: the whole pipeline, one tracked MLflow parent run per call.

    ingest (subflow: locate, parse, validate, snapshot; an unchanged input is not re-ingested)
      -> features: held-out split, validation split carved from its training part
      -> tuning: Optuna study of the hybrid on the validation split (one nested run per trial;
         `tuning_workers` processes share it)
      -> selection: the tuned hybrid, the baselines and the blend (hybrid + EASE + item kNN,
         weights tuned) fitted on the validation split's training part; the best on validation
         is the candidate to register
      -> evaluation: every candidate fitted on the holdout's training part and measured on the
         held-out test part; the chosen one as its evaluation twin (the bundle the gate measures)
      -> final training: the chosen candidate refit on every rating, bundled as it is served
      -> registration: log both bundles as one pyfunc model, register it as `challenger`
      -> promotion: `champion` moves only if the challenger's twin beats the champion's on the
         same holdout
      -> export: the champion's top-k for every known user as Parquet (tasks/export.py)

Any failure ends the MLflow run FAILED with the error and leaves the registry as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
from prefect import flow, runtime

from features.splits import every_rating
from flows.ingest import ingest
from movierec.data.schema import RatingScale
from movierec.monitoring.reference import REFERENCE_ARTIFACT, REFERENCE_TAG, reference_statistics
from movierec.runlock import describe, registry_lock, run_lock
from movierec.services import service_failure
from movierec.settings import Settings, get_settings
from movierec.tracking import recovery, reports, runs
from movierec.training.tuning import setup_params
from tasks.export import export_champion
from tasks.features import build_features, split_holdout, split_validation, store_features
from tasks.register import log_model, register_and_promote
from tasks.train import evaluate_models, load_snapshot, refit_chosen, select_model
from tasks.tune import tune_hybrid

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
    description="Ingest, validate, featurise, tune, select, evaluate, refit, register and promote the best recommender.",
    persist_result=True,
)
def retrain(
    dataset: str = "ml-latest-small",
    trials: int | None = None,
    timeout: float | None = None,
    synthetic_ratings: int | None = None,
    seed: int | None = None,
    tuning_workers: int | None = None,
) -> dict:
    settings = get_settings()
    if tuning_workers is not None:  # this run's number of tuning processes (default: tuning.workers)
        settings = settings.with_tuning_workers(tuning_workers)
    # One run at a time per home (movierec.runlock): the stores, the registry and the gate's
    # read-compare-move of `champion` are this run's alone until it ends. Runs on other homes
    # sharing the registry (workers on other machines of one stack) meet at a lock in the shared
    # PostgreSQL, always taken second, so two runs never wait for each other's.
    label = f"retrain {dataset}"
    with run_lock(settings.home, label, on_wait=_waiting), registry_lock(settings, label, _queued):
        try:
            return _pipeline(settings, dataset, trials, timeout, synthetic_ratings, seed)
        except Exception as error:
            failure = service_failure(error)
            if failure is not None:  # said first: the flow's own failure may not reach its server
                log.error("%s", failure)
            raise


def _waiting(holder: dict | None) -> None:
    log.warning("waiting for %s to finish (one run at a time per MOVIEREC_HOME)", describe(holder))


def _queued(holders: str) -> None:
    log.warning("waiting for %s to finish (one retrain at a time per registry: a lock in PostgreSQL)", holders)


def _pipeline(
    settings: Settings,
    dataset: str,
    trials: int | None,
    timeout: float | None,
    synthetic_ratings: int | None,
    seed: int | None,
) -> dict:
    trials = settings.tuning.trials if trials is None else trials
    timeout = settings.tuning.timeout_seconds if timeout is None else timeout
    k = settings.training.k
    stages = Stopwatch()

    with stages("ingest"):
        snapshot_summary = ingest(dataset=dataset, synthetic_ratings=synthetic_ratings, seed=seed)
    experiment_id = runs.configure(settings)
    # This run holds the home's lock: whatever an earlier run left RUNNING, its process is gone.
    recovery.close_dead_runs(experiment_id)
    recovery.drop_unfinished_versions(settings.registered_model_name)
    snapshot_id = snapshot_summary["snapshot_id"]
    tags = {
        "dataset": dataset,
        "snapshot_id": snapshot_id,
        "code_version": runs.code_version(),
        "prefect.flow_run_id": str(runtime.flow_run.id),
        **recovery.owner_tags(),
    }
    with runs.pipeline_run(f"retrain {dataset} {snapshot_id[:8]}", tags) as run:
        mlflow.log_params(
            {
                "dataset": dataset,
                "trials_budget": trials,
                "timeout_seconds": timeout,
                "split": settings.training.split,
                "positive_threshold": settings.training.positive_threshold,
                "k": k,
            }
        )
        mlflow.log_dict(snapshot_summary, "data/snapshot.json")
        mlflow.log_text(reports.validation_report(snapshot_summary), "data/validation_report.md")

        with stages("features"):
            snapshot, tables = load_snapshot(settings, dataset, snapshot_id)
            held_out = split_holdout(settings, tables)
            validation = split_validation(settings, held_out)
            sample = validation.sample or {}
            mlflow.log_params(
                {
                    "validation_users": sample.get("users", "all"),
                    "validation_users_of": sample.get("of", "all"),
                    "evaluation_users_setting": settings.training.evaluation_users or "all",
                }
            )
            runs.log_datasets(snapshot, {"snapshot": tables.ratings, "train": held_out.train, "test": held_out.test})

        with stages("tuning"):
            tuned = tune_hybrid(settings, dataset, snapshot_id, tables, held_out, validation, trials, timeout)
            mlflow.log_params(setup_params(tuned.setup))

        groups = tuned.setup.item_groups, tuned.setup.user_groups
        with stages("selection"):
            validation_features = build_features(settings, snapshot_id, tables, validation, "validation", *groups)
            selection = select_model(settings, validation_features, tables, snapshot, tuned.setup)

        with stages("evaluation"):
            prepared = build_features(settings, snapshot_id, tables, held_out, "holdout", *groups)
            evaluation = evaluate_models(settings, prepared, tables, snapshot, tuned.setup, selection)

        with stages("final training"):  # what is served learns every rating
            everything = build_features(settings, snapshot_id, tables, every_rating(tables.ratings), "all", *groups)
            store_features(settings, snapshot, everything, *groups)
            served = refit_chosen(settings, everything, tables, snapshot, tuned.setup, selection, evaluation)

        with stages("registration"):
            model_info = log_model(served.bundle, evaluation.twin, served.factors)
            columns = [name.format(k=k) for name in METRICS_SHOWN]
            chosen = selection.chosen
            card = {
                "model_name": settings.registered_model_name,
                "dataset": dataset,
                "snapshot_id": snapshot_id,
                "split": f"{held_out.kind} {held_out.params}; positives are ratings >= {settings.training.positive_threshold:g}",
                "params": {
                    **setup_params(tuned.setup),
                    "blend_weights": selection.weights,
                    "ease_l2": selection.ease_l2,
                    "recency_half_life": selection.half_life,
                },
                "metrics": evaluation.table[columns],
                "k": k,
                "champion_model": chosen,
                "data_summary": snapshot_summary["rows"],
                "limits": reports.known_limits(snapshot_summary),
                "trials": {**tuned.counts, "best_value": round(tuned.best_value, 4), "best_trial": tuned.best_trial},
                "served": {
                    "candidate": chosen,
                    "recipe": served.bundle.blend,
                    "continued_epochs": settings.training.continue_epochs,
                    "serving_ratings": served.bundle.about["trained_ratings"],
                    "evaluation_ratings": evaluation.twin.about["trained_ratings"],
                    "rating_errors": evaluation.ratings,
                    "unrated": {
                        "content_weight": selection.unrated_content_weight,
                        "served_movies": len(served.bundle.unrated),
                        "evaluation_movies": len(evaluation.twin.unrated),
                    },
                    "new_users": selection.new_user_policy
                    + (f" by {'+'.join(selection.segment_columns)}" if selection.segment_columns else ""),
                },
                "validation": selection.table[[f"ndcg@{k}", "eligible"]],
            }
            test_ndcg = evaluation.table.loc[chosen, f"ndcg@{k}"]
            # What the served model learned, for monitoring to compare fresh data with.
            reference = reference_statistics(
                tables.ratings,
                tables.items,
                RatingScale(**snapshot_summary["rating_scale"]).values(),
                settings.training.positive_threshold,
                holdout=evaluation.table.loc[chosen].to_dict(),
                k=k,
            )
            mlflow.log_dict(reference, REFERENCE_ARTIFACT)
            version_tags = {
                **tags,
                REFERENCE_TAG: f"runs:/{run.info.run_id}/{REFERENCE_ARTIFACT}",
                "run_id": run.info.run_id,
                runs.metric_key(f"test_ndcg@{k}"): f"{test_ndcg:.6f}",
                "model": chosen,
                "served_ratings": str(served.bundle.about["trained_ratings"]),
                "evaluation_ratings": str(evaluation.twin.about["trained_ratings"]),
            }
            registration = register_and_promote(settings, model_info, held_out, version_tags, card)

        with stages("export"):  # the champion's top-k for every user; never fails the run (tasks/export.py)
            export = export_champion(settings, registration)

        # The ingest subflow validates too; report validation as a stage of its own, after ingest.
        validation_seconds = snapshot_summary["validation_seconds"]
        stages.seconds = {
            "ingest": stages.seconds.pop("ingest") - validation_seconds,
            "validation": validation_seconds,
            **stages.seconds,
        }
        mlflow.log_metrics(
            {f"stage_seconds.{stage.replace(' ', '_')}": seconds for stage, seconds in stages.seconds.items()}
        )

    return {
        "dataset": dataset,
        "snapshot": snapshot_summary,
        "experiment_id": experiment_id,
        "run_id": run.info.run_id,
        "tracking_uri": settings.tracking_uri,
        "split": held_out.kind,
        "users_evaluated": len(evaluation.users),
        "metrics": evaluation.table.reset_index().to_dict(orient="records"),
        "ratings": evaluation.ratings.reset_index().to_dict(orient="records"),
        "selection": {
            "chosen": selection.chosen,
            "blend_weights": selection.weights,
            "ease_l2": selection.ease_l2,
            "half_life": selection.half_life,
            "new_user_policy": selection.new_user_policy,
            "unrated_content_weight": selection.unrated_content_weight,
            "segment_columns": list(selection.segment_columns),
            "cold_users": None
            if selection.cold_users is None
            else selection.cold_users.reset_index().to_dict(orient="records"),
            "skipped": selection.skipped,
            "validation": selection.table.reset_index().to_dict(orient="records"),
        },
        "tuning": {
            "study": tuned.study_name,
            "best_value": tuned.best_value,
            "best_trial": tuned.best_trial,
            "counts": tuned.counts,
            "trials_this_run": tuned.trials_this_run,
            "params": setup_params(tuned.setup),
        },
        "registration": registration,
        "export": export,
        "stage_seconds": stages.seconds,
    }
