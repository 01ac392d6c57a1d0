"""Prefect task of the retrain flow's last stage: the champion's batch export.

After the registry stage the flow makes sure `exports_dir/<name>-v<champion>-top<k>.parquet`
exists: every known user's top-k from the champion's bundle (`movierec.serving.export`). The file name
holds the version and k and a version's bundle never changes, so an existing file is complete
(written atomically) and current: it is computed only when the champion changed (or was
promoted by hand, or k changed, or the file was removed); a run whose challenger was rejected
keeps the existing file. The path is a tag of the run (`export_path`), not an artifact (it can be
large).

With a Dask cluster in the settings (`distributed.dask_address`) the users are exported in shards
of `distributed.shard_users` (`tasks.shards`), each a task run on the cluster writing its part,
and the parts are joined in user order: the same rows, in the same order, as one process writes.

A failed export does not fail the run: the registry writes are done by then, and a failed run
must never have moved the champion. The error becomes tag `export.error` and a warning; the flow
reports no path, and `movierec export-recs` writes the file by hand.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import mlflow
from prefect import task
from prefect.cache_policies import NO_CACHE

from movierec.serving import export
from movierec.serving.export import export_model, export_path
from movierec.settings import Settings
from movierec.tracking.served_model import load_bundle
from tasks.shards import run_shards, worker_bundle

log = logging.getLogger("movierec")


@task(name="export recommendations", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def export_recommendations(settings: Settings, name: str, version: str) -> str:
    """Write the champion's top-k export unless the file for this version and k exists; its path."""
    k = settings.serving.export_k
    out = export_path(settings.exports_dir, name, version, k)
    if not out.exists():
        model_uri = f"models:/{name}/{version}"
        if settings.distributed.dask_address is None:
            export_model(model_uri, k, out)
        else:
            export_in_shards(settings, model_uri, k, out)
    return str(out)


def export_in_shards(settings: Settings, model_uri: str, k: int, out: Path) -> Path:
    """`export_model` as shards of `distributed.shard_users` users on `tasks.shards.run_shards`,
    each writing `<out>.parts/part-NNNNN.parquet`, then joined into `out` (the parts are removed
    whether or not the export succeeds)."""
    n_users = load_bundle(model_uri).n_users
    parts_dir = out.with_name(out.name + ".parts")
    shards = export.user_shards(n_users, settings.distributed.shard_users)
    parts = [parts_dir / f"part-{number:05d}.parquet" for number in range(len(shards))]
    uris = {"tracking_uri": settings.tracking_uri, "registry_uri": settings.registry_uri}
    try:
        run_shards(
            settings,
            export_shard,
            [
                {"model_uri": model_uri, "k": k, "first": users.start, "stop": users.stop, "out": str(part), **uris}
                for users, part in zip(shards, parts, strict=True)
            ],
        )
        return export.join_parts(parts, out, metadata={"movierec.model_uri": model_uri, "movierec.k": str(k)})
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)


@task(name="export shard", task_run_name="export users {first}-{stop}", cache_policy=NO_CACHE, retries=1)
def export_shard(model_uri: str, k: int, first: int, stop: int, out: str, tracking_uri: str, registry_uri: str) -> int:
    """One shard of the export, on whichever worker runs it: its rows."""
    bundle = worker_bundle(model_uri, False, tracking_uri, registry_uri)
    return export.export_part(bundle, k, range(first, stop), Path(out))


def export_champion(settings: Settings, registration: dict) -> str | None:
    """The export stage of the retrain flow (inside its MLflow run): the champion's export path,
    or None (with a warning and tag `export.error`) when there is no champion or the export fails."""
    version = registration.get("champion_version")
    if version is None:
        return None
    try:
        path = export_recommendations(settings, registration["name"], str(version))
    except Exception as error:
        log.warning("batch export of %s v%s failed: %s", registration["name"], version, error)
        mlflow.set_tag("export.error", f"{type(error).__name__}: {error}"[:4000])
        return None
    mlflow.set_tag("export_path", path)
    return path
