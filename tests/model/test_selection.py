"""The selection stage on generated data: the blend's weights and the champion come from the
validation split alone, and a catalogue too large for EASE skips it with the reason, never fails."""

from __future__ import annotations

import mlflow
import pytest

from features.prepare import prepare
from features.splits import user_temporal_split, validation_split
from models import baselines
from models.blend import UNRATED_CONTENT_WEIGHTS
from models.evaluation import evaluate
from models.factorization import LightFMRecommender
from models.tune import TrialSetup
from movierec.data.preprocess import canonicalize
from movierec.data.snapshot import Snapshot
from movierec.data.synthetic import generate
from movierec.settings import get_settings
from movierec.training.candidates import mf_params
from movierec.training.selection import select


@pytest.fixture
def validation(home, monkeypatch):
    monkeypatch.setenv("MOVIEREC_PIPELINE__BASELINES", '["popularity", "item_knn", "ease"]')
    raw = generate(5_000, seed=11)
    tables, report = canonicalize(raw, None)
    settings = get_settings()
    chosen = validation_split(user_temporal_split(tables.ratings))
    setup = TrialSetup(
        {"no_components": 8, "epochs": 3, "loss": "warp"}, {"identity": 1.0, "genre": 1.0}, {"identity": 1.0}
    )
    prepared = prepare(
        tables.users,
        tables.items,
        tables.tags,
        chosen=chosen,
        item_groups=setup.item_groups,
        user_groups=setup.user_groups,
    )
    snapshot = Snapshot("synthetic", "test", home, {"preprocessing": report})
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(home)  # the SQLite store's default artifact root is ./mlruns
    mlflow.set_tracking_uri(f"sqlite:///{home}/mlflow.db")
    yield settings, prepared, tables, snapshot, setup
    mlflow.set_tracking_uri(None)


def test_selection_chooses_on_validation_and_logs_its_tables(validation):
    settings, prepared, tables, snapshot, setup = validation
    with mlflow.start_run() as run:
        selection = select(settings, prepared, tables, snapshot, setup)
    table = selection.table
    assert set(table.index) == {"hybrid", "popularity", "item_knn", "ease", "blend"}
    eligible = table.loc[table["eligible"], "ndcg@10"]
    assert selection.chosen == eligible.idxmax() and not selection.skipped
    best = selection.weight_table.iloc[0]
    assert best["weights"] == selection.weights and best["ndcg@10"] == pytest.approx(
        table.loc["blend", "ndcg@10"], abs=2e-3
    )
    # Unrated movies: every content weight measured, the best kept, ties to the larger weight.
    measured = selection.unrated_table
    assert set(measured) == set(UNRATED_CONTENT_WEIGHTS)
    assert selection.unrated_content_weight == max(w for w in measured if measured[w] == max(measured.values()))
    logged = mlflow.get_run(run.info.run_id)
    assert logged.data.params["unrated_content_weight"] == str(selection.unrated_content_weight)
    assert logged.data.tags["selected_model"] == selection.chosen
    assert logged.data.params["new_user_policy"] == selection.new_user_policy


def test_a_catalogue_too_large_for_ease_skips_it_with_the_reason(validation, monkeypatch):
    settings, prepared, tables, snapshot, setup = validation
    monkeypatch.setattr(baselines, "EASE_MAX_ITEMS", 10)
    with mlflow.start_run() as run:
        selection = select(settings, prepared, tables, snapshot, setup)
    assert "ease" not in selection.table.index and "ease" not in selection.weights and selection.ease_l2 is None
    assert set(selection.skipped) == {"ease", "blend's ease"}
    assert all("exceed its limit of 10" in reason for reason in selection.skipped.values())
    assert mlflow.get_run(run.info.run_id).data.tags["skipped.ease"] == selection.skipped["ease"]


def test_the_mf_baseline_trains_for_its_best_validation_epoch_count(validation, monkeypatch):
    settings, prepared, tables, snapshot, setup = validation
    monkeypatch.setenv("MOVIEREC_PIPELINE__BASELINES", '["popularity", "mf"]')
    monkeypatch.setenv("MOVIEREC_TRAINING__EPOCHS", "8")
    monkeypatch.setenv("MOVIEREC_TRAINING__NO_COMPONENTS", "8")
    settings = get_settings()
    with mlflow.start_run() as run:
        selection = select(settings, prepared, tables, snapshot, setup)
    # The table's mf is the model at its best epoch: no other epoch count of the same fit scores more.
    by_epoch = []
    for epochs in range(1, 9):
        model = LightFMRecommender(name="mf", **{**settings.training.lightfm_params(), "epochs": epochs})
        by_epoch.append(evaluate(model.fit(prepared.train), prepared, k=10)["ndcg@10"])
    assert 1 <= selection.mf_epochs <= 8
    assert selection.table.loc["mf", "ndcg@10"] == pytest.approx(max(by_epoch), abs=1e-9)
    assert by_epoch.index(max(by_epoch)) + 1 == selection.mf_epochs
    assert mlflow.get_run(run.info.run_id).data.params["mf_epochs"] == str(selection.mf_epochs)
    assert mf_params(settings, selection.mf_epochs)["epochs"] == selection.mf_epochs
