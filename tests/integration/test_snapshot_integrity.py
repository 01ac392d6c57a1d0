"""A stored snapshot whose files changed on disk is never reused as if nothing happened."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from movierec.data.snapshot import SnapshotStore
from movierec.settings import get_settings

pytestmark = pytest.mark.usefixtures("prefect_api")

DATA = {"dataset": "synthetic", "synthetic_ratings": 4_000, "seed": 1}


def test_a_replaced_table_file_is_detected_and_the_snapshot_ingested_again(home, capfd, caplog):
    from flows.ingest import ingest

    first = ingest(**DATA)
    store = SnapshotStore(get_settings().snapshots_dir)
    snapshot = store.get("synthetic", first["snapshot_id"])
    ratings_file = snapshot.table_path("ratings")
    original = ratings_file.read_bytes()
    # A valid Parquet file with other content: the first 100 ratings only.
    pq.write_table(pq.read_table(ratings_file).slice(0, 100), ratings_file)
    assert store.damaged(snapshot) == ["ratings.parquet"]

    again = ingest(**DATA)
    assert not again["reused"] and again["snapshot_id"] == first["snapshot_id"]
    logged = caplog.text + capfd.readouterr().err  # the log's handler depends on how pytest runs
    assert "its files changed since it was written (ratings.parquet); ingesting again" in logged
    assert ratings_file.read_bytes() == original and store.damaged(snapshot) == []
    assert len(store.load(snapshot).ratings) == 4_000
    set_aside = [p.name for p in store.dataset_dir("synthetic").iterdir() if p.name.startswith(".damaged-")]
    assert len(set_aside) == 1 and set_aside[0].startswith(f".damaged-{first['snapshot_id']}-")
    # Intact again: the next run reuses it.
    assert ingest(**DATA)["reused"]
