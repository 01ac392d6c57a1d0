"""Feature matrices as Parquet beside the snapshot they were built from.

`<snapshot>/features/<key>/` holds `item_features.parquet` and `user_features.parquet` (the
non-zero entries as row, column, value), `item_vocabulary.parquet` and `user_vocabulary.parquet`
(feature names and groups) and `settings.json`. The key hashes every setting that shapes the features, so the same
snapshot and settings map to the same folder, and the files are byte-identical when rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from features.items import FeatureMatrix


def features_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def _entries(matrix: sp.csr_matrix) -> pa.Table:
    coo = matrix.tocoo()
    order = np.lexsort((coo.col, coo.row))
    return pa.table(
        {
            "row": pa.array(coo.row[order].astype(np.int32)),
            "column": pa.array(coo.col[order].astype(np.int32)),
            "value": pa.array(coo.data[order].astype(np.float32)),
        }
    )


def _write(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd", write_statistics=True)


def write_features(snapshot_dir: Path, settings: dict, named: dict[str, FeatureMatrix]) -> Path:
    """Store each FeatureMatrix by entity (e.g. {"item": ..., "user": ...}); a no-op if present."""
    target = snapshot_dir / "features" / features_key(settings)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{target.name}-", dir=target.parent))
    try:
        for name, features in named.items():
            entries = _entries(features.matrix).replace_schema_metadata(
                {"shape": json.dumps(list(features.matrix.shape))}
            )
            _write(entries, staging / f"{name}_features.parquet")
            vocabulary = features.vocabulary()
            _write(
                pa.table({"feature": vocabulary["feature"].tolist(), "group": vocabulary["group"].tolist()}),
                staging / f"{name}_vocabulary.parquet",
            )
        (staging / "settings.json").write_text(json.dumps(settings, indent=2, sort_keys=True))
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_matrix(path: Path) -> sp.csr_matrix:
    table = pq.read_table(path)
    shape = tuple(json.loads(table.schema.metadata[b"shape"]))
    return sp.csr_matrix(
        (table["value"].to_numpy(), (table["row"].to_numpy(), table["column"].to_numpy())),
        shape=shape,
        dtype=np.float32,
    )
