"""Batch export: every known user's top-k recommendations as one Parquet file.

`export_batches` is pure (a bundle in, one Arrow record batch per `USERS_PER_BATCH` users out,
through the bundle's `recommend_users`, the scoring the API and the gate use); `write_batches`
streams them into the file as they come, so memory holds one batch of scores and one of rows,
whatever the number of users (at MovieLens-25M's 162k users x 59k movies, all scores at once
would be 38 GB). The file is written atomically: into a temporary file in the target's folder,
then `os.replace`, so `out` is either absent, the previous file, or the complete new one, and a
failure leaves no temporary file.

Columns: user_id (int64), movie_id (int64), rank (int32, 1-based), score (float32, the model's
score), in the dataset's ORIGINAL ids, ordered by user (bundle order) then rank. Every movie a
user rated is excluded; padding (fewer than k eligible movies) is dropped, so such a user
has fewer than k rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from inference.model import PAD_MOVIE, ServingBundle
from movierec.data.files import atomic_file
from movierec.tracking.served_model import load_bundle

COLUMNS = ("user_id", "movie_id", "rank", "score")
SCHEMA = pa.schema([("user_id", pa.int64()), ("movie_id", pa.int64()), ("rank", pa.int32()), ("score", pa.float32())])
USERS_PER_BATCH = 8192
ROWS_PER_GROUP = 1_000_000


def export_batches(
    bundle: ServingBundle, k: int, *, batch_size: int = USERS_PER_BATCH, users: range | None = None
) -> Iterator[pa.RecordBatch]:
    """Top-k of the bundle's users `users` (positions in its user order; default: all of them),
    one record batch of `SCHEMA` per `batch_size` users."""
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    users = range(bundle.n_users) if users is None else users
    for start in range(users.start, users.stop, batch_size):
        user_ids = bundle.user_ids[start : min(start + batch_size, users.stop)]
        movie_ids, scores, fallback = bundle.recommend_users(user_ids, k)
        assert not fallback.any(), "every exported user is known to the bundle"
        valid = movie_ids != PAD_MOVIE
        ranks = np.cumsum(valid, axis=1, dtype=np.int32)  # padding trails, so this is 1..n per user
        columns = (
            np.repeat(user_ids, valid.sum(axis=1)).astype(np.int64),
            movie_ids[valid].astype(np.int64),
            ranks[valid],
            scores[valid].astype(np.float32),
        )
        yield pa.RecordBatch.from_arrays([pa.array(column) for column in columns], schema=SCHEMA)


def export_recommendations(bundle: ServingBundle, k: int, *, batch_size: int = USERS_PER_BATCH) -> pd.DataFrame:
    """`export_batches` of every user as one DataFrame (for callers that want it in memory)."""
    return pa.Table.from_batches(list(export_batches(bundle, k, batch_size=batch_size)), schema=SCHEMA).to_pandas()


def write_export(frame: pd.DataFrame, out: Path, *, metadata: dict[str, str] | None = None) -> Path:
    """Write `frame` (the columns of `export_recommendations`) to `out` as zstd Parquet, atomically.

    Parent folders are created. `metadata` goes into the file's schema metadata (e.g. the model
    URI and k). Returns `out`.
    """
    table = pa.Table.from_pandas(frame[list(COLUMNS)], schema=SCHEMA, preserve_index=False)
    return write_parquet(table, out, metadata=metadata)


def write_parquet(table: pa.Table, out: Path, *, metadata: dict[str, str] | None = None) -> Path:
    """Write `table` to `out` as zstd Parquet, atomically (`write_batches`)."""
    return write_batches(table.to_batches(max_chunksize=ROWS_PER_GROUP), table.schema, out, metadata=metadata)


def write_batches(
    batches: Iterable[pa.RecordBatch], schema: pa.Schema, out: Path, *, metadata: dict[str, str] | None = None
) -> Path:
    """Write `batches` (of `schema`) to `out` as zstd Parquet as they come, atomically: a
    temporary file in the same folder, fsynced, then renamed over `out`, so a reader never sees
    half a file and a failure (in writing or in making a batch) leaves nothing behind. Parent
    folders are created; `metadata` goes into the schema metadata. Returns `out`."""
    if metadata:
        schema = schema.with_metadata({**(schema.metadata or {}), **{str(k): str(v) for k, v in metadata.items()}})
    with atomic_file(out) as file, pq.ParquetWriter(file, schema, compression="zstd") as writer:
        for batch in batches:
            for part in pa.Table.from_batches([batch]).to_batches(max_chunksize=ROWS_PER_GROUP):
                writer.write_batch(part)
    return out


def user_shards(n_users: int, size: int) -> list[range]:
    """The bundle's user positions in consecutive ranges of at most `size` users."""
    return [range(start, min(start + size, n_users)) for start in range(0, n_users, size)]


def export_part(bundle: ServingBundle, k: int, users: range, out: Path) -> int:
    """One shard of the export: the top-k of the bundle's users `users` streamed to `out`
    (atomically, like the whole file); its number of rows."""
    rows = 0

    def counted(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        nonlocal rows
        for batch in batches:
            rows += batch.num_rows
            yield batch

    write_batches(counted(export_batches(bundle, k, users=users)), SCHEMA, out)
    return rows


def join_parts(parts: list[Path], out: Path, *, metadata: dict[str, str] | None = None) -> Path:
    """The shards' files, in order, streamed into `out` (atomically): the same rows in the same
    order as one `export_batches` of every user."""
    batches = (batch for part in parts for batch in pq.ParquetFile(part).iter_batches(batch_size=ROWS_PER_GROUP))
    return write_batches(batches, SCHEMA, out, metadata=metadata)


def export_path(exports_dir: Path, name: str, version: str, k: int) -> Path:
    """Where the retrain flow keeps the export of a registered version: one file per version and k."""
    return exports_dir / f"{name}-v{version}-top{k}.parquet"


def export_model(model_uri: str, k: int, out: Path) -> tuple[Path, dict[str, int]]:
    """Load `model_uri` (with `movierec.tracking.served_model.load_bundle`), stream its top-k for
    every known user to `out`; (path, {"rows": ..., "users": ...})."""
    bundle = load_bundle(model_uri)
    counts = {"rows": 0, "users": bundle.n_users}

    def counted(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            counts["rows"] += batch.num_rows
            yield batch

    metadata = {"movierec.model_uri": model_uri, "movierec.k": str(k)}
    return write_batches(counted(export_batches(bundle, k)), SCHEMA, out, metadata=metadata), counts
