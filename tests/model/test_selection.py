"""The selection stage on generated data: the blend's weights and the champion come from the
validation split alone, and a catalogue too large for EASE skips it with the reason, never fails."""

from __future__ import annotations

import mlflow
import pytest

from features.prepare import prepare
from features.splits import user_temporal_split, validation_split
from models import baselines
from models.blend import UNRATED_CONTENT_WEIGHTS
from models.tune import TrialSetup
from movierec.data.preprocess import canonicalize
from movierec.data.snapshot import Snapshot
from movierec.data.synthetic import generate
from movierec.settings import get_settings
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
