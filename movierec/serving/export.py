"""Batch export: every known user's top-k recommendations as one Parquet file.

`export_recommendations` is pure (a bundle in, a DataFrame out, through the bundle's
`recommend_users`, the scoring the API and the gate use); `write_export` writes the frame
atomically: into a temporary file in the target's folder, then `os.replace`, so `out` is either
absent, the previous file, or the complete new one, and a failure leaves no temporary file.

Columns: user_id (int64), movie_id (int64), rank (int32, 1-based), score (float32, the model's
score), in the dataset's ORIGINAL ids, ordered by user (bundle order) then rank. Every movie a
user rated is excluded; padding (fewer than k eligible movies) is dropped, so such a user
has fewer than k rows.
"""

from __future__ import annotations

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


def export_recommendations(bundle: ServingBundle, k: int, *, batch_size: int = USERS_PER_BATCH) -> pd.DataFrame:
    """Top-k of every user the bundle knows, `batch_size` users per `recommend_users` call."""
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    parts = []
    for start in range(0, bundle.n_users, batch_size):
        users = bundle.user_ids[start : start + batch_size]
        movie_ids, scores, fallback = bundle.recommend_users(users, k)
        assert not fallback.any(), "every exported user is known to the bundle"
        valid = movie_ids != PAD_MOVIE
        ranks = np.cumsum(valid, axis=1, dtype=np.int32)  # padding trails, so this is 1..n per user
        parts.append(
            pd.DataFrame(
                {
                    "user_id": np.repeat(users, valid.sum(axis=1)).astype(np.int64),
                    "movie_id": movie_ids[valid].astype(np.int64),
                    "rank": ranks[valid],
                    "score": scores[valid].astype(np.float32),
                }
            )
        )
    if not parts:
        return pd.DataFrame({name: pd.Series(dtype=SCHEMA.field(name).type.to_pandas_dtype()) for name in COLUMNS})
    return pd.concat(parts, ignore_index=True)


def write_export(frame: pd.DataFrame, out: Path, *, metadata: dict[str, str] | None = None) -> Path:
    """Write `frame` (the columns of `export_recommendations`) to `out` as zstd Parquet, atomically.

    Parent folders are created. `metadata` goes into the file's schema metadata (e.g. the model
    URI and k). Returns `out`.
    """
    table = pa.Table.from_pandas(frame[list(COLUMNS)], schema=SCHEMA, preserve_index=False)
    return write_parquet(table, out, metadata=metadata)


def write_parquet(table: pa.Table, out: Path, *, metadata: dict[str, str] | None = None) -> Path:
    """Write `table` to `out` as zstd Parquet, atomically: a temporary file in the same folder,
    fsynced, then renamed over `out`, so a reader never sees half a file and a failure leaves
    nothing behind. Parent folders are created; `metadata` goes into the schema metadata."""
    if metadata:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), **{str(k): str(v) for k, v in metadata.items()}}
        )
    with atomic_file(out) as file, pq.ParquetWriter(file, table.schema, compression="zstd") as writer:
        for batch in table.to_batches(max_chunksize=ROWS_PER_GROUP):
            writer.write_batch(batch)
    return out


def export_path(exports_dir: Path, name: str, version: str, k: int) -> Path:
    """Where the retrain flow keeps the export of a registered version: one file per version and k."""
    return exports_dir / f"{name}-v{version}-top{k}.parquet"


def export_model(model_uri: str, k: int, out: Path) -> tuple[Path, pd.DataFrame]:
    """Load `model_uri` (with `movierec.tracking.served_model.load_bundle`), export its top-k for
    every known user to `out`; (path, frame)."""
    frame = export_recommendations(load_bundle(model_uri), k)
    return write_export(frame, out, metadata={"movierec.model_uri": model_uri, "movierec.k": str(k)}), frame
