"""The retrain flow end to end on generated data: tracking, registry, gate, caching, failures."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from movierec.cli import app

pytestmark = [pytest.mark.usefixtures("prefect_api"), pytest.mark.slow]

DATA = {"dataset": "synthetic", "synthetic_ratings": 8_000, "seed": 2}


def _client(home) -> MlflowClient:
    uri = f"sqlite:///{home / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _runs(client: MlflowClient, **filters) -> list:
    experiment = client.get_experiment_by_name("movierec")
    return client.search_runs([experiment.experiment_id], max_results=500)


def _children(runs, parent_id: str, kind: str) -> list:
    return [
        run
        for run in runs
        if run.data.tags.get("mlflow.parentRunId") == parent_id and run.data.tags.get("kind") == kind
    ]


def _task_states(flow_run_id: str) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            limit=200,
            sort=TaskRunSort.EXPECTED_START_TIME_DESC,
        )
    return {run.name: run.state.name for run in task_runs}


def test_two_runs_track_everything_and_the_gate_picks_the_champion(home, quick_pipeline, monkeypatch):
    from flows.retrain import retrain

    first = retrain(**DATA, trials=3)
    monkeypatch.setenv("MOVIEREC_TRAINING__CONTINUE_EPOCHS", "2")  # the second serves its twin's factors, trained on
    second = retrain(**DATA, trials=2)

    # Data: the second run reused the snapshot.
    assert not first["snapshot"]["reused"] and second["snapshot"]["reused"]
    assert first["snapshot"]["snapshot_id"] == second["snapshot"]["snapshot_id"]
    client = _client(home)

    # Tracking: two finished parent runs, each with its own trial runs and baseline runs.
    runs = _runs(client)
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert sorted(run.info.run_id for run in parents) == sorted([first["run_id"], second["run_id"]])
    assert all(run.info.status == "FINISHED" for run in parents)
    assert len(_children(runs, first["run_id"], "optuna-trial")) == 3
    assert len(_children(runs, second["run_id"], "optuna-trial")) == 2
    assert second["tuning"]["trials_this_run"] == 2
    assert sum(second["tuning"]["counts"].values()) == 5  # the study continued
    # ... with settings it had not tried (a seeded sampler used to replay the first run's).
    tried = [
        tuple(sorted(trial.data.params.items()))
        for run_id in (first["run_id"], second["run_id"])
        for trial in _children(runs, run_id, "optuna-trial")
    ]
    assert len(set(tried)) == 5
    # Selection on validation; every other candidate measured on test in a nested run, the chosen
    # one on the parent run.
    chosen = first["selection"]["chosen"]
    assert chosen in {"hybrid", "blend", "popularity", "item_knn"}
    assert {row["model"] for row in first["selection"]["validation"]} == {"hybrid", "blend", "popularity", "item_knn"}
    measured = _children(runs, first["run_id"], "baseline") + _children(runs, first["run_id"], "candidate")
    assert {run.data.tags["model"] for run in measured} == {"hybrid", "blend", "popularity", "item_knn"} - {chosen}
    assert [row["model"] for row in first["metrics"] if row["registered"]] == [chosen]
    weights = first["selection"]["blend_weights"]
    assert set(weights) <= {"factors", "ease", "item_knn"} and sum(weights.values()) == pytest.approx(1.0)
    trial = _children(runs, first["run_id"], "optuna-trial")[0]
    curve = client.get_metric_history(trial.info.run_id, "val_ndcg_at_10")
    assert [point.step for point in curve] == list(range(1, len(curve) + 1)) and len(curve) >= 1
    assert {"loss", "no_components", "learning_rate", "item_genre", "user_taste"} <= set(trial.data.params)

    parent = client.get_run(first["run_id"])
    assert parent.data.params["served_factors_fit"] == "from scratch"
    continued = client.get_run(second["run_id"]).data.params["served_factors_fit"]
    assert continued == "continued 2 epochs from the evaluation twin's"
    for metric in (
        "test_ndcg_at_10",
        "test_recall_at_10",
        "best_val_ndcg_at_10",
        "gate_challenger_score",
        "stage_seconds.tuning",
    ):
        assert metric in parent.data.metrics, metric
    assert parent.data.tags["snapshot_id"] == first["snapshot"]["snapshot_id"]
    assert parent.data.tags["code_version"]
    digests = {entry.dataset.digest for entry in parent.inputs.dataset_inputs}
    assert {f"{first['snapshot']['snapshot_id']}-{part}"[:36] for part in ("snapshot", "train", "test")} == digests
    artifacts = {
        item.path
        for folder in ("", "plots", "features", "data", "metrics")
        for item in client.list_artifacts(first["run_id"], folder)
    }
    assert {
        "model_card.md",
        "data/validation_report.md",
        "plots/optuna_history.png",
        "plots/metric_at_k.png",
        "plots/popularity_coverage.png",
        "features/item_vocabulary.parquet",
        "features/user_vocabulary.parquet",
        "data/snapshot.json",
        "metrics/test_metrics.json",
        "metrics/validation_metrics.json",
        "metrics/blend_weights.json",
    } <= artifacts
    card = mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/model_card.md")
    assert first["snapshot"]["snapshot_id"] in card and f"**{chosen}**" in card and "Promotion gate" in card
    assert "## What is served" in card and "Evaluation twin" in card and "## Selection" in card
    assert "refit from scratch for the twin's epochs" in card
    second_card = mlflow.artifacts.load_text(f"{client.get_run(second['run_id']).info.artifact_uri}/model_card.md")
    assert "the twin's factor models trained on for 2 more epochs" in second_card
    # The rating predictor is trained in every run, measured beside its baselines on the holdout.
    assert "Predicted ratings" in card and "metrics/rating_metrics.json" in artifacts
    errors = {row["model"]: row for row in first["ratings"]}
    assert set(errors) == {"global mean", "bias baseline", "biased_mf"}
    assert all(row["rmse"] == pytest.approx(np.sqrt(row["mse"])) for row in errors.values())
    assert parent.data.tags["selected_model"] == chosen

    # Registry: versions 1 and 2, the champion where the gate put it, the decision on the version.
    name = "movierec-lightfm"
    assert first["registration"]["promoted"] and "first model" in first["registration"]["reason"]
    versions = {str(v.version): v for v in client.search_model_versions(f"name = '{name}'")}
    assert sorted(versions) == ["1", "2"]
    registration = second["registration"]
    expected = "2" if registration["challenger_score"] - registration["champion_score"] > 0.001 else "1"
    assert registration["promoted"] == (expected == "2")
    assert str(client.get_model_version_by_alias(name, "champion").version) == expected
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"
    exported = home / "exports" / f"{name}-v{expected}-top20.parquet"  # the champion's batch export
    assert (
        second["export"] == str(exported)
        and exported.is_file()
        and (home / "exports" / f"{name}-v1-top20.parquet").is_file()
    )
    tags = versions["2"].tags
    assert tags["gate.champion_version"] == "1" and float(tags["gate.champion_score"]) == pytest.approx(
        registration["champion_score"], abs=1e-6
    )  # tag: 6 decimals
    assert tags["snapshot_id"] == first["snapshot"]["snapshot_id"] and tags["run_id"] == second["run_id"]
    # The gate's challenger score is the same protocol as the test metric of the evaluation table.
    registered = next(row for row in second["metrics"] if row["registered"])
    assert registration["challenger_score"] == pytest.approx(registered["ndcg@10"], abs=1e-6)
    # Stored with the version for monitoring: what the served model learned, summarised.
    reference = mlflow.artifacts.load_dict(tags["monitoring.reference"])
    assert reference["ratings"] == second["snapshot"]["rows"]["ratings"] == sum(reference["rating_counts"].values())
    assert reference["holdout_ndcg@10"] == pytest.approx(registered["ndcg@10"]) and reference["positive_genre_counts"]
    assert reference["holdout_hit_rate@10"] == pytest.approx(registered["hit_rate@10"])
    # The version says what it serves: every rating of the snapshot; its twin, the holdout's training part.
    assert tags["model"] == second["selection"]["chosen"]
    assert int(tags["served_ratings"]) == second["snapshot"]["rows"]["ratings"] > int(tags["evaluation_ratings"])

    # By hand: list, force the other version in, roll back.
    other = "1" if expected == "2" else "2"
    cli = CliRunner()
    listing = cli.invoke(app, ["models"])
    assert (
        listing.exit_code == 0 and "champion" in listing.output and first["snapshot"]["snapshot_id"] in listing.output
    )
    assert f"{int(tags['served_ratings']):,}" in listing.output  # the served bundle's rating count
    missing = cli.invoke(app, ["promote", "--version", "99"])
    assert missing.exit_code == 1 and "has no version 99" in missing.output
    assert str(client.get_model_version_by_alias(name, "champion").version) == expected
    refused = cli.invoke(app, ["promote", "--version", other])  # it lost the gate once; it loses again
    assert refused.exit_code == 1 and "the gate says no" in refused.output
    forced = cli.invoke(app, ["promote", "--version", other, "--force"])
    assert forced.exit_code == 0, forced.output
    assert str(client.get_model_version_by_alias(name, "champion").version) == other
    back = cli.invoke(app, ["rollback"])
    assert back.exit_code == 0 and f"champion: version {expected}" in back.output
    assert str(client.get_model_version_by_alias(name, "champion").version) == expected

    # A run without new trials keeps the tuned setting: its features come from Prefect's cache.
    third = retrain(**DATA, trials=0)
    states = _task_states(client.get_run(third["run_id"]).data.tags["prefect.flow_run_id"])
    assert states["build features (holdout)"] == "Cached" and states["build features (all)"] == "Cached"


def test_a_failed_run_leaves_the_registry_untouched(home, quick_pipeline, monkeypatch):
    from flows.retrain import retrain
    from models.factorization import LightFMRecommender
    from movierec.tracking.registry import Registry

    first = retrain(**DATA, trials=2)
    client = _client(home)
    name = "movierec-lightfm"

    class BrokenTraining(LightFMRecommender):
        def fit(self, *args, **kwargs):
            raise RuntimeError("injected failure in final training")

    with monkeypatch.context() as patch:
        patch.setattr("models.families.LightFMRecommender", BrokenTraining)
        with pytest.raises(RuntimeError, match="injected failure in final training"):
            retrain(**DATA, trials=1)

    def broken_record(self, decision):
        raise RuntimeError("injected failure in registration")

    with monkeypatch.context() as patch:
        patch.setattr(Registry, "record", broken_record)
        with pytest.raises(RuntimeError, match="injected failure in registration"):
            retrain(**DATA, trials=1)

    assert [str(v.version) for v in client.search_model_versions(f"name = '{name}'")] == ["1"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    registered = client.get_registered_model(name)
    assert json.loads(registered.tags["champion_history"]) == ["1"]
    failed = [
        run for run in _runs(client) if "mlflow.parentRunId" not in run.data.tags and run.info.run_id != first["run_id"]
    ]
    assert sorted(run.info.status for run in failed) == ["FAILED", "FAILED"]
    errors = sorted(run.data.tags["error"] for run in failed)
    assert errors == [
        "RuntimeError: injected failure in final training",
        "RuntimeError: injected failure in registration",
    ]
