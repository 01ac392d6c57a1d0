"""Parquet snapshots of the canonical tables, named by a hash of their content.

Layout under `<home>/snapshots/<dataset>/`:
    <snapshot_id>/ratings.parquet, users.parquet, items.parquet, tags.parquet, lineage.json
    LATEST  (the id of the newest snapshot)
A snapshot directory appears in one `rename` once every file in it is written, so a reader never
sees a partial snapshot and a crash leaves at most a hidden `.staging-*` folder behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.tables import CanonicalTables
from movierec import __version__
from movierec.data.schema import CANONICAL_VERSION, SCHEMAS, to_arrow
from movierec.errors import DataError

ROW_GROUP_ROWS = 1_000_000
ID_LENGTH = 16


@dataclass
class Snapshot:
    dataset: str
    id: str
    path: Path
    lineage: dict
    reused: bool = False

    def table_path(self, name: str) -> Path:
        return self.path / f"{name}.parquet"


def arrow_to_pandas(table: pa.Table) -> pd.DataFrame:
    """The one Arrow -> pandas conversion: integer columns with nulls become nullable pandas
    integers instead of floats, dictionaries become categoricals."""
    nullable = {
        field.name: pd.ArrowDtype(field.type).numpy_dtype.name.capitalize()
        for field in table.schema
        if pa.types.is_integer(field.type) and table.column(field.name).null_count
    }
    frame = table.to_pandas()
    return frame.astype(nullable) if nullable else frame


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_arrow(tables: CanonicalTables) -> dict[str, pa.Table]:
    return {name: to_arrow(name, frame) for name, frame in tables.as_dict().items()}


def content_hash(arrow_tables: dict[str, pa.Table]) -> str:
    """SHA-256 over every table's schema and row hashes; independent of file encoding."""
    digest = hashlib.sha256(f"canonical-v{CANONICAL_VERSION}".encode())
    for name in sorted(arrow_tables):
        table = arrow_tables[name]
        digest.update(name.encode())
        digest.update(str(table.schema).encode())
        digest.update(str(table.num_rows).encode())
        if table.num_rows:
            digest.update(pd.util.hash_pandas_object(arrow_to_pandas(table), index=False).to_numpy().tobytes())
    return digest.hexdigest()[:ID_LENGTH]


def inputs_fingerprint(description: dict) -> str:
    """Hash of everything a snapshot is made from (input checksums, parameters, code version)."""
    payload = json.dumps({"canonical_version": CANONICAL_VERSION, **description}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class SnapshotStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def dataset_dir(self, dataset: str) -> Path:
        return self.root / dataset

    def get(self, dataset: str, snapshot_id: str) -> Snapshot | None:
        path = self.dataset_dir(dataset) / snapshot_id
        lineage_file = path / "lineage.json"
        if not lineage_file.is_file():
            return None
        return Snapshot(dataset, snapshot_id, path, json.loads(lineage_file.read_text()))

    def list(self, dataset: str) -> list[Snapshot]:
        folder = self.dataset_dir(dataset)
        if not folder.is_dir():
            return []
        found = [self.get(dataset, entry.name) for entry in folder.iterdir() if not entry.name.startswith(".")]
        return sorted((s for s in found if s), key=lambda s: s.lineage.get("created_at", ""))

    def latest(self, dataset: str) -> Snapshot | None:
        pointer = self.dataset_dir(dataset) / "LATEST"
        return self.get(dataset, pointer.read_text().strip()) if pointer.is_file() else None

    def require(self, dataset: str, snapshot_id: str | None = None) -> Snapshot:
        """Snapshot `snapshot_id` of `dataset` (default: the latest), or a DataError saying what to run."""
        snapshot = self.get(dataset, snapshot_id) if snapshot_id else self.latest(dataset)
        if snapshot is None:
            wanted = f"snapshot {snapshot_id}" if snapshot_id else "snapshot"
            raise DataError(
                f"no {wanted} of {dataset} in {self.dataset_dir(dataset)}; run `movierec ingest --dataset {dataset}`"
            )
        return snapshot

    def find_by_fingerprint(self, dataset: str, fingerprint: str) -> Snapshot | None:
        return next((s for s in self.list(dataset) if s.lineage.get("inputs_fingerprint") == fingerprint), None)

    def write(self, dataset: str, tables: CanonicalTables, lineage: dict) -> Snapshot:
        """Store the tables unless a snapshot with the same content exists; mark it LATEST."""
        arrow_tables = canonical_arrow(tables)
        snapshot_id = content_hash(arrow_tables)
        existing = self.get(dataset, snapshot_id)
        if existing is not None and not self.damaged(existing):
            self._point_latest(dataset, snapshot_id)
            existing.reused = True
            return existing
        folder = self.dataset_dir(dataset)
        if existing is not None:  # files changed on disk: set aside (kept for a post-mortem), rewritten
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            os.rename(existing.path, folder / f".damaged-{snapshot_id}-{stamp}")
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{snapshot_id}-", dir=folder))
        try:
            files = {}
            for name, table in arrow_tables.items():
                target = staging / f"{name}.parquet"
                pq.write_table(table, target, compression="zstd", row_group_size=ROW_GROUP_ROWS)
                files[name] = {"rows": table.num_rows, "bytes": target.stat().st_size, "sha256": file_digest(target)}
            record = {
                **lineage,
                "dataset": dataset,
                "snapshot_id": snapshot_id,
                "tables": files,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "movierec_version": __version__,
                "canonical_version": CANONICAL_VERSION,
            }
            (staging / "lineage.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
            try:
                os.rename(staging, folder / snapshot_id)
            except OSError:
                # Another run stored the same content first; theirs is identical.
                if self.get(dataset, snapshot_id) is None:
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._point_latest(dataset, snapshot_id)
        return self.get(dataset, snapshot_id)

    def _point_latest(self, dataset: str, snapshot_id: str) -> None:
        pointer = self.dataset_dir(dataset) / "LATEST"
        partial = pointer.with_name(f".LATEST.{os.getpid()}")
        partial.write_text(f"{snapshot_id}\n")
        os.replace(partial, pointer)

    def load(self, snapshot: Snapshot) -> CanonicalTables:
        frames = {}
        for name, schema in SCHEMAS.items():
            frames[name] = arrow_to_pandas(_read_table(snapshot, name, schema))
        return CanonicalTables(**frames)

    def damaged(self, snapshot: Snapshot) -> list[str]:
        """The snapshot's table files that are missing or differ from when it was written (their
        SHA-256, in the lineage): cheap enough to check on every reuse. A snapshot written before
        files had digests is checked by its content hash (`verify`)."""
        tables = snapshot.lineage.get("tables", {})
        if not all("sha256" in meta for meta in tables.values()):
            try:
                return [] if self.verify(snapshot) else sorted(f"{name}.parquet" for name in SCHEMAS)
            except DataError:
                return sorted(f"{name}.parquet" for name in SCHEMAS)
        return [
            f"{name}.parquet"
            for name, meta in sorted(tables.items())
            if not snapshot.table_path(name).is_file() or file_digest(snapshot.table_path(name)) != meta["sha256"]
        ]

    def verify(self, snapshot: Snapshot) -> bool:
        """True if the files still hash to the snapshot's id."""
        arrow_tables = {name: _read_table(snapshot, name, schema) for name, schema in SCHEMAS.items()}
        return content_hash(arrow_tables) == snapshot.id


def _read_table(snapshot: Snapshot, name: str, schema: pa.Schema) -> pa.Table:
    """One table of a snapshot; a missing, truncated or altered file is a `DataError` naming it."""
    path = snapshot.table_path(name)
    try:
        return pq.read_table(path, schema=schema)
    except (OSError, pa.ArrowException) as error:
        reason = str(error).splitlines()[0][:200]
        raise DataError(
            f"{path} cannot be read ({type(error).__name__}: {reason}): snapshot {snapshot.id} is damaged; "
            f"ingest it again (`movierec ingest --dataset {snapshot.dataset}` writes it anew)"
        ) from None
