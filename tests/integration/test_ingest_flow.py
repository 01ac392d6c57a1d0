"""The ingest and validate flows end to end, on generated data and (when present) real data."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from movierec.data.snapshot import SnapshotStore
from movierec.errors import DataError
from movierec.settings import get_settings

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_synthetic_ingest_is_deterministic_and_reingest_is_a_no_op(home):
    from flows.ingest import ingest

    first = ingest(dataset="synthetic", synthetic_ratings=5_000, seed=3)
    assert not first["reused"]
    assert first["rows"]["ratings"] == 5_000
    again = ingest(dataset="synthetic", synthetic_ratings=5_000, seed=3)
    assert again["reused"] and again["snapshot_id"] == first["snapshot_id"]
    other = ingest(dataset="synthetic", synthetic_ratings=5_000, seed=4)
    assert other["snapshot_id"] != first["snapshot_id"]

    store = SnapshotStore(get_settings().snapshots_dir)
    assert [s.id for s in store.list("synthetic")] == [first["snapshot_id"], other["snapshot_id"]]
    assert store.latest("synthetic").id == other["snapshot_id"]
    lineage = json.loads((store.get("synthetic", first["snapshot_id"]).path / "lineage.json").read_text())
    assert lineage["source"]["seed"] == 3 and lineage["source"]["kind"] == "synthetic"
    assert lineage["preprocessing"]["rating_scale"] == {"min": 0.5, "max": 5.0, "step": 0.5}
    assert lineage["validation"]["raw"] and all(s["success"] for s in lineage["validation"]["canonical"].values())


def test_identical_files_elsewhere_give_the_same_snapshot(home, data_dir, tmp_path, small_raw, monkeypatch):
    from published import write_csv_dataset

    from flows.ingest import ingest

    write_csv_dataset(small_raw, data_dir / "ml-latest-small")
    first = ingest(dataset="ml-latest-small")
    monkeypatch.setenv("MOVIEREC_HOME", str(tmp_path / "other-home"))
    second = ingest(dataset="ml-latest-small")
    assert not second["reused"]
    assert second["snapshot_id"] == first["snapshot_id"]


def test_validate_flow_rechecks_the_latest_snapshot_and_detects_tampering(home):
    from flows.ingest import ingest
    from flows.validate import validate

    summary = ingest(dataset="synthetic", synthetic_ratings=4_000, seed=1)
    result = validate(dataset="synthetic")
    assert result["snapshot_id"] == summary["snapshot_id"]
    assert all(suite["success"] for suite in result["suites"].values())
    ratings = pd.read_parquet(f"{summary['path']}/ratings.parquet")
    ratings.iloc[1:].to_parquet(f"{summary['path']}/ratings.parquet")
    with pytest.raises(DataError, match="no longer matches its content hash"):
        validate(dataset="synthetic")


def test_validate_without_a_snapshot_says_what_to_run(home):
    from flows.validate import validate

    with pytest.raises(DataError, match="run `movierec ingest --dataset ml-100k`"):
        validate(dataset="ml-100k")


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("dataset", "ratings", "users", "items", "method", "min_rate"),
    [
        ("ml-100k", 100_000, 943, 1_682, "normalised title + year", 0.25),
        ("ml-latest-small", 100_836, 610, 9_742, "links.csv tmdbId", 0.35),
    ],
)
def test_real_datasets(home, real_data, monkeypatch, dataset, ratings, users, items, method, min_rate):
    from flows.ingest import ingest

    monkeypatch.setenv("MOVIEREC_DATA_DIR", str(real_data))
    summary = ingest(dataset=dataset)
    assert summary["rows"]["ratings"] == ratings
    assert summary["rows"]["users"] == users
    assert summary["rows"]["items"] == items
    if (real_data / "tmdb-5000").is_dir():
        assert summary["tmdb"]["method"] == method
        assert summary["tmdb"]["match_rate"] >= min_rate
    tables = SnapshotStore(get_settings().snapshots_dir).load(
        SnapshotStore(get_settings().snapshots_dir).latest(dataset)
    )
    toy_story = tables.items.set_index("movie_id").loc[1]
    assert (toy_story["title"], toy_story["year"]) == ("Toy Story", 1995)
