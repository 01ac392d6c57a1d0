"""Batch export: every known user's top-k in original ids, and an atomic Parquet write."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from ranking import assert_same_ranking

from features.prepare import prepare
from features.splits import user_temporal_split
from inference.model import ServingBundle
from models.bundle import serving_bundle
from models.factorization import LightFMRecommender
from movierec.data.preprocess import canonicalize
from movierec.data.synthetic import generate
from movierec.serving import export
from movierec.serving.export import export_recommendations, write_export

USER_GROUPS = {"identity": 1.0, "age": 0.5, "gender": 0.5, "occupation": 0.5, "taste": 1.0}


@pytest.fixture(scope="module")
def bundle() -> ServingBundle:
    tables = canonicalize(generate(6_000, seed=7), None)[0]
    prepared = prepare(
        tables.users, tables.items, tables.tags, chosen=user_temporal_split(tables.ratings), user_groups=USER_GROUPS
    )
    model = LightFMRecommender(epochs=3, no_components=8).fit(
        prepared.train, item_features=prepared.item_features.matrix, user_features=prepared.user_features.matrix
    )
    return serving_bundle(model, prepared, tables.users, tables.items, USER_GROUPS)


def _seen_pairs(bundle: ServingBundle) -> set[tuple[int, int]]:
    seen = bundle.seen.tocoo()
    return set(zip(bundle.user_ids[seen.row].tolist(), bundle.item_ids[seen.col].tolist(), strict=True))


def test_every_known_user_gets_k_ranked_unseen_movies_in_original_ids(bundle):
    k = 7
    frame = export_recommendations(bundle, k, batch_size=50)  # several batches
    assert list(frame.columns) == ["user_id", "movie_id", "rank", "score"]
    assert [str(t) for t in frame.dtypes] == ["int64", "int64", "int32", "float32"]
    assert len(frame) == bundle.n_users * k
    assert sorted(frame["user_id"].unique()) == sorted(bundle.user_ids.tolist())
    assert (
        frame.groupby("user_id")["rank"].apply(list)
        == pd.Series([list(range(1, k + 1))] * bundle.n_users, index=np.sort(bundle.user_ids))
    ).all()
    assert frame["movie_id"].isin(bundle.item_ids).all() and (frame["movie_id"] >= 0).all()
    assert not set(zip(frame["user_id"], frame["movie_id"], strict=True)) & _seen_pairs(bundle)
    assert not frame.duplicated(["user_id", "movie_id"]).any()
    # The same lists as the bundle's own batched API, user by user (other batch shapes: float32
    # scores match within a tolerance, lists wherever scores are not tied within it).
    movie_ids, scores, fallback = bundle.recommend_users(bundle.user_ids, k)
    assert not fallback.any()
    exported = bundle.item_index(frame["movie_id"].to_numpy()).reshape(-1, k)
    expected = bundle.item_index(movie_ids.ravel()).reshape(-1, k)
    full = bundle.scores(bundle.user_index(bundle.user_ids))
    assert_same_ranking(exported, frame["score"].to_numpy().reshape(-1, k), expected, scores, full)
    np.testing.assert_array_equal(frame["user_id"].to_numpy().reshape(-1, k)[:, 0], bundle.user_ids)


def test_padding_is_dropped_and_ranks_stay_contiguous(bundle):
    seen_per_user = np.diff(bundle.seen.indptr)
    k = bundle.n_items - int(np.median(seen_per_user))  # heavy raters have fewer than k eligible movies
    frame = export_recommendations(bundle, k)
    rows = frame.groupby("user_id").size().reindex(bundle.user_ids)
    expected = np.minimum(k, bundle.n_items - seen_per_user)
    np.testing.assert_array_equal(rows.to_numpy(), expected)
    assert (expected < k).any()
    assert (frame["movie_id"] != -1).all() and np.isfinite(frame["score"]).all()
    assert (frame.groupby("user_id")["rank"].agg(lambda r: list(r) == list(range(1, len(r) + 1)))).all()
    assert not set(zip(frame["user_id"], frame["movie_id"], strict=True)) & _seen_pairs(bundle)


def test_k_must_be_positive(bundle):
    with pytest.raises(ValueError, match="k must be positive"):
        export_recommendations(bundle, 0)


def test_write_export_round_trips_and_creates_folders(bundle, tmp_path):
    frame = export_recommendations(bundle, 5)
    out = write_export(frame, tmp_path / "a" / "b" / "recs.parquet", metadata={"movierec.k": "5"})
    assert out.exists() and sorted(p.name for p in out.parent.iterdir()) == ["recs.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(out), frame)
    assert pq.read_schema(out).metadata[b"movierec.k"] == b"5"


def test_a_failed_write_leaves_no_file_and_no_temporary_file(bundle, tmp_path, monkeypatch):
    frame = export_recommendations(bundle, 5)
    out = tmp_path / "exports" / "recs.parquet"
    monkeypatch.setattr(export, "ROWS_PER_GROUP", 100)  # many row groups: fail after some were written
    original, written = pq.ParquetWriter.write_batch, []

    def failing_write_batch(self, batch, *args, **kwargs):
        if len(written) == 3:
            raise OSError("disk full (injected)")
        written.append(len(batch))
        return original(self, batch, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", failing_write_batch)
    with pytest.raises(OSError, match="injected"):
        write_export(frame, out)
    assert len(written) == 3
    assert list(out.parent.iterdir()) == []

    # An existing export stays as it was when a new write fails.
    monkeypatch.setattr(pq.ParquetWriter, "write_batch", original)
    write_export(frame.head(10), out)
    before = out.read_bytes()
    written.clear()
    monkeypatch.setattr(pq.ParquetWriter, "write_batch", failing_write_batch)
    with pytest.raises(OSError, match="injected"):
        write_export(frame, out)
    assert out.read_bytes() == before and [p.name for p in out.parent.iterdir()] == ["recs.parquet"]


def test_the_export_streams_each_batch_to_the_file_before_scoring_the_next(bundle, tmp_path, monkeypatch):
    events = []
    recommend_users = ServingBundle.recommend_users
    write_batch = pq.ParquetWriter.write_batch
    monkeypatch.setattr(
        ServingBundle, "recommend_users", lambda self, ids, k: events.append("score") or recommend_users(self, ids, k)
    )
    monkeypatch.setattr(
        pq.ParquetWriter,
        "write_batch",
        lambda self, batch, **kw: events.append("write") or write_batch(self, batch, **kw),
    )
    users = range(10, 130)
    out = export.write_batches(
        export.export_batches(bundle, 5, batch_size=50, users=users), export.SCHEMA, tmp_path / "r.parquet"
    )
    assert events == ["score", "write"] * 3  # users 10-59, 60-109, 110-129
    written = pd.read_parquet(out)
    expected = export_recommendations(bundle, 5)
    expected = expected[expected["user_id"].isin(bundle.user_ids[10:130])].reset_index(drop=True)
    pd.testing.assert_frame_equal(written, expected)

    def failing(batches):
        yield next(batches)
        raise MemoryError("scoring failed (injected)")

    with pytest.raises(MemoryError, match="injected"):
        export.write_batches(failing(export.export_batches(bundle, 5, batch_size=50)), export.SCHEMA, out)
    pd.testing.assert_frame_equal(pd.read_parquet(out), expected)  # the earlier file, untouched
    assert [path.name for path in tmp_path.iterdir()] == ["r.parquet"]
