"""The train flow end to end on generated data: features on disk, every model measured."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from models.families import MODEL_NAMES

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def fast_training(monkeypatch):
    monkeypatch.setenv("MOVIEREC_TRAINING__EPOCHS", "5")
    monkeypatch.setenv("MOVIEREC_TRAINING__NO_COMPONENTS", "16")


def _digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def test_train_flow_measures_every_model_and_stores_features(home, fast_training, tmp_path, monkeypatch):
    from flows.ingest import ingest
    from flows.train import train

    ingest(dataset="synthetic", synthetic_ratings=8_000, seed=2)
    result = train(dataset="synthetic")
    assert [row["model"] for row in result["metrics"]] == list(MODEL_NAMES)
    for row in result["metrics"]:
        for metric in ("ndcg@10", "recall@10", "precision@10", "map@10", "coverage@10"):
            assert 0.0 <= row[metric] <= 1.0, (row["model"], metric)
        assert row["n_users_evaluated"] > 0
    biased = next(row for row in result["metrics"] if row["model"] == "biased_mf")
    assert 0 < biased["mae"] <= biased["rmse"] < 2.5
    assert {row["model"] for row in result["cold_items"]} == {"mf", "content", "hybrid"}
    assert [row["model"] for row in result["cold_users"]][:2] == ["hybrid", "popularity"]
    assert {row["model"] for row in result["cold_users"]} >= {"segments: gender", "segments: age+gender"}
    assert all(row["n_users_evaluated"] > 0 for row in result["cold_users"])

    features = Path(result["features"])
    assert sorted(p.name for p in features.iterdir()) == [
        "item_features.parquet",
        "item_vocabulary.parquet",
        "settings.json",
        "user_features.parquet",
        "user_vocabulary.parquet",
    ]
    first = _digests(features)
    # Same snapshot + settings in another home: byte-identical feature files.
    monkeypatch.setenv("MOVIEREC_HOME", str(tmp_path / "second-home"))
    ingest(dataset="synthetic", synthetic_ratings=8_000, seed=2)
    again = train(dataset="synthetic", models=["popularity"], cold_start=False)
    assert Path(again["features"]).name == features.name
    assert _digests(Path(again["features"])) == first


def test_train_without_a_snapshot_says_what_to_run(home):
    from flows.train import train
    from movierec.errors import DataError

    with pytest.raises(DataError, match="run `movierec ingest --dataset ml-100k`"):
        train(dataset="ml-100k")
