import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from movierec.data.preprocess import canonicalize
from movierec.data.schema import SCHEMAS
from movierec.data.snapshot import SnapshotStore, canonical_arrow, content_hash, inputs_fingerprint


@pytest.fixture(scope="module")
def tables(small_raw):
    return canonicalize(small_raw, None)[0]


def test_same_content_same_id_regardless_of_row_order(tmp_path, tables):
    first = SnapshotStore(tmp_path / "a").write("x", tables, {"note": 1})
    shuffled = tables.as_dict()
    shuffled["ratings"] = shuffled["ratings"].sample(frac=1, random_state=3)
    # Canonical tables are sorted by key before storing, so only content decides the id.
    shuffled["ratings"] = shuffled["ratings"].sort_values(["user_id", "movie_id"]).reset_index(drop=True)
    from features.tables import CanonicalTables

    second = SnapshotStore(tmp_path / "b").write("x", CanonicalTables(**shuffled), {"note": 2})
    assert first.id == second.id
    changed = tables.as_dict()
    changed["ratings"] = changed["ratings"].assign(
        rating=changed["ratings"]["rating"].where(
            changed["ratings"].index != 0, 0.5 if changed["ratings"]["rating"].iloc[0] != 0.5 else 1.0
        )
    )
    assert content_hash(canonical_arrow(CanonicalTables(**changed))) != first.id


def test_files_are_parquet_zstd_with_declared_schema_and_load_back(tmp_path, tables):
    store = SnapshotStore(tmp_path)
    snapshot = store.write("x", tables, {"source": {"kind": "test"}})
    for name, schema in SCHEMAS.items():
        parquet = pq.ParquetFile(snapshot.table_path(name))
        stored = parquet.schema_arrow
        assert stored.names == schema.names
        for field in schema:
            if pa.types.is_timestamp(field.type):
                # Parquet has no second unit: stored as ms, read back as s through the schema.
                assert stored.field(field.name).type.tz == "UTC"
            else:
                assert stored.field(field.name).type == field.type, field.name
        if parquet.metadata.num_row_groups:
            assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    loaded = store.load(snapshot)
    pd.testing.assert_frame_equal(
        loaded.ratings[["user_id", "movie_id"]], tables.ratings[["user_id", "movie_id"]], check_dtype=False
    )
    assert str(loaded.ratings["timestamp"].dtype) == "datetime64[s, UTC]"
    assert store.verify(snapshot)
    assert store.latest("x").id == snapshot.id
    assert snapshot.lineage["tables"]["ratings"]["rows"] == len(tables.ratings)


def test_writing_identical_content_is_a_no_op(tmp_path, tables):
    store = SnapshotStore(tmp_path)
    first = store.write("x", tables, {})
    mtime = first.table_path("ratings").stat().st_mtime_ns
    again = store.write("x", tables, {})
    assert again.reused and again.id == first.id
    assert first.table_path("ratings").stat().st_mtime_ns == mtime
    assert [s.id for s in store.list("x")] == [first.id]


def test_a_failed_write_leaves_no_snapshot_and_no_staging(tmp_path, tables, monkeypatch):
    store = SnapshotStore(tmp_path)
    calls = {"n": 0}
    real_write = pq.write_table

    def failing_write(table, where, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real_write(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", failing_write)
    with pytest.raises(OSError, match="disk full"):
        store.write("x", tables, {})
    assert list((tmp_path / "x").iterdir()) == []
    assert store.latest("x") is None


def test_tampered_files_fail_verification(tmp_path, tables):
    store = SnapshotStore(tmp_path)
    snapshot = store.write("x", tables, {})
    ratings = pq.read_table(snapshot.table_path("ratings"))
    pq.write_table(ratings.slice(1), snapshot.table_path("ratings"))
    assert not store.verify(snapshot)


def test_fingerprint_depends_on_every_input():
    base = {"dataset": "ml-100k", "files": {"u.data": "aa"}}
    assert inputs_fingerprint(base) == inputs_fingerprint(dict(base))
    assert inputs_fingerprint(base) != inputs_fingerprint({**base, "files": {"u.data": "ab"}})
    assert inputs_fingerprint(base) != inputs_fingerprint({**base, "tmdb": {"x": "1"}})
