"""Flow `validate`: re-check a stored snapshot against the canonical expectation suites.

`ingest` already validates what it writes; this flow is for snapshots made under older suites
or settings, and for checking that files on disk still match their content hash.
"""

from __future__ import annotations

from prefect import flow

from movierec.data.schema import RatingScale
from movierec.data.snapshot import SnapshotStore
from movierec.errors import DataError
from movierec.settings import get_settings
from tasks.validate import validate_canonical


@flow(name="validate", description="Validate a stored snapshot against the canonical suites.")
def validate(dataset: str = "ml-latest-small", snapshot_id: str | None = None) -> dict:
    settings = get_settings()
    store = SnapshotStore(settings.snapshots_dir)
    snapshot = store.require(dataset, snapshot_id)
    if not store.verify(snapshot):
        raise DataError(f"snapshot {snapshot.path} no longer matches its content hash; re-ingest it")
    scale = RatingScale(**snapshot.lineage["preprocessing"]["rating_scale"])
    report = validate_canonical(store.load(snapshot), scale, settings, dataset)
    return {"dataset": dataset, "snapshot_id": snapshot.id, "suites": report.suites, "data_docs": str(report.docs_path)}
